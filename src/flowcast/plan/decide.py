"""Decisions: a pure function brief -> Plan. Every number carries the rule that produced it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Literal

from flowcast.plan import data
from flowcast.plan.brief import Brief
from flowcast.plan.messages import Msg
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
    """A number in the plan with its unit and the rule that produced it."""

    value: float
    unit: str
    rule: str

    def __str__(self) -> str:
        v = f"{self.value:,.0f}" if abs(self.value) >= 100 else f"{self.value:g}"
        return f"{v} {self.unit}".strip()


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
    audio: str
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
    shield_region: str
    cache_policies: tuple[tuple[str, str, str], ...]  # (resource, path pattern, Cache-Control)


@dataclass(frozen=True)
class OriginPlan:
    count: Figure
    zones: tuple[str, ...]
    region: str
    reason: str


@dataclass(frozen=True)
class SecurityPlan:
    drm_systems: tuple[str, ...]
    scheme: str
    key_rotation_hours: Figure
    signed_url_expiry_s: Figure
    watermark: bool
    cpix: bool
    steps: tuple[str, ...]


@dataclass(frozen=True)
class CostLine:
    item: str
    region: str
    usd: float
    quantity: Figure


@dataclass(frozen=True)
class CostPlan:
    lines: tuple[CostLine, ...]
    total_usd: float
    total_budget_ccy: float
    budget: float
    currency: str
    fx: float
    levers: tuple[str, ...]
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
        Figure(round(seg, 3), "s", f"LL segment 2 s (1 s when parts < 0.25 s); GOP = one segment so every rung cuts on the same frame"),
        Figure(round(part, 3), "s", f"largest part in {[round(x, 3) for x in PART_CANDIDATES]} with encode {ENCODE_S} + PART-HOLD-BACK 3 x part + delivery {DELIVERY_S} <= 0.8 x target {target_s} s"),
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
        Figure(seg, "s", f"largest segment in {list(SEGMENT_CANDIDATES)} with encode 0.5 + HOLD-BACK 3 x segment + delivery 1.0 <= 0.8 x target {target_s} s"),
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
    cap_reason = "budget cap"
    if source and (max_height is None or source.height < max_height):
        max_height, cap_reason = source.height, f"probed source height {source.height}p (never upscale)"
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
    gop = Figure(round(seg.value * fps), "frames", f"GOP = segment {seg.value:g} s x {fps:g} fps{' (probed)' if source else ''} (closed, scene-cut off)")
    bf = _bframes("libx264", ladder, cfg_mode, seg.value)
    bframes = Figure(bf, "", "0 in low-latency (reorder delay, parts decodable on arrival); 3 in broadcast except baseline (transcode/encoders)")
    audio = f"AAC-LC {ladder.audio.bitrate_kbps} kbps stereo 48 kHz" + (" (96 kbps: >20% of viewers on 3G)" if ladder.audio.bitrate_kbps == 96 else "")
    cmds = {e: ffmpeg_command(e, ladder, cfg_mode, seg.value) for e in _encoders(brief, name)}
    return ModePlan(
        mode=name, protocols=protocols, reason=reason,
        target=Figure(target_s, "s", "brief latency_targets"), estimate=est,
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
    rules = tuple(RungRule(r.name, 0, r.video_bitrate_kbps, "WebRTC simulcast layer (full, 1/2, 1/4 scale) at the bpp rule x 1.15 low-latency") for r in rungs)
    protocols = ("WebRTC", "Pixel Streaming signalling", "TURN") if it.pixel_streaming else ("WebRTC (WHIP/WHEP)", "TURN")
    reason = Msg("reason_interactive", {"p95": it.p95_ms})
    est = Figure(180, "ms", "capture+NVENC 30 ms + network RTT/2 40 ms + jitter buffer 60 ms + decode/render 50 ms")
    mode = ModePlan(
        mode="interactive", protocols=protocols, reason=reason, target=Figure(it.p95_ms, "ms", "brief latency_targets"),
        estimate=est, segment_s=None, part_s=None,
        gop_frames=None, b_frames=Figure(0, "", "WebRTC: no B-frames (each frame decodable at once); keyframes on PLI/FIR only"),
        audio="Opus 64 kbps 48 kHz (WebRTC)", ladder=ladder, rung_rules=rules,
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
        relay_ratio=Figure(ratio, "", "0.15 of sessions need TURN relay on fixed networks + 0.15 x share on mobile (CGNAT) networks"),
        session_mbps=Figure(round(sess_kbps / 1000, 2), "Mbit/s", f"top simulcast layer {rungs[0].video_bitrate_kbps} + Opus 64 + data channel 50 kbps"),
        turn_servers=Figure(turn, "instances", f"ceil(peak {a.peak_interactive_sessions} x relay {ratio} x {sess_kbps / 1000:.2f} Mbit/s / 2 Gbit/s per c6gn.xlarge relay) + 1 (N+1), spread over 2 zones"),
        sfu_servers=Figure(sfu, "instances", f"ceil(peak {a.peak_interactive_sessions} x {sess_kbps / 1000:.2f} Mbit/s / 1 Gbit/s per SFU) + 1 (N+1)"),
        gpu_instances=Figure(gpu, "g4dn.xlarge", f"1 Unreal instance per GPU; peak {a.peak_interactive_sessions} sessions x 1.1 warm pool" if gpu else "no Pixel Streaming"),
        region=cloud, launch_args=launch,
    )
    return mode, rtc


# ---- CDN, origins, security -------------------------------------------------------------

def _cache_policies(dist: ModePlan) -> tuple[tuple[str, str, str], ...]:
    seg = dist.segment_s.value if dist.segment_s else 6.0
    if dist.mode == "near-live":
        return (
            ("blocking playlist (_HLS_msn)", "*.m3u8?_HLS_msn=*", f"max-age={int(6 * seg)} (6 x target duration, RFC 8216bis B.1); cache key keeps _HLS_msn/_HLS_part/_HLS_skip, drops _HLS_throughput"),
            ("plain playlist / MPD", "*.m3u8, *.mpd", f"max-age={max(1, int(seg / 2))} (1/2 target duration)"),
            ("parts and segments", "*.m4s, *.mp4", "max-age=31536000, immutable (names never reused)"),
            ("init segments", "*/init.mp4", "max-age=31536000, immutable"),
            ("license / keys", "/license/*", "no-store (never cached)"),
        )
    return (
        ("playlist / MPD", "*.m3u8, *.mpd", f"max-age={max(1, int(seg / 2))} (1/2 target duration)"),
        ("segments", "*.m4s, *.mp4", "max-age=31536000, immutable"),
        ("init segments", "*/init.mp4", "max-age=31536000, immutable"),
        ("license / keys", "/license/*", "no-store (never cached)"),
    )


def _origins(brief: Brief, dist: ModePlan, cdn_name: str) -> OriginPlan:
    a = brief.inputs.audience
    region = brief.constraints.region_preference[0] if brief.constraints.region_preference else max(a.regions, key=lambda r: r.share).region
    cloud = data.prices()["cloud_region_for_zone"][region]
    # Behind an origin shield each object is requested about once per shield; without a
    # shield, once per edge PoP (assume 60 PoPs per zone). Blocking-reload clients held
    # per core: 5,000 (docs/ARCHITECTURE.md); plan at 50% of it.
    shielded = cdn_name == "cloudfront"
    clients = len(a.regions) * (2 if shielded else 60) * max(1, len(dist.ladder.rungs))
    per_origin = 2 * 5000 * 0.5
    n = max(2, ceil(clients / per_origin) + 1)
    return OriginPlan(
        count=Figure(n, "origins", f"max(2, ceil({clients} CDN fetchers [{'shield' if shielded else '60 PoPs'} x zones x rungs] / {per_origin:g} per 2-core origin) + 1) (N+1)"),
        zones=(f"{cloud}a", f"{cloud}b"), region=cloud,
        reason="N+1 origins across two availability zones, packaging from timestamp-aligned segment numbers so any origin serves any request; announced via HLS Content Steering pathways and DASH BaseURLs",
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
    token = "CloudFront key-group signed URLs" if cdn_name == "cloudfront" else f"{cdn_name} token authentication"
    steps = [
        "Key server generates content keys per key period; CPIX 2.x document (ContentKey, DRMSystem with PSSH per system, ContentKeyPeriod for rotation) exchanged with the DRM provider",
        f"Packager encrypts CMAF with {scheme} (one encryption for all DRM systems), pssh boxes per system, sgpd/seig on rotation",
        f"Keys rotate every {drm.key_rotation_hours:g} h (ContentKeyPeriod); licenses are non-persistent for live",
        f"{token} on manifests and media, expiry {expiry} s",
        "Forensic watermark on premium renditions, verified by extraction in the acceptance tests",
    ]
    return SecurityPlan(
        drm_systems=tuple(systems), scheme=scheme,
        key_rotation_hours=Figure(drm.key_rotation_hours, "h", "brief constraints.drm.key_rotation_hours"),
        signed_url_expiry_s=Figure(expiry, "s", f"live hours per day {a.live_hours_per_day:g} clipped to [1 h, 4 h]: outlives a viewing session (expiry is checked on every request), dies with the event"),
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
        cdn_name, cdn_reason = priced[0], Msg("cdn_contract", {"cdn": priced[0]})
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
        cdn = CdnPlan(name=cdn_name, reason=cdn_reason,
                      shield_region=data.prices()["cloud_region_for_zone"][max(a.regions, key=lambda r: r.share).region] if cdn_name == "cloudfront" else "none (no shield on this CDN)",
                      cache_policies=_cache_policies(dist))
        origins = _origins(brief, dist, cdn_name)
        k, rule = delivered_kbps(dist.ladder, a.devices, a.networks)
        kbps = Figure(round(k), "kbps", rule)
    vh = a.peak_concurrent_viewers * a.avg_to_peak_ratio * a.live_hours_per_day * 30
    viewer_hours = Figure(round(vh), "viewer-h/month", f"peak {a.peak_concurrent_viewers} x avg/peak {a.avg_to_peak_ratio:g} x {a.live_hours_per_day:g} h/day x 30 days")
    if brief.inputs.compliance and "lgpd" in brief.inputs.compliance and brief.inputs.content_rights.recordings and not brief.constraints.consent_required_for_recording:
        risks.append(Msg("risk_lgpd"))
    empty_cost = CostPlan((), 0.0, 0.0, brief.inputs.budget.monthly, brief.inputs.budget.currency, 1.0, (), "")
    return Plan(
        brief=brief, modes=tuple(modes), rtc=rtc, cdn=cdn, origins=origins, security=_security(brief, cdn_name if dist else "none"),
        cost=empty_cost, carbon=(), viewer_hours=viewer_hours, delivered_kbps=kbps,
        adjustments=adjustments, risks=tuple(risks),
    )
