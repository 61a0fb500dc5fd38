"""Monthly cost (list prices from data/prices_*.yaml) and energy / CO2e (data/grid_intensity_*.yaml)."""

from __future__ import annotations

import dataclasses

from flowcast.plan import data
from flowcast.plan.decide import CarbonLine, CostLine, CostPlan, Figure, Plan
from flowcast.plan.ladder_design import ceil
from flowcast.plan.messages import Msg

HOURS_PER_MONTH = 730.0
GB_PER_KBPS_HOUR = 3600 * 1000 / 8 / 1e9  # 1 kbit/s for one hour, in GB (10^9 bytes)
VCPU_PER_1080P30 = 1.0  # x264 veryfast; measured 0.55 core for 720p+480p+240p here (0.69 x 1080p30 pixel rate)
CODEC_CPU = {"libx264": 1.0, "libx265": 4.0, "libsvtav1": 3.0}
ENCODER_UTILISATION = 0.6


def _vcpu_for_ladder(ladder, encoder: str = "libx264") -> float:
    px = sum(r.width * r.height * r.fps for r in ladder.rungs)
    return px / (1920 * 1080 * 30) * VCPU_PER_1080P30 * CODEC_CPU[encoder]


def cost_and_carbon(plan: Plan) -> Plan:
    b = plan.brief
    a = b.inputs.audience
    p = data.prices()
    g = data.grid()
    zone_cloud = p["cloud_region_for_zone"]
    lines: list[CostLine] = []
    energy: list[tuple[str, Msg, str, float]] = []  # (item, label, cloud region, kWh)
    pue = g["pue"]

    # 1. CDN egress per zone (HTTP distribution)
    if plan.cdn and plan.distribution:
        cdn = p["cdn"][plan.cdn.name]
        dist = plan.distribution
        for rs in a.regions:
            gb = plan.viewer_hours.value * rs.share * plan.delivered_kbps.value * GB_PER_KBPS_HOUR
            usd = data.tiered_cost(gb, cdn["egress"][rs.region])
            rule = Msg("f_cdn_egress", {"vh": f"{plan.viewer_hours.value:,.0f}", "share": f"{rs.share:g}", "kbps": f"{plan.delivered_kbps.value:,.0f}", "cdn": plan.cdn.name})
            lines.append(CostLine("CDN egress", rs.region, usd, Figure(round(gb), "GB", rule), Msg("item_cdn_egress"), f"cdn.{plan.cdn.name}"))
            energy.append(("network transmission", Msg("item_network"), zone_cloud[rs.region], gb * g["network_kwh_per_gb"]))
        # requests: each viewer fetches one part (or segment) per rung switch window plus a playlist
        per_s = 2 / (dist.part_s.value if dist.part_s else dist.segment_s.value)
        reqs = plan.viewer_hours.value * 3600 * per_s
        usd = reqs / 10_000 * cdn["requests_per_10k_https"]
        lines.append(CostLine("CDN requests", "all", usd, Figure(round(reqs), "requests", Msg("f_cdn_requests_part" if dist.part_s else "f_cdn_requests_segment")),
                              Msg("item_cdn_requests"), f"cdn.{plan.cdn.name}"))

    # 2. Transcode (CPU ladders, 1+1 redundant encoders), always on while live
    live_h = a.live_hours_per_day * 30
    origin_region = plan.origins.region if plan.origins else zone_cloud[a.regions[0].region]
    c6i = p["compute"]["c6i.2xlarge"]
    for m in plan.modes:
        if m.mode == "interactive":
            continue
        vcpu = _vcpu_for_ladder(m.ladder)
        inst = ceil(vcpu / (c6i["vcpu"] * ENCODER_UTILISATION)) * 2
        hours = inst * live_h
        usd = hours * c6i["usd_per_hour"][origin_region]
        lines.append(CostLine(f"transcode CPU ({m.mode})", origin_region, usd, Figure(hours, "instance-h", Msg("f_transcode", {"vcpu": f"{vcpu:.2f}", "live_h": f"{live_h:g}"})),
                              Msg("item_transcode", {"mode": m.mode}), "compute"))
        energy.append((f"transcode ({m.mode})", Msg("item_transcode_energy", {"mode": m.mode}), origin_region, hours * c6i["watts"] * pue / 1000))

    # 3. Origins, always on
    if plan.origins:
        hours = plan.origins.count.value * HOURS_PER_MONTH
        usd = hours * c6i["usd_per_hour"][origin_region]
        lines.append(CostLine("origins", origin_region, usd, Figure(hours, "instance-h", Msg("f_origin_hours", {"n": f"{plan.origins.count.value:g}"})),
                              Msg("item_origins"), "compute"))
        energy.append(("origins", Msg("item_origins"), origin_region, hours * c6i["watts"] * pue / 1000))

    # 4. Interactive: GPU, SFU egress, TURN relays
    if plan.rtc:
        r = plan.rtc
        sh = a.interactive_session_hours_per_month
        if r.gpu_instances.value:
            gpu = p["compute"]["g4dn.xlarge"]
            hours = sh * 1.2
            lines.append(CostLine("GPU (Pixel Streaming)", r.region, hours * gpu["usd_per_hour"][r.region], Figure(round(hours), "GPU-h", Msg("f_gpu_hours", {"sh": f"{sh:g}"})),
                                  Msg("item_gpu"), "compute"))
            energy.append(("GPU", Msg("item_gpu_energy"), r.region, hours * gpu["watts"] * pue / 1000))
        egress_price = p["internet_egress_usd_per_gb"][r.region]
        gb = sh * r.session_mbps.value * 1000 * GB_PER_KBPS_HOUR
        direct = gb * (1 - r.relay_ratio.value)
        lines.append(CostLine("WebRTC egress (SFU)", r.region, direct * egress_price, Figure(round(direct), "GB", Msg("f_webrtc_direct", {"sh": f"{sh:g}", "mbps": r.session_mbps.value, "relay": f"{r.relay_ratio.value:g}"})),
                              Msg("item_webrtc_egress"), "internet_egress_usd_per_gb"))
        relay = gb * r.relay_ratio.value
        c6gn = p["compute"]["c6gn.xlarge"]
        turn_h = r.turn_servers.value * HOURS_PER_MONTH
        lines.append(CostLine("TURN relay egress", r.region, relay * egress_price, Figure(round(relay), "GB", Msg("f_turn_relay", {"sh": f"{sh:g}", "mbps": r.session_mbps.value, "relay": f"{r.relay_ratio.value:g}"})),
                              Msg("item_turn_relay"), "internet_egress_usd_per_gb"))
        lines.append(CostLine("TURN + SFU instances", r.region, (turn_h + r.sfu_servers.value * HOURS_PER_MONTH) * c6gn["usd_per_hour"][r.region],
                              Figure(turn_h + r.sfu_servers.value * HOURS_PER_MONTH, "instance-h", Msg("f_turn_sfu", {"turn": f"{r.turn_servers.value:g}", "sfu": f"{r.sfu_servers.value:g}"})),
                              Msg("item_turn_sfu"), "compute"))
        energy.append(("TURN + SFU", Msg("item_turn_sfu_energy"), r.region, (turn_h + r.sfu_servers.value * HOURS_PER_MONTH) * c6gn["watts"] * pue / 1000))
        energy.append(("network transmission (WebRTC)", Msg("item_network_webrtc"), r.region, gb * g["network_kwh_per_gb"]))

    # 5. Storage: recordings and DVR
    cr = b.inputs.content_rights
    if cr.recordings and plan.distribution:
        top = plan.distribution.ladder.rungs[0]
        gb_month = live_h * (top.video_bitrate_kbps + plan.distribution.ladder.audio.bitrate_kbps) * GB_PER_KBPS_HOUR
        stored = gb_month * max(cr.recording_retention_days, 1) / 30
        price = p["storage_usd_per_gb_month"][origin_region]
        lines.append(CostLine("recording storage", origin_region, stored * price, Figure(round(stored), "GB-month", Msg("f_storage", {"live_h": f"{live_h:g}", "kbps": top.video_bitrate_kbps, "days": cr.recording_retention_days})),
                              Msg("item_storage"), "storage_usd_per_gb_month"))

    total = sum(line.usd for line in lines)
    fx = p["fx_per_usd"][b.inputs.budget.currency]
    levers = _levers(plan, lines)
    cost = CostPlan(tuple(lines), round(total, 2), round(total * fx, 2), b.inputs.budget.monthly, b.inputs.budget.currency, fx, levers, p["as_of"])
    carbon = tuple(
        CarbonLine(item, reg, round(kwh, 1), round(kwh * g["g_co2e_per_kwh"][reg] / 1000, 1),
                   Figure(g["g_co2e_per_kwh"][reg], "gCO2e/kWh", Msg("f_intensity", {"as_of": g["as_of"], "region": reg})), label)
        for item, label, reg, kwh in energy
    )
    return dataclasses.replace(plan, cost=cost, carbon=carbon)


LEVERS = {  # cost item (without its "(mode)" suffix) -> catalogue key of the advice
    "CDN egress": "lever_cdn_egress",
    "GPU": "lever_gpu",
    "transcode CPU": "lever_transcode",
    "origins": "lever_origins",
    "TURN relay egress": "lever_turn_relay",
    "WebRTC egress": "lever_webrtc",
    "TURN + SFU instances": "lever_turn_sfu",
    "recording storage": "lever_storage",
    "CDN requests": "lever_requests",
}


def _levers(plan: Plan, lines: list[CostLine]) -> tuple[Msg, ...]:
    by_item: dict[str, float] = {}
    for line in lines:
        key = line.item.split(" (")[0]
        by_item[key] = by_item.get(key, 0.0) + line.usd
    ranked = sorted(by_item.items(), key=lambda kv: -kv[1])
    return tuple(Msg(LEVERS[k], {"usd": f"{v:,.0f}"}) for k, v in ranked[:3])
