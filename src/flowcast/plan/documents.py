"""The pack's Markdown documents: one template per document, text from a message catalogue per language."""

from __future__ import annotations

from datetime import date

import yaml

from flowcast.plan.decide import Figure, Plan
from flowcast.plan import data
from flowcast.plan.messages import LANGS, Lang, Msg, UnknownLanguage, catalogue, render
from flowcast.telemetry.slo import DEFAULT_RULES

__all__ = ["DOCUMENTS", "LANGS", "Lang", "UnknownLanguage", "catalogue"]


def _window(s: int) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % n == 0:
            return f"{s // n}{unit}"
    return f"{s}s"


# Multiwindow, multi-burn-rate alerts for a 30-day SLO (Google SRE Workbook, standards.md 6),
# taken from the telemetry SLO model so the pack and the running alerts agree.
BURN_ALERTS = tuple((r.severity, _window(r.long_window_s), _window(r.short_window_s), r.burn_rate) for r in DEFAULT_RULES)

class _T:
    def __init__(self, lang: str) -> None:
        self.cat = catalogue(lang)
        self.lang = lang

    def __call__(self, key: str, **kw: object) -> str:
        return self.cat[key].format(**kw) if kw else self.cat[key]

    def msg(self, m: Msg | str) -> str:
        return m.render(self.lang) if isinstance(m, Msg) else m

    def fig(self, f: Figure | None) -> str:
        return _fig(f, self.lang)

    def num(self, v: float, digits: int = 0) -> str:
        s = f"{v:,.{digits}f}"
        if self.lang == "pt-BR":  # 1.234,5
            s = s.replace(",", "\0").replace(".", ",").replace("\0", ".")
        return s


def _table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _fig(f: Figure | None, lang: str = "en") -> str:
    return "-" if f is None else f"{f.text(lang)} ({render(f.rule, lang)})"


def _header(t: _T, plan: Plan, title: str, day: date) -> str:
    return f"# {title}\n\n_{t('generated', date=day.isoformat(), pipeline=plan.brief.pipeline)}_\n\n"


def decisions(plan: Plan, lang: Lang, day: date) -> str:
    t = _T(lang)
    b = plan.brief
    s = _header(t, plan, t("decisions_title", pipeline=b.pipeline), day)
    s += f"**{t('goal')}:** {b.goal.strip()}\n\n## {t('modes_title')}\n\n"
    rows = [[m.mode, ", ".join(m.protocols), m.target.text(lang), t.fig(m.estimate), t.fig(m.segment_s), t.fig(m.part_s),
             t.fig(m.gop_frames), t.fig(m.b_frames), t.msg(m.audio)] for m in plan.modes]
    s += _table([t("mode"), t("protocols"), t("target"), t("estimate"), t("segment"), t("part"), t("gop"), t("b_frames"), t("audio")], rows)
    s += "\n" + "".join(f"- **{m.mode}**: {t.msg(m.reason)}\n" for m in plan.modes)
    s += f"\n## {t('adjustments_title')}\n\n"
    s += "".join(f"- {t.msg(a)}\n" for a in plan.adjustments) or t("adjustments_none") + "\n"
    if plan.risks:
        s += f"\n## {t('risks_title')}\n\n" + "".join(f"- {t.msg(r)}\n" for r in plan.risks)
    if plan.rtc:
        r = plan.rtc
        s += f"\n## {t('rtc_title')}\n\n"
        s += _table([t("value"), t("rule")], [
            [f"{t('topology')}: {r.topology}", t.msg(r.reason)],
            [f"{t('relay_ratio')}: {r.relay_ratio.text(lang)}", t.msg(r.relay_ratio.rule)],
            [f"{t('session_mbps')}: {r.session_mbps.text(lang)}", t.msg(r.session_mbps.rule)],
            [f"{t('turn_servers')}: {r.turn_servers.text(lang)}", t.msg(r.turn_servers.rule)],
            [f"{t('sfu_servers')}: {r.sfu_servers.text(lang)}", t.msg(r.sfu_servers.rule)],
            [f"{t('gpu_instances')}: {r.gpu_instances.text(lang)}", t.msg(r.gpu_instances.rule)],
        ])
        if r.launch_args:
            s += f"\n{t('launch')}:\n\n```sh\n{r.launch_args}\n```\n"
    if plan.cdn:
        s += f"\n## {t('cdn_title')}\n\n- {t('cdn')}: **{plan.cdn.name}** ({t.msg(plan.cdn.reason)})\n- {t('shield')}: {t.msg(plan.cdn.shield_region)}\n"
        if plan.cdn.steering:
            s += f"- {t.msg(plan.cdn.steering)}\n"
        s += f"- {t('delivered')}: {t.fig(plan.delivered_kbps)}\n\n### {t('cache_title')}\n\n"
        s += _table([t("resource"), t("path"), t("cache_control")], [[t.msg(r), pat, t.msg(cc)] for r, pat, cc in plan.cdn.cache_policies])
    if plan.origins:
        o = plan.origins
        s += f"\n## {t('origins_title')}\n\n- {t('origins_count')}: {t.fig(o.count)}\n- {t('zones')}: {', '.join(o.zones)}\n- {t.msg(o.reason)}\n"
    return s


