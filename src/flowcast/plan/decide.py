"""Decisions: a pure function brief -> Plan. Every number carries the rule that produced it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Literal

from flowcast.plan import data
from flowcast.plan.brief import Brief
from flowcast.plan.messages import Msg, catalogue
from flowcast.plan.ladder_design import (
    RungRule,
    bitrate_kbps,
    ceil,
    delivered_kbps,
    design_ladder,
)
from flowcast.transcode.encoders import video_options
from flowcast.transcode.ladder import AudioRendition, Ladder, Rung

ModeName = Literal["interactive", "near-live", "broadcast"]


@dataclass(frozen=True)
class Figure:
    """A number in the plan with its unit and the rule that produced it (a Msg when it has words)."""

    value: float
    unit: str
    rule: Msg | str

    def __str__(self) -> str:
        return self.text("en")

    def text(self, lang: str) -> str:
        """Value and unit; units with words are translated (catalogue key unit_<unit>)."""
        v = f"{self.value:,.0f}" if abs(self.value) >= 100 else f"{self.value:g}"
        if lang == "pt-BR":
            v = v.replace(",", "\0").replace(".", ",").replace("\0", ".")
        unit = catalogue(lang).get("unit_" + self.unit, self.unit) if self.unit else ""
        return f"{v} {unit}".strip()


@dataclass(frozen=True)
class ModePlan:
    mode: ModeName
    protocols: tuple[str, ...]
    reason: Msg
    target: Figure
    estimate: Figure
    segment_s: Figure | None
    part_s: Figure | None
    gop_frames: Figure | None
    b_frames: Figure
    audio: Msg | str
    ladder: Ladder
    rung_rules: tuple[RungRule, ...]
    ffmpeg: dict[str, str] = field(default_factory=dict)  # encoder -> command line


@dataclass(frozen=True)
class RtcPlan:
    topology: Literal["SFU", "MCU"]
    reason: Msg
    relay_ratio: Figure
    session_mbps: Figure
    turn_servers: Figure
    sfu_servers: Figure
    gpu_instances: Figure
    region: str
    launch_args: str


@dataclass(frozen=True)
class CdnPlan:
    name: str
    reason: Msg
    shield_region: Msg | str  # the cloud region of CloudFront's origin shield, or what plays that role
    cache_policies: tuple[tuple[Msg, str, Msg], ...]  # (resource, path pattern, Cache-Control)
    # seconds per resource kind, the origin's own Cache-Control max-age (origin/cache.py):
    # playlist_blocking, playlist, media_blocking, media, init, manifest
    ttls: dict[str, int] = field(default_factory=dict)
    # multi-CDN: further contracted CDNs announced as HLS Content Steering pathways / DASH
    # BaseURLs; each gets its own configuration, and carries traffic only on failover
    secondary: tuple[str, ...] = ()
    steering: Msg | None = None


@dataclass(frozen=True)
class OriginPlan:
    count: Figure
    zones: tuple[str, ...]
    region: str
    reason: Msg | str


@dataclass(frozen=True)
class SecurityPlan:
    drm_systems: tuple[str, ...]
    scheme: str
    key_rotation_hours: Figure
    signed_url_expiry_s: Figure
    watermark: bool
    cpix: bool
    steps: tuple[Msg | str, ...]


@dataclass(frozen=True)
class CostLine:
    item: str  # English name (CSV, JSON, lever grouping)
    region: str
    usd: float
    quantity: Figure
    label: Msg | None = None  # the item name in the pack's language
    price_table: str = ""  # data.price_source key of the price used: "cdn.<name>", "compute", ...


@dataclass(frozen=True)
class CostPlan:
    lines: tuple[CostLine, ...]
    total_usd: float
    total_budget_ccy: float
    budget: float
    currency: str
    fx: float
    levers: tuple[Msg | str, ...]
    prices_as_of: str

    @property
    def within_budget(self) -> bool:
        return self.total_budget_ccy <= self.budget


@dataclass(frozen=True)
class CarbonLine:
    item: str
    region: str
    kwh: float
    kg_co2e: float
    intensity: Figure
    label: Msg | None = None


@dataclass(frozen=True)
class Plan:
    brief: Brief
    modes: tuple[ModePlan, ...]
    rtc: RtcPlan | None
    cdn: CdnPlan | None
    origins: OriginPlan | None
    security: SecurityPlan | None
    cost: CostPlan
    carbon: tuple[CarbonLine, ...]
    viewer_hours: Figure
    delivered_kbps: Figure
    adjustments: tuple[Msg, ...]
    risks: tuple[Msg, ...]

    def mode(self, name: ModeName) -> ModePlan | None:
        return next((m for m in self.modes if m.mode == name), None)

    @property
    def distribution(self) -> ModePlan | None:
        """The HTTP mode viewers watch: near-live if the brief has it, else broadcast."""
        return self.mode("near-live") or self.mode("broadcast")


# ---- latency and segmentation ---------------------------------------------------------

ENCODE_S = 0.3  # capture + zerolatency encode + packaging of the first frame of a part
DELIVERY_S = 0.3  # edge RTT + part download at the rung rate
P95_HEADROOM = 0.8  # plan the median estimate at 80% of the p95 target
PART_CANDIDATES = (1.0, 0.5, 1 / 3, 0.25, 0.2)
SEGMENT_CANDIDATES = (6.0, 4.0, 2.0)
FPS = 30.0


def _near_live_timing(target_s: float) -> tuple[Figure, Figure, Figure]:
    budget = target_s * P95_HEADROOM
    part = PART_CANDIDATES[-1]
    for p in PART_CANDIDATES:
        if ENCODE_S + 3 * p + DELIVERY_S <= budget:
            part = p
            break
    est = ENCODE_S + 3 * part + DELIVERY_S
    seg = 2.0 if part >= 0.25 else 1.0
    return (
        Figure(round(seg, 3), "s", Msg("f_ll_segment")),
        Figure(round(part, 3), "s", Msg("f_ll_part", {"candidates": [round(x, 3) for x in PART_CANDIDATES], "enc": ENCODE_S, "dl": DELIVERY_S, "target": target_s})),
        Figure(round(est, 2), "s", f"{ENCODE_S} + 3 x {part:.3g} + {DELIVERY_S}"),
    )


def _broadcast_timing(target_s: float) -> tuple[Figure, Figure]:
    budget = target_s * P95_HEADROOM
    seg = SEGMENT_CANDIDATES[-1]
    for s in SEGMENT_CANDIDATES:
        if 0.5 + 3 * s + 1.0 <= budget:
            seg = s
            break
    est = 0.5 + 3 * seg + 1.0
    return (
        Figure(seg, "s", Msg("f_bc_segment", {"candidates": list(SEGMENT_CANDIDATES), "target": target_s})),
        Figure(est, "s", f"0.5 + 3 x {seg:g} + 1.0"),
    )


def _bframes(encoder: str, ladder: Ladder, mode: str, seg: float) -> int:
    opts = video_options(encoder, ladder.rungs[0], mode=mode, segment_s=seg)  # type: ignore[arg-type]
    return int(opts[opts.index("-bf") + 1]) if "-bf" in opts else 0


def ffmpeg_command(encoder: str, ladder: Ladder, mode: str, seg: float, *, audio_codec: str = "aac") -> str:
    """A complete FFmpeg command line for one ladder and encoder: one CMAF output per track."""
    n = len(ladder.rungs)
    graph = "[0:v]split=%d%s" % (n, "".join(f"[s{i}]" for i in range(n)))
    graph += "".join(
        f";[s{i}]fps={r.fps:g},scale={r.width}:{r.height}:flags=bicubic,setsar=1[v{i}]" for i, r in enumerate(ladder.rungs)
    )
    argv = ["ffmpeg", "-hide_banner", "-re", "-i", "INPUT", "-filter_complex", graph]
    for i, r in enumerate(ladder.rungs):
        argv += ["-map", f"[v{i}]"] + video_options(encoder, r, mode=mode, segment_s=seg)  # type: ignore[arg-type]
        argv += ["-f", "mp4", "-movflags", "empty_moov+default_base_moof+frag_every_frame", f"{r.name}.mp4"]
    a = ladder.audio
    argv += ["-map", "0:a", "-c:a", audio_codec, "-b:a", f"{a.bitrate_kbps}k", "-ac", str(a.channels), "-ar", str(a.sample_rate)]
    argv += ["-f", "mp4", "-movflags", "empty_moov+default_base_moof+frag_every_frame", "audio.mp4"]
    return shlex.join(argv)


def _encoders(brief: Brief, mode: str) -> list[str]:
    enc = ["libx264"]
    if brief.constraints.gpu_available:
        enc.append("h264_nvenc")
    if "h265" in brief.inputs.codecs_allowed:
        enc.append("libx265")
    if "av1" in brief.inputs.codecs_allowed and mode == "broadcast":
        enc.append("libsvtav1")  # SVT-AV1 is not real-time at low-latency presets on CPU for 1080p
    return enc


@dataclass(frozen=True)
class SourceInfo:
    """What `--probe SAMPLE` measured on a sample of the real source."""

    width: int
    height: int
    fps: float


def _http_mode(brief: Brief, name: ModeName, max_height: int | None, source: SourceInfo | None = None) -> ModePlan:
    a = brief.inputs.audience
    low = name == "near-live"
    cfg_mode = "low-latency" if low else "broadcast"
    fps = source.fps if source else FPS
    cap_reason = Msg("cap_budget")
    if source and (max_height is None or source.height < max_height):
        max_height, cap_reason = source.height, Msg("cap_probe", {"height": source.height})
    ladder, rules = design_ladder(a.devices, a.networks, low_latency=low, fps=fps, max_height=max_height, cap_reason=cap_reason,
                                  audio_kbps=96 if a.networks.get("3g", 0) > 0.2 else 128)
    if low:
        assert brief.latency_targets.near_live
        target_s = brief.latency_targets.near_live.glass_to_glass_p95_s
        seg, part, est = _near_live_timing(target_s)
        protocols = ("LL-HLS", "LL-DASH")
        reason = Msg("reason_near_live", {"target": f"{target_s:g}"})
    else:
        assert brief.latency_targets.broadcast
        target_s = brief.latency_targets.broadcast.glass_to_glass_p95_s
        seg, est = _broadcast_timing(target_s)
        part = None
        protocols = ("HLS", "DASH")
        reason = Msg("reason_broadcast", {"target": f"{target_s:g}", "segment": f"{seg.value:g}"})
    gop = Figure(round(seg.value * fps), "frames", Msg("f_gop_probed" if source else "f_gop", {"seg": f"{seg.value:g}", "fps": f"{fps:g}"}))
    bf = _bframes("libx264", ladder, cfg_mode, seg.value)
    bframes = Figure(bf, "", Msg("f_bframes_http"))
    audio = Msg("audio_aac_3g" if ladder.audio.bitrate_kbps == 96 else "audio_aac", {"kbps": ladder.audio.bitrate_kbps})
    cmds = {e: ffmpeg_command(e, ladder, cfg_mode, seg.value) for e in _encoders(brief, name)}
    return ModePlan(
        mode=name, protocols=protocols, reason=reason,
        target=Figure(target_s, "s", Msg("f_brief_target")), estimate=est,
        segment_s=seg, part_s=part, gop_frames=gop, b_frames=bframes, audio=audio,
        ladder=ladder, rung_rules=tuple(rules), ffmpeg=cmds,
    )


def _interactive_mode(brief: Brief) -> tuple[ModePlan, RtcPlan]:
    it = brief.latency_targets.interactive
    assert it
    a = brief.inputs.audience
    # Simulcast: full, 1/2 and 1/4 scale layers (the SFU forwards the layer each viewer can take)
    layers = ((1920, 1080, "high", "4.0"), (960, 540, "main", "3.1"), (480, 270, "baseline", "3.0"))
    rungs = tuple(
        Rung(name=f"{h}p", width=w, height=h, video_bitrate_kbps=bitrate_kbps(w, h, FPS, low_latency=True), profile=p, level=lv)
        for w, h, p, lv in layers
    )
    ladder = Ladder(rungs=rungs, audio=AudioRendition(bitrate_kbps=64))
    rules = tuple(RungRule(r.name, 0, r.video_bitrate_kbps, Msg("f_simulcast")) for r in rungs)
    protocols = ("WebRTC", "Pixel Streaming signalling", "TURN") if it.pixel_streaming else ("WebRTC (WHIP/WHEP)", "TURN")
    reason = Msg("reason_interactive", {"p95": it.p95_ms})
    est = Figure(180, "ms", Msg("f_rtc_estimate"))
    mode = ModePlan(
        mode="interactive", protocols=protocols, reason=reason, target=Figure(it.p95_ms, "ms", Msg("f_brief_target")),
        estimate=est, segment_s=None, part_s=None,
        gop_frames=None, b_frames=Figure(0, "", Msg("f_bframes_rtc")),
        audio=Msg("audio_opus"), ladder=ladder, rung_rules=rules,
    )
    mobile = a.networks.get("4g", 0) + a.networks.get("3g", 0)
    ratio = round(0.15 + 0.15 * mobile, 3)
    sess_kbps = rungs[0].video_bitrate_kbps + 64 + 50
    per_relay_mbps = 2000.0
    relayed_mbps = a.peak_interactive_sessions * ratio * sess_kbps / 1000.0
    turn = ceil(relayed_mbps / per_relay_mbps) + 1
    sfu_capacity_mbps = 1000.0
    sfu = ceil(a.peak_interactive_sessions * sess_kbps / 1000.0 / sfu_capacity_mbps) + 1
    pref = brief.constraints.region_preference
    region = it.measured_in or (pref[0] if pref else None) or a.regions[0].region
    cloud = data.prices()["cloud_region_for_zone"][region]
    gpu = ceil(a.peak_interactive_sessions * 1.1) if it.pixel_streaming else 0
    launch = ""
    if it.pixel_streaming:
        launch = shlex.join([
            "./Demo.sh", "-RenderOffScreen", "-ResX=1920", "-ResY=1080", "-ForceRes",
            "-PixelStreamingURL=ws://signalling:8888", "-PixelStreamingEncoderCodec=H264",
            f"-PixelStreamingWebRTCMaxBitrate={rungs[0].video_bitrate_kbps * 1000}",
            f"-PixelStreamingWebRTCMinBitrate={rungs[-1].video_bitrate_kbps * 1000}",
            "-PixelStreamingWebRTCMaxFps=30", "-PixelStreamingEncoderKeyframeInterval=300",
        ])
    rtc = RtcPlan(
        topology="SFU",
        reason=Msg("reason_sfu"),
        relay_ratio=Figure(ratio, "", Msg("f_relay_ratio")),
        session_mbps=Figure(round(sess_kbps / 1000, 2), "Mbit/s", Msg("f_session_mbps", {"top": rungs[0].video_bitrate_kbps})),
        turn_servers=Figure(turn, "instances", Msg("f_turn", {"peak": a.peak_interactive_sessions, "ratio": ratio, "mbps": f"{sess_kbps / 1000:.2f}"})),
        sfu_servers=Figure(sfu, "instances", Msg("f_sfu", {"peak": a.peak_interactive_sessions, "mbps": f"{sess_kbps / 1000:.2f}"})),
        gpu_instances=Figure(gpu, "g4dn.xlarge", Msg("f_gpu", {"peak": a.peak_interactive_sessions}) if gpu else Msg("f_gpu_none")),
        region=cloud, launch_args=launch,
    )
    return mode, rtc


# ---- CDN, origins, security -------------------------------------------------------------

def _max_age(cache_control: str) -> int:
    return int(cache_control.rsplit("max-age=", 1)[1].split(",")[0])


def origin_ttls(dist: ModePlan) -> dict[str, int]:
    """The origin's Cache-Control max-age per resource kind for this mode's target duration
    (flowcast.origin.cache.CachePolicy, the policy `flowcast up` serves), so CDN TTLs match it.

    plan/ normally imports only transcode/ and telemetry/; CachePolicy is a pure dataclass and
    reading it here is what keeps the CDN configuration from drifting from the origin."""
    from flowcast.origin.cache import CachePolicy
    from flowcast.origin.store import ResourceKind

    td = dist.segment_s.value if dist.segment_s else 6.0
    pol = CachePolicy()
    return {
        "playlist_blocking": _max_age(pol.playlist(td, blocking=True, ended=False)),
        "playlist": _max_age(pol.playlist(td, blocking=False, ended=False)),
        "media_blocking": _max_age(pol.media(ResourceKind.SEGMENT, held=True, target_duration=td)),
        "media": _max_age(pol.media(ResourceKind.SEGMENT, held=False, target_duration=td)),
        "init": _max_age(pol.media(ResourceKind.INIT, held=False, target_duration=td)),
        "manifest": _max_age(pol.media(ResourceKind.MANIFEST, held=False, target_duration=td)),
    }


def _cache_policies(dist: ModePlan, ttl: dict[str, int]) -> tuple[tuple[Msg, str, Msg], ...]:
    lic = (Msg("cp_license"), "/license/*", Msg("cc_no_store"))
    if dist.mode == "near-live":
        return (
            (Msg("cp_blocking_playlist"), "*.m3u8?_HLS_msn=*", Msg("cc_blocking", {"ttl": ttl["playlist_blocking"]})),
            (Msg("cp_plain_playlist"), "*.m3u8", Msg("cc_half_td", {"ttl": ttl["playlist"]})),
            (Msg("cp_mpd"), "*.mpd", Msg("cc_plain", {"ttl": ttl["manifest"]})),
            (Msg("cp_parts"), "*.m4s, *.mp4", Msg("cc_media_ll", {"ttl": ttl["media"], "held": ttl["media_blocking"]})),
            (Msg("cp_init"), "*/init.mp4", Msg("cc_plain", {"ttl": ttl["init"]})),
            lic,
        )
    return (
        (Msg("cp_playlist"), "*.m3u8", Msg("cc_half_td", {"ttl": ttl["playlist"]})),
        (Msg("cp_mpd"), "*.mpd", Msg("cc_plain", {"ttl": ttl["manifest"]})),
        (Msg("cp_segments"), "*.m4s, *.mp4", Msg("cc_media", {"ttl": ttl["media"]})),
        (Msg("cp_init"), "*/init.mp4", Msg("cc_plain", {"ttl": ttl["init"]})),
        lic,
    )


SHIELDED_CDNS = ("cloudfront", "fastly", "akamai")  # origin shield / shielding POP / tiered distribution
# Fastly shielding POP (its three-letter code; Terraform looks the shield id up with data.fastly_datacenters)
# and Akamai tiered-distribution map nearest each cloud region of the origins.
FASTLY_SHIELD_POP = {"us-east-1": "IAD", "eu-central-1": "FRA", "sa-east-1": "GRU", "ap-northeast-1": "TYO",
                     "ap-southeast-2": "SYD", "ap-southeast-1": "SIN", "ap-south-1": "BOM", "me-central-1": "FJR"}
AKAMAI_TIERED_MAP = {"us-east-1": "CHEUS2", "eu-central-1": "CHEU2", "sa-east-1": "CH2", "ap-northeast-1": "CHAPAC",
                     "ap-southeast-2": "CHAUS", "ap-southeast-1": "CHAPAC", "ap-south-1": "CHAPAC", "me-central-1": "CH2"}


def _shield(cdn_name: str, cloud: str) -> Msg | str:
    if cdn_name == "cloudfront":
        return cloud
    if cdn_name == "fastly":
        return Msg("shield_fastly", {"pop": FASTLY_SHIELD_POP[cloud], "cloud": cloud})
    if cdn_name == "akamai":
        return Msg("shield_akamai", {"map": AKAMAI_TIERED_MAP[cloud], "cloud": cloud})
    return Msg("shield_none")


def _origins(brief: Brief, dist: ModePlan, cdn_name: str) -> OriginPlan:
    a = brief.inputs.audience
    region = brief.constraints.region_preference[0] if brief.constraints.region_preference else max(a.regions, key=lambda r: r.share).region
    cloud = data.prices()["cloud_region_for_zone"][region]
    # Behind an origin shield each object is requested about once per shield; without a
    # shield, once per edge PoP (assume 60 PoPs per zone). Blocking-reload clients held
    # per core: 5,000 (docs/ARCHITECTURE.md); plan at 50% of it.
    shielded = cdn_name in SHIELDED_CDNS
    clients = len(a.regions) * (2 if shielded else 60) * max(1, len(dist.ladder.rungs))
    per_origin = 2 * 5000 * 0.5
    n = max(2, ceil(clients / per_origin) + 1)
    return OriginPlan(
        count=Figure(n, "origins", Msg("f_origins_shield" if shielded else "f_origins_pops", {"clients": clients, "per": f"{per_origin:g}"})),
        zones=(f"{cloud}a", f"{cloud}b"), region=cloud,
        reason=Msg("origins_reason"),
    )


def _security(brief: Brief, cdn_name: str) -> SecurityPlan | None:
    drm = brief.constraints.drm
    premium = brief.inputs.content_rights.premium_content
    if not (drm.required or premium):
        return None
    systems = drm.systems or ("clearkey",)
    scheme = "cbcs" if "fairplay" in systems or len(systems) > 1 else "cenc"
    a = brief.inputs.audience
    # CDNs check expiry on every request, so a URL must outlive a viewing session; a leaked URL
    # should die with the event: one live day's broadcast, clipped to [1 h, 4 h].
    expiry = int(min(4.0, max(1.0, a.live_hours_per_day)) * 3600)
    token = Msg("sec_token_cloudfront") if cdn_name == "cloudfront" else Msg("sec_token_cdn", {"cdn": cdn_name})
    steps = [
        Msg("sec_step_cpix"),
        Msg("sec_step_encrypt", {"scheme": scheme}),
        Msg("sec_step_rotate", {"hours": f"{drm.key_rotation_hours:g}"}),
        Msg("sec_step_token", {"token": token, "expiry": expiry}),
        Msg("sec_step_watermark"),
    ]
    return SecurityPlan(
        drm_systems=tuple(systems), scheme=scheme,
        key_rotation_hours=Figure(drm.key_rotation_hours, "h", Msg("f_brief_key_rotation")),
        signed_url_expiry_s=Figure(expiry, "s", Msg("f_url_expiry", {"hours": f"{a.live_hours_per_day:g}"})),
        watermark=premium, cpix=drm.required, steps=tuple(steps),
    )


# ---- the plan -------------------------------------------------------------------------

def decide(brief: Brief, *, source: SourceInfo | None = None) -> Plan:
    """Brief -> Plan, adjusting CDN and ladder until the monthly cost fits the budget (or no lever is left)."""
    from flowcast.plan.cost import cost_and_carbon

    adjustments: list[Msg] = []
    contracts = brief.constraints.cdn_contracts
    priced = [c for c in contracts if c in data.prices()["cdn"]]
    if priced:
        cdn_name, cdn_reason = priced[0], Msg("cdn_contract_" + priced[0] if priced[0] in ("fastly", "akamai") else "cdn_contract", {"cdn": priced[0]})
    elif contracts:  # a contract we hold no price table for: priced as CloudFront list, said so
        cdn_name, cdn_reason = "cloudfront", Msg("cdn_contract_unpriced", {"cdn": contracts[0]})
    else:
        cdn_name, cdn_reason = "cloudfront", Msg("cdn_cloudfront")
    max_height: int | None = None
    # Lever order: with DRM or premium content keep the CDN that has key-group signed URLs and
    # an origin shield, and cap the ladder first; otherwise keep picture quality and switch CDN first.
    protected = brief.constraints.drm.required or brief.inputs.content_rights.premium_content
    levers = ["ladder", "cdn"] if protected else ["cdn", "ladder"]
    while True:
        plan = _assemble(brief, cdn_name, cdn_reason, max_height, tuple(adjustments), source)
        plan = cost_and_carbon(plan)
        if plan.cost.within_budget or plan.distribution is None or not levers:
            return plan
        over = plan.cost.total_budget_ccy - plan.cost.budget
        lever = levers.pop(0)
        if lever == "cdn" and cdn_name == "cloudfront" and not contracts:
            adjustments.append(Msg("adj_cdn", {"over": f"{over:,.0f}", "currency": plan.cost.currency}))
            cdn_name, cdn_reason = "bunny", Msg("cdn_bunny")
        elif lever == "ladder" and plan.distribution.ladder.rungs[0].height > 720:
            top = plan.distribution.ladder.rungs[0].height
            adjustments.append(Msg("adj_ladder_protected" if protected else "adj_ladder",
                                   {"over": f"{over:,.0f}", "currency": plan.cost.currency, "top": top}))
            max_height = 720


def _assemble(brief: Brief, cdn_name: str, cdn_reason: Msg, max_height: int | None, adjustments: tuple[Msg, ...],
              source: SourceInfo | None = None) -> Plan:
    modes: list[ModePlan] = []
    rtc = None
    lt = brief.latency_targets
    risks: list[Msg] = []
    if lt.interactive:
        m, rtc = _interactive_mode(brief)
        modes.append(m)
        if lt.interactive.pixel_streaming and not brief.constraints.gpu_available:
            risks.append(Msg("risk_gpu"))
        if lt.interactive.p95_ms < 150:
            risks.append(Msg("risk_latency", {"p95": lt.interactive.p95_ms}))
    if lt.near_live:
        modes.append(_http_mode(brief, "near-live", max_height, source))
    if lt.broadcast:
        modes.append(_http_mode(brief, "broadcast", max_height, source))
    dist = next((m for m in modes if m.mode in ("near-live", "broadcast")), None)
    cdn = origins = None
    kbps = Figure(0, "kbps", "no HTTP distribution")
    a = brief.inputs.audience
    if dist:
        origins = _origins(brief, dist, cdn_name)
        ttl = origin_ttls(dist)
        shield_cloud = data.prices()["cloud_region_for_zone"][max(a.regions, key=lambda r: r.share).region]
        contracts = brief.constraints.cdn_contracts
        secondary = tuple(c for c in dict.fromkeys(contracts) if c != cdn_name)
        steering = Msg("cdn_multi", {"primary": cdn_name, "secondary": ", ".join(secondary)}) if secondary else None
        cdn = CdnPlan(name=cdn_name, reason=cdn_reason,
                      shield_region=_shield(cdn_name, shield_cloud if cdn_name == "cloudfront" else origins.region),
                      cache_policies=_cache_policies(dist, ttl), ttls=ttl, secondary=secondary, steering=steering)
        k, rule = delivered_kbps(dist.ladder, a.devices, a.networks)
        kbps = Figure(round(k), "kbps", Msg(rule))
    vh = a.peak_concurrent_viewers * a.avg_to_peak_ratio * a.live_hours_per_day * 30
    viewer_hours = Figure(round(vh), "viewer-h/month", Msg("f_viewer_hours", {"peak": a.peak_concurrent_viewers, "ratio": f"{a.avg_to_peak_ratio:g}", "hours": f"{a.live_hours_per_day:g}"}))
    if brief.inputs.compliance and "lgpd" in brief.inputs.compliance and brief.inputs.content_rights.recordings and not brief.constraints.consent_required_for_recording:
        risks.append(Msg("risk_lgpd"))
    empty_cost = CostPlan((), 0.0, 0.0, brief.inputs.budget.monthly, brief.inputs.budget.currency, 1.0, (), "")
    return Plan(
        brief=brief, modes=tuple(modes), rtc=rtc, cdn=cdn, origins=origins, security=_security(brief, cdn_name if dist else "none"),
        cost=empty_cost, carbon=(), viewer_hours=viewer_hours, delivered_kbps=kbps,
        adjustments=adjustments, risks=tuple(risks),
    )