def ladder_doc(plan: Plan, lang: Lang, day: date) -> str:
    t = _T(lang)
    s = _header(t, plan, t("ladder_title", pipeline=plan.brief.pipeline), day)
    s += f"{t('ladder_intro')}\n\n{t('ladder_defaults')}\n"
    for m in plan.modes:
        s += f"\n## {m.mode} ({', '.join(m.protocols)})\n\n"
        rules = {r.name: t.msg(r.rule) for r in m.rung_rules}
        s += _table([t("rung"), t("resolution"), t("bitrate"), t("profile_level"), t("rule")], [
            [r.name, f"{r.width}x{r.height}@{r.fps:g}", t("rung_rate", kbps=r.video_bitrate_kbps, max=r.max_rate, vbv=r.buffer_size),
             f"{r.profile} / {r.level}", rules.get(r.name, "")] for r in m.ladder.rungs])
        s += "".join(f"\n- {t.msg(r.rule)}" for r in m.rung_rules if r.name in ("top", "bottom")) + "\n"
        s += f"- {t('audio')}: {t.msg(m.audio)}\n- {t('b_frames')}: {t.fig(m.b_frames)}\n"
        if m.segment_s and m.gop_frames:
            s += f"- {t('gop_note', segment=f'{m.segment_s.value:g}', frames=int(m.gop_frames.value))}\n"
        if m.ffmpeg:
            s += f"\n### {t('ffmpeg_title')}\n"
            for enc, cmd in m.ffmpeg.items():
                s += f"\n`{enc}`:\n\n```sh\n{cmd}\n```\n"
    return s


def architecture(plan: Plan, lang: Lang, day: date) -> str:
    t = _T(lang)
    s = _header(t, plan, t("arch_title", pipeline=plan.brief.pipeline), day)
    s += f"## {t('arch_flow')}\n\n```mermaid\nflowchart LR\n"
    lines = ['SRC["Source: RTMP / SRT / file"] --> ENC1["Encoder A<br/>FFmpeg ladder"] & ENC2["Encoder B<br/>1+1 redundant"]']
    dist = plan.distribution
    if dist:
        lines.append('ENC1 & ENC2 --> PKG["CMAF packager<br/>parts + segments"]')
        if plan.security:
            lines += ['KMS["Key server<br/>CPIX"] --> PKG', f'PKG --> PROT["{plan.security.scheme} encryption"]', "PROT --> ORG"]
        else:
            lines.append("PKG --> ORG")
        n = int(plan.origins.count.value) if plan.origins else 2
        zones = ", ".join(plan.origins.zones) if plan.origins else ""
        edge = f'CDN["{plan.cdn.name if plan.cdn else "CDN"} edges"]'
        shield = {"cloudfront": "Origin shield", "fastly": "Shielding POP", "akamai": "Tiered distribution parent"}
        if plan.cdn and plan.cdn.name in shield:
            where = plan.cdn.shield_region.params.get("pop") or plan.cdn.shield_region.params.get("map") if isinstance(plan.cdn.shield_region, Msg) else plan.cdn.shield_region
            lines += [f'ORG["Origins x{n}<br/>{zones}"] --> SH["{shield[plan.cdn.name]}<br/>{where}"]', f"SH --> {edge}"]
        else:
            lines.append(f'ORG["Origins x{n}<br/>{zones}"] --> {edge}')
        lines.append(f'CDN --> PL["Players: {" / ".join(dist.protocols)}"]')
        for i, other in enumerate(plan.cdn.secondary if plan.cdn else ()):
            lines += [f'ORG --> CDN{i + 2}["{other} edges<br/>steering pathway {chr(66 + i)}"]', f"CDN{i + 2} -. failover .-> PL"]
        if plan.security:
            lines.append(f'PL -. licence .-> LIC["Licence servers: {", ".join(plan.security.drm_systems)}"]')
        lines.append('PL -. "beacons / CMCD" .-> TEL["Telemetry collector, ClickHouse"]')
    if plan.rtc:
        lines += [
            f'UE["Unreal + Pixel Streaming<br/>GPU pool x{int(plan.rtc.gpu_instances.value)}"] --> SFU["SFU x{int(plan.rtc.sfu_servers.value)}"]',
            'SIG["Signalling"] --- UE',
            'SFU --> WV["WebRTC viewers"]',
            f'SFU -. relay .-> TURN["TURN x{int(plan.rtc.turn_servers.value)}<br/>UDP 3478 / TLS 443"] -.-> WV',
        ]
    s += "".join(f"  {ln}\n" for ln in lines)
    s += "```\n\n"
    if plan.origins:
        s += f"## {t('arch_failover')}\n\n"
        s += t("arch_failover_text", origins=int(plan.origins.count.value), zones=", ".join(plan.origins.zones)) + "\n\n"
        s += "```mermaid\nsequenceDiagram\n  participant P as Player\n  participant S as Steering server\n  participant A as CDN pathway A\n  participant B as CDN pathway B\n"
        s += "  P->>S: GET /steer?_HLS_pathway=A\n  S-->>P: PATHWAY-PRIORITY [A, B]\n  P->>A: GET part (fails)\n  P->>S: GET /steer?_HLS_pathway=A\n  S-->>P: PATHWAY-PRIORITY [B, A]\n  P->>B: GET part\n```\n"
    return s


def security(plan: Plan, lang: Lang, day: date) -> str:
    t = _T(lang)
    s = _header(t, plan, t("security_title", pipeline=plan.brief.pipeline), day)
    sec = plan.security
    if sec is None:
        s += t("security_none") + "\n"
    else:
        s += _table([t("value"), t("rule")], [
            [f"{t('drm_systems')}: {', '.join(sec.drm_systems)}", "constraints.drm.systems"],
            [f"{t('scheme')}: {sec.scheme}", t("sec_scheme_rule")],
            [f"{t('key_rotation')}: {sec.key_rotation_hours.text(lang)}", t.msg(sec.key_rotation_hours.rule)],
            [f"{t('signed_url_expiry')}: {sec.signed_url_expiry_s.text(lang)}", t.msg(sec.signed_url_expiry_s.rule)],
            [f"{t('watermark')}: {t('answer_yes') if sec.watermark else t('answer_no')}", "inputs.content_rights.premium_content"],
        ])
        s += f"\n## {t('steps')}\n\n" + "".join(f"{i}. {t.msg(st)}\n" for i, st in enumerate(sec.steps, 1))
        if sec.cpix:
            s += f"\n## {t('cpix_title')}\n\n{t('cpix_text')}\n"
    b = plan.brief
    if "lgpd" in b.inputs.compliance:
        s += f"\n## {t('lgpd_title')}\n\n{t('lgpd_text', days=b.inputs.content_rights.recording_retention_days)}\n"
    return s


def slo(plan: Plan, lang: Lang, day: date) -> str:
    t = _T(lang)
    b = plan.brief
    budget = 100 - b.slo_availability_pct
    s = _header(t, plan, t("slo_title", pipeline=b.pipeline), day)
    s += t("slo_text", slo=f"{b.slo_availability_pct:g}", budget=f"{budget:.2g}") + "\n\n"
    s += _table([t("severity"), t("long_window"), t("short_window"), t("burn_rate"), t("threshold")],
                [[sev, lw, sw, f"{br:g}", f"{br * budget:.3g}%"] for sev, lw, sw, br in BURN_ALERTS])
    s += f"\n## {t('slo_latency')}\n\n" + "".join(f"- {m.mode}: {m.target.text(lang)} ({', '.join(m.protocols)})\n" for m in plan.modes)
    s += f"\n{t('slo_qoe')}\n"
    return s


def prometheus_rules(plan: Plan) -> str:
    """Prometheus alerting rules for the burn-rate alerts (language-neutral YAML)."""
    budget = (100 - plan.brief.slo_availability_pct) / 100
    rules = []
    for sev, lw, sw, br in BURN_ALERTS:
        thr = br * budget

        def ratio(w: str) -> str:
            return (f'sum(rate(flowcast_http_requests_total{{code=~"5.."}}[{w}])) / sum(rate(flowcast_http_requests_total[{w}]))')

        rules.append({
            "alert": f"ErrorBudgetBurn_{lw}_{sw}",
            "expr": f"{ratio(lw)} > {thr:.5g} and {ratio(sw)} > {thr:.5g}",
            "labels": {"severity": sev, "pipeline": plan.brief.pipeline},
            "annotations": {"summary": f"error budget burning at {br:g}x over {lw} and {sw}"},
        })
    rules.append({"alert": "EncoderStalled", "expr": "time() - flowcast_last_publish_timestamp_seconds > 3 * flowcast_target_duration_seconds",
                  "labels": {"severity": "page"}, "annotations": {"summary": "no new part/segment for 3 target durations"}})
    if plan.rtc:
        cap = plan.rtc.turn_servers.value
        rules.append({"alert": "TurnAllocationsHigh", "expr": f"sum(turn_allocations) / ({cap:g} * turn_allocations_capacity) > 0.8",
                      "labels": {"severity": "page"}, "annotations": {"summary": "TURN above 80% of planned capacity"}})
    return yaml.safe_dump({"groups": [{"name": f"flowcast-{plan.brief.pipeline}", "rules": rules}]}, sort_keys=False)


def slo_file(plan: Plan) -> str:
    """The brief's SLOs in the telemetry SLO file format (flowcast.telemetry.slo.load_slos)."""
    b = plan.brief
    slos: list[dict[str, object]] = [
        {"name": "startup_p95_2s", "sli": "startup", "objective": 0.95, "threshold_ms": 2000},
        {"name": "rebuffer_ratio_0.5pct", "sli": "rebuffer", "objective": 0.995},
        {"name": f"playback_success_{b.slo_availability_pct:g}pct", "sli": "playback_success", "objective": round(b.slo_availability_pct / 100, 6)},
    ]
    proto = {"interactive": "pixel-streaming" if b.latency_targets.interactive and b.latency_targets.interactive.pixel_streaming else "webrtc",
             "near-live": "ll-hls", "broadcast": "hls"}
    for m in plan.modes:
        ms = m.target.value if m.target.unit == "ms" else m.target.value * 1000
        slos.append({"name": f"{proto[m.mode]}_latency_p95_{ms:g}ms", "sli": "latency", "objective": 0.95,
                     "threshold_ms": ms, "protocol": proto[m.mode]})
    return yaml.safe_dump({"slos": slos}, sort_keys=False)


def _diagnosis(plan: Plan) -> dict[str, list[str]]:
    p = plan.brief.pipeline
    return {
        "rb_incident": ["flowcast status --config stream_config.yaml", "curl -sI https://<cdn-host>/live/" + p + "/master.m3u8",
                        "kubectl -n flowcast get pods -o wide", "kubectl -n flowcast logs deploy/flowcast-origin --since=15m | tail -100"],
        "rb_keyrot": ["curl -s https://<origin>/live/" + p + "/720p/index.m3u8 | grep EXT-X-KEY",
                      "ffprobe -v error -show_entries stream_side_data -of json <init.mp4>",
                      "kubectl -n flowcast logs deploy/flowcast-keyserver --since=1h | grep -i rotat"],
        "rb_drm": ["curl -s -o /dev/null -w '%{http_code} %{time_total}\\n' -X POST https://<licence-server>/license",
                   "clickhouse-client -q \"SELECT error_code, count() FROM sessions WHERE start_ts > now() - INTERVAL 15 MINUTE GROUP BY error_code\""],
        "rb_cdn": ["clickhouse-client -q \"SELECT cdn, countIf(error_code != '') / count() FROM sessions WHERE start_ts > now() - INTERVAL 15 MINUTE GROUP BY cdn\"",
                   "curl -sI -H 'Cache-Control: no-cache' https://<cdn-host>/live/" + p + "/master.m3u8 | grep -i -E 'x-cache|age|via'",
                   "dig +short <cdn-host>"],
        "rb_turn": ["turnutils_uclient -t -u <user> -w <password> <turn-host>", "kubectl -n flowcast top pods -l app=turn",
                    "clickhouse-client -q \"SELECT avg(turn_relay_ratio) FROM infra WHERE ts > now() - INTERVAL 15 MINUTE\""],
        "rb_encoder": ["kubectl -n flowcast logs deploy/flowcast-encoder --since=10m | grep -E 'speed=|Error'",
                       "curl -s https://<origin>/live/" + p + "/720p/index.m3u8 | tail -5", "ffprobe -v error -show_streams <input-url>"],
    }


def runbooks(plan: Plan, lang: Lang, day: date) -> str:
    t = _T(lang)
    s = _header(t, plan, t("runbooks_title", pipeline=plan.brief.pipeline), day)
    ratio = f"{plan.rtc.relay_ratio.value:g}" if plan.rtc else "0.2"
    for key, cmds in _diagnosis(plan).items():
        if key == "rb_turn" and not plan.rtc:
            continue
        if key == "rb_drm" and not plan.security:  # signing keys rotate even without DRM
            continue
        s += f"\n## {t(key)}\n\n**{t('detection')}:** {t(key + '_detect', ratio=ratio) if key == 'rb_turn' else t(key + '_detect')}\n\n"
        s += f"**{t('diagnosis')}:**\n\n```sh\n" + "\n".join(cmds) + "\n```\n\n"
        s += f"**{t('mitigation')}:** {t(key + '_mitigate')}\n\n**{t('verification')}:** {t(key + '_verify')}\n"
    return s


def loadtest(plan: Plan, lang: Lang, day: date) -> str:
    from flowcast.plan.loadplan import scenario_for

    t = _T(lang)
    a = plan.brief.inputs.audience
    sc = scenario_for(plan)
    s = _header(t, plan, t("loadtest_title", pipeline=plan.brief.pipeline), day)
    peak = a.peak_concurrent_viewers + a.peak_interactive_sessions
    s += f"- {t('loadtest_ramp', peak=t.num(peak))}\n- {t('loadtest_chaos')}\n- {t('loadtest_accept')}\n\n"
    s += t("loadtest_file", pipeline=plan.brief.pipeline) + "\n\n```sh\nflowcast loadtest --scenario stream_loadplan_" + plan.brief.pipeline + "_<yyyymmdd>_vN.yaml --scale 0.005 --port 8080\n```\n\n"
    s += f"## {t('loadtest_stages')}\n\n" + _table([t("stage"), t("viewers"), t("duration")],
                                                     [[str(i), t.num(st.viewers), f"{st.duration_s:g} s"] for i, st in enumerate(sc.stages)])
    s += f"\n{t('loadtest_mix')}: " + ", ".join(f"{k} {v:g}" for k, v in sc.protocol_mix.items())
    s += f"\n\n{t('loadtest_profiles')}: " + ", ".join(f"{k} {v:g}" for k, v in sc.network_profiles.items()) + "\n"
    s += f"\n## {t('loadtest_drills')}\n\n" + _table([t("drill"), t("status")], [
        [f"`{d.name}`", t("drill_automated", at=f"{d.at_s:g}") if d.status == "automated" else t("drill_planned")] for d in sc.drills])
    acc = sc.acceptance
    s += f"\n{t('loadtest_targets', startup=f'{acc.startup_p95_ms:g}', rebuffer=f'{acc.rebuffer_ratio_max:g}', mos=f'{acc.mos_min:g}')}"
    if acc.latency_p95_ms:
        s += " " + t("loadtest_latency", latency=f"{acc.latency_p95_ms:g}")
    return s + "\n"


def _price_sources(t: _T, plan: Plan) -> str:
    """Each price table the plan used: page, page date, checked or not (data/prices_*.yaml)."""
    used = list(dict.fromkeys(ln.price_table for ln in plan.cost.lines if ln.price_table)) + ["fx_per_usd"]
    rows = []
    for table in used:
        src = data.price_source(table)
        rows.append([f"`{table}`", src.url, src.page_date, t("answer_yes") if src.verified else t("price_unverified"), src.note])
    return _table([t("price_table"), t("source"), t("page_date"), t("verified"), t("note")], rows)


def cost(plan: Plan, lang: Lang, day: date) -> str:
    t = _T(lang)
    c = plan.cost
    s = _header(t, plan, t("cost_title", pipeline=plan.brief.pipeline), day)
    s += t("cost_intro", as_of=c.prices_as_of, budget=t.num(c.budget), currency=c.currency, fx=f"{c.fx:g}") + "\n\n"
    rows = [[t.msg(ln.label or ln.item), ln.region, t.num(ln.usd), f"{ln.quantity.text(lang)} ({t.msg(ln.quantity.rule)})",
             f"`{ln.price_table}`" + ("" if not ln.price_table or data.price_source(ln.price_table).verified else " *")] for ln in c.lines]
    rows.append([f"**{t('total')}**", "", f"**{t.num(c.total_usd)}**", f"{t.num(c.total_budget_ccy)} {c.currency}", ""])
    s += _table([t("item"), t("region"), t("usd"), t("quantity"), t("price_table")], rows) + "\n"
    s += (t("within") if c.within_budget else t("over")).format(total=t.num(c.total_budget_ccy), currency=c.currency, budget=t.num(c.budget)) + "\n"
    s += f"\n## {t('price_sources_title')}\n\n{t('price_sources_intro')}\n\n" + _price_sources(t, plan)
    if plan.adjustments:
        s += f"\n## {t('adjustments_title')}\n\n" + "".join(f"- {t.msg(a)}\n" for a in plan.adjustments)
    s += f"\n## {t('levers')}\n\n" + "".join(f"1. {t.msg(lv)}\n" for lv in c.levers)
    s += f"\n## {t('carbon_title')}\n\n"
    rows = [[t.msg(cl.label or cl.item), cl.region, t.num(cl.kwh), t.num(cl.kg_co2e, 1), f"{cl.intensity.text(lang)} ({t.msg(cl.intensity.rule)})"] for cl in plan.carbon]
    rows.append([f"**{t('total')}**", "", t.num(sum(x.kwh for x in plan.carbon)), t.num(sum(x.kg_co2e for x in plan.carbon), 1), ""])
    s += _table([t("item"), t("region"), t("kwh"), t("co2"), t("intensity")], rows)
    return s


DOCUMENTS = {
    "decisions": decisions,
    "architecture": architecture,
    "encoding_ladder": ladder_doc,
    "security": security,
    "slo_alerts": slo,
    "runbooks": runbooks,
    "loadtest_plan": loadtest,
    "cost_carbon": cost,
}
