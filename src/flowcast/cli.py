"""The `flowcast` command: a thin shell over library calls."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import uvloop

from flowcast.config import ConfigError, FlowcastConfig, load_config, parse_config

log = logging.getLogger("flowcast")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as a partial config mapping, so they go through the same validation as YAML."""
    out: dict[str, Any] = {}
    if args.input is not None:
        out.setdefault("ingest", {})["input"] = args.input
    if args.srt_passphrase is not None:
        out.setdefault("ingest", {})["srt_passphrase"] = args.srt_passphrase
    if args.mode == "interactive":
        # WebRTC (WHEP) beside LL-HLS/LL-DASH: the sub-second mode adds an egress, not a packaging
        out.setdefault("webrtc", {})["enabled"] = True
    elif args.mode is not None:
        out.setdefault("packaging", {})["mode"] = args.mode
    if getattr(args, "turn", False):
        out.setdefault("webrtc", {})["enabled"] = True
        out["webrtc"].setdefault("turn", {})["enabled"] = True
    if args.host is not None:
        out.setdefault("origin", {})["host"] = args.host
    if args.port is not None:
        out.setdefault("origin", {})["port"] = args.port
    if getattr(args, "workers", None) is not None:
        out.setdefault("origin", {})["workers"] = args.workers
    if args.encoder is not None:
        out["encoder"] = args.encoder
    if args.stream is not None:
        out["stream"] = args.stream
    if args.data_dir is not None:
        out["data_dir"] = str(args.data_dir)
    if getattr(args, "tls", None) == "self-signed":
        out.setdefault("origin", {})["tls_self_signed"] = True
    if getattr(args, "tls_cert", None) is not None:
        out.setdefault("origin", {})["tls_cert"] = str(args.tls_cert)
    if getattr(args, "tls_key", None) is not None:
        out.setdefault("origin", {})["tls_key"] = str(args.tls_key)
    if getattr(args, "require_token", False):
        out.setdefault("protection", {})["require_token"] = True
    if getattr(args, "encryption", None) is not None:
        out.setdefault("protection", {})["scheme"] = args.encryption
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_config(args: argparse.Namespace) -> FlowcastConfig:
    base: dict[str, Any] = {}
    if args.config is not None:
        base = load_config(args.config).model_dump(mode="json", exclude_unset=True)
    return parse_config(_merge(base, _overrides(args)))


def _up(args: argparse.Namespace) -> int:
    from flowcast.origin.stack import StackError, run_forever

    config = build_config(args)
    try:
        # uvloop: the origin's per-response CPU is about 40 % lower than on the stdlib loop
        # (docs/benchmarks.md, origin capacity), and everything else runs on it unchanged.
        uvloop.run(run_forever(config))
    except StackError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _token(args: argparse.Namespace) -> int:
    from flowcast.origin.access import signer_for

    token = signer_for(args.data_dir).sign(
        f"/live/{args.stream}/", ttl=args.ttl, session_id=args.session_id, client_ip=args.client_ip
    )
    print(f"token   {token}")
    print(f"player  {args.base_url}/?stream={args.stream}&token={token}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from flowcast.plan import BriefError, ProbeError, UnknownLanguage, build_pack

    try:
        result = build_pack(args.brief, args.out, args.lang, probe=args.probe)
    except (BriefError, ProbeError, UnknownLanguage) as exc:
        print(f"flowcast: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


def _slos(args: argparse.Namespace):  # -> (slos, rules)
    from flowcast.telemetry.slo import load_slos

    return load_slos(args.slo_file.read_text() if args.slo_file else None)


def _qoe_rules(args: argparse.Namespace) -> int:
    from flowcast.telemetry.prom import alert_rules_yaml

    print(alert_rules_yaml(*_slos(args)), end="")
    return 0


def _qoe_grafana(args: argparse.Namespace) -> int:
    import json

    from flowcast.telemetry.prom import grafana_dashboard

    print(json.dumps(grafana_dashboard(_slos(args)[0]), indent=2))
    return 0


def _admin_request(url: str, method: str = "GET") -> Any:
    """A JSON request to a running origin's admin routes ($FLOWCAST_TELEMETRY_ADMIN_TOKEN)."""
    import json
    import os
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, method=method)
    token = os.environ.get("FLOWCAST_TELEMETRY_ADMIN_TOKEN")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"flowcast: {url}: HTTP {exc.code} {exc.read()[:300].decode(errors='replace')}") from None
    except OSError as exc:
        raise SystemExit(f"flowcast: cannot reach {url}: {exc}") from None


def _fmt(v: Any, digits: int = 0) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _qoe_report(args: argparse.Namespace) -> int:
    """QoE per group: from a running origin (--url), or the store itself (--data-dir, with
    `flowcast up` stopped: chDB opens one store per process)."""
    import json
    import time
    import urllib.parse

    from flowcast.origin.telemetry_routes import BadQuery, parse_group_by, parse_since

    try:
        since = parse_since(args.since)
        by = parse_group_by(args.by or "")
    except BadQuery as exc:
        print(f"flowcast: --{exc.field}: {exc.message}", file=sys.stderr)
        return 2
    if args.data_dir is not None:
        from flowcast.telemetry.qoe import qoe_aggregates, turn_relay
        from flowcast.telemetry.store import EmbeddedStore

        with EmbeddedStore(args.data_dir / "telemetry") as store:
            end = time.time()
            rows = [r.as_dict() for r in qoe_aggregates(store, end - since, end, by)]
            infra = turn_relay(store, end - since, end, by)
    else:
        qs = urllib.parse.urlencode({"since": args.since, "by": ",".join(by)})
        doc = _admin_request(f"{args.url.rstrip('/')}/qoe/v1/report?{qs}")
        rows, infra = doc["rows"], doc.get("infra", [])
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ["sessions", "startup p95 ms", "rebuffer ratio", "stalls", "latency p95 ms", "bitrate kbps", "error rate"]
    print("\t".join([*(by or ["all"]), *cols]))
    for r in rows:
        group = [str(r["group"].get(g, "")) for g in by] or ["all"]
        vals = [
            str(r["sessions"]), _fmt(r["startup_p95_ms"]), _fmt(r["rebuffer_ratio"], 4), str(r["rebuffer_count"]),
            _fmt(r["latency_p95_ms"]), _fmt(r["avg_bitrate_kbps"]), _fmt(r["error_rate"], 3),
        ]
        print("\t".join(group + vals))
    for r in infra:  # WebRTC sessions only
        group = [str(r["group"].get(g, "")) for g in by] or ["all"]
        print("\t".join(group) + f"\tturn_relay_ratio {r['turn_relay_ratio']:.3f} over "
              f"{r['webrtc_play_time_ms'] / 60_000:.1f} WebRTC play-minutes")
    return 0


def _qoe_consent(args: argparse.Namespace) -> int:
    """Print the consent proof of one session from a running origin."""
    import json
    import urllib.parse

    sid = urllib.parse.quote(args.session, safe="")
    doc = _admin_request(f"{args.url.rstrip('/')}/qoe/v1/consent/{sid}")
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    for d in doc["decisions"]:
        print(
            f"{d['ts']:.3f}\t{d['choice']}\tbanner {d['banner_version']} sha256:{d['banner_hash']}\t"
            f"{d['language']}\t{','.join(d['purposes'])}\tuser {d['user_id'] or '-'}"
        )
    return 0


def _qoe_erase(args: argparse.Namespace) -> int:
    """LGPD erasure of one user: the raw id is hashed here with the server's key."""
    import os

    from flowcast.telemetry.collector import HMAC_KEY_ENV
    from flowcast.telemetry.schema import hash_user_id

    if args.user_hash:
        h = args.user_hash
    else:
        raw = os.environ.get(HMAC_KEY_ENV)
        key_file = args.data_dir / "telemetry_hmac.key"
        if not raw and key_file.exists():
            raw = key_file.read_text().strip()
        if not raw:
            print(f"flowcast: need ${HMAC_KEY_ENV} (or {key_file}) to hash --user", file=sys.stderr)
            return 2
        h = hash_user_id(args.user, bytes.fromhex(raw))
    doc = _admin_request(f"{args.url.rstrip('/')}/qoe/v1/users/{h}", method="DELETE")
    print(f"erased {doc['sessions_erased']} session(s) of user {h}")
    return 0


def _loadtest(args: argparse.Namespace) -> int:
    """Exit 0 when every acceptance criterion passes, 1 when one fails, 2 when refused."""
    from flowcast.loadtest import LoadTestRefused, run_loadtest

    if getattr(args, "scenario", None) is not None:
        return _loadtest_scenario(args)
    manifest = "manifest.mpd" if args.protocol == "ll-dash" else "master.m3u8"
    url = args.url or f"http://127.0.0.1:{args.port}/live/{args.stream}/{manifest}"
    import os
    from urllib.parse import urlsplit

    from flowcast.loadtest.drills import DrillError, drill_for_target

    drills = []
    ns = None
    try:
        if args.drill:
            drills.append(drill_for_target(
                args.drill, url, at_s=args.drill_at if args.drill_at is not None else args.duration / 2,
                pid=args.drill_pid or args.origin_pid, origin_id=args.drill_origin, seconds=args.drill_seconds,
                target_duration_s=args.target_duration, admin_token=os.environ.get("FLOWCAST_TELEMETRY_ADMIN_TOKEN"),
            ))
        if args.netns:
            from flowcast.loadtest import netns
            from flowcast.loadtest.profiles import get_profile

            no_delay = netns.delay_available()
            if no_delay is not None:
                print(f"flowcast: delay and jitter stay in the userspace relay: {no_delay}", file=sys.stderr)
            imp = netns.impairment_for(get_profile(args.profile), args.viewers, kernel_delay=no_delay is None)
            ns = netns.Namespace(ports=(urlsplit(url).port or 80,), impairment=imp)
            ns.open()
        report = run_loadtest(
            url, args.viewers, args.duration, args.profile, args.protocol, args.out, origin_pid=args.origin_pid,
            drills=drills, netns=ns,
        )
    except (LoadTestRefused, DrillError) as exc:
        print(f"flowcast: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # netns.NetnsError: not root, tools missing
        print(f"flowcast: {exc}", file=sys.stderr)
        return 2
    finally:
        if ns is not None:
            ns.close()
    for v in report.verdicts:
        print(f"{v.label:<4}  {v.criterion}: {v.measured} (criterion {v.threshold})")
    for d in report_drills(report):
        print(f"{d['verdict']:<4}  drill {d['name']}: {d['expectation']}; measured {d['measured']}")
    print(f"report  {report.html_path}")
    return 0 if report.passed and all(d["verdict"] != "FAIL" for d in report_drills(report)) else 1


def report_drills(report) -> list:  # type: ignore[no-untyped-def]
    import json

    return json.loads(report.json_path.read_text()).get("drills", [])


def _loadtest_scenario(args: argparse.Namespace) -> int:
    """`flowcast loadtest --scenario FILE [--scale F]`: exit 0 pass, 1 fail, 2 refused / invalid."""
    from flowcast.loadtest import LoadTestRefused
    from flowcast.loadtest.scenario import ScenarioError, load_scenario, run_scenario, scale

    try:
        sc = scale(load_scenario(args.scenario), args.scale)
        report = run_scenario(sc, args.out, port=args.port, origin_pid=args.origin_pid)  # --port: the running `flowcast up`
    except (ScenarioError, LoadTestRefused) as exc:
        print(f"flowcast: {exc}", file=sys.stderr)
        return 2
    for v in report.verdicts:
        print(f"{v['verdict']:<4}  stage {v['stage']} {v['criterion']}: {v['measured']} (criterion {v['threshold']})")
    for d in report.drills:
        print(f"{d['verdict']:<4}  stage {d['stage']} drill {d['name']}")
    print(f"report  {report.md_path}")
    return 0 if report.passed else 1


def _watermark_extract(args: argparse.Namespace) -> int:
    import os

    from flowcast.protect.watermark import WatermarkError
    from flowcast.protect.watermark_extract import extract_recording, parse_candidates

    secret_hex = os.environ.get(args.secret_env)
    if not secret_hex:
        print(f"flowcast: set {args.secret_env} to the watermark secret (hex)", file=sys.stderr)
        return 2
    try:
        candidates = parse_candidates(args.candidates.read_text()) if args.candidates is not None else None
        match = extract_recording(
            args.recording,
            secret=bytes.fromhex(secret_hex),
            segment_duration=args.segment_duration,
            candidates=candidates,
            first_segment=None if args.unknown_start else args.first_segment,
        )
    except (WatermarkError, ValueError) as exc:
        print(f"flowcast: {exc}", file=sys.stderr)
        return 2
    if match is None:
        print("no session identified (not enough marked segments, or none of the candidates)")
        return 1
    print(
        f"session {match.session_id} (confidence {match.confidence:.6f}, {match.segments} segments, "
        f"{match.agreements} agree, {match.required} needed, offset {match.offset})"
    )
    return 0


def _pixelstreaming(args: argparse.Namespace) -> int:
    """Pixel Streaming signalling (+ the simulated streamer), or only a simulated streamer."""
    from flowcast.webrtc.pixelstreaming.app import (
        IceConfig,
        PixelStreamingOptions,
        run_pixelstreaming,
        run_streamer,
        turn_secret_from_env,
    )
    from flowcast.webrtc.pixelstreaming.messages import RateLimit
    from flowcast.webrtc.pixelstreaming.server import Listen
    from flowcast.webrtc.pixelstreaming.signalling import HubLimits

    try:
        if args.connect:
            ice_hosts = tuple(args.ice_host or ())
            audio, lip_sync = not args.no_audio, args.lip_sync
            asyncio.run(run_streamer(args.connect, args.streamer_id, args.input_log, ice_hosts=ice_hosts, audio=audio, lip_sync=lip_sync))
            return 0
        verifier = None
        if args.require_token:
            from flowcast.origin.access import KID, load_or_create_secret
            from flowcast.protect.tokens import TokenVerifier

            verifier = TokenVerifier({KID: load_or_create_secret(args.data_dir)})
        turn_secret = turn_secret_from_env()
        if args.turn_url and not turn_secret:
            print("flowcast: --turn-url needs $FLOWCAST_TURN_SECRET (coturn static-auth-secret)", file=sys.stderr)
            return 2
        options = PixelStreamingOptions(
            listen=Listen(args.host, args.port, args.streamer_port, args.sfu_port),
            limits=HubLimits(args.max_players, args.max_message_bytes, RateLimit(args.rate, args.burst)),
            ice=IceConfig(tuple(args.stun_url or ()), tuple(args.turn_url or ()), turn_secret),
            verifier=verifier,
            simulated_streamer=args.simulated_streamer,
            streamer_id=args.streamer_id,
            input_log=args.input_log,
            ice_hosts=tuple(args.ice_host or ()),
            audio=not args.no_audio,
            lip_sync=args.lip_sync,
        )
        asyncio.run(run_pixelstreaming(options))
    except (OSError, ValueError) as exc:
        print(f"flowcast: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _keys_export_cpix(args: argparse.Namespace) -> int:
    """Our content keys of one stream as a CPIX 2.3 document, for a DRM service."""
    import os

    from flowcast.protect.cpix import CpixError, cpix_for_store, render_cpix
    from flowcast.protect.keystore import KeyStore, KeyStoreError, MasterKeyMissing, load_master_key

    data_dir = Path(args.data_dir)
    try:
        try:
            master = load_master_key()
        except MasterKeyMissing:
            dev = data_dir / "master.key"  # what `flowcast up` made without FLOWCAST_MASTER_KEY
            if not dev.exists():
                raise
            master = load_master_key(path=dev)
        doc = cpix_for_store(KeyStore(data_dir / "keys.json", master), args.stream, args.scheme)
        xml = render_cpix(doc)
    except (KeyStoreError, CpixError) as exc:
        print(f"flowcast: keys export-cpix: {exc}", file=sys.stderr)
        return 2
    # The document holds the keys in the clear (PlainValue): owner-only, never on stdout.
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(xml)
    print(f"wrote {len(doc.keys)} content key(s) of stream {args.stream!r} to {args.out} (keys in the clear: send it only over an authenticated, encrypted channel)")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowcast", description="Self-hostable live streaming stack")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the live pipeline and origin (test source by default)")
    up.add_argument("--config", type=Path, help="YAML configuration (what `flowcast plan` writes)")
    up.add_argument(
        "--input", help="testsrc | FILE | rtmp://0.0.0.0:1935/live/<key> | srt://0.0.0.0:9000?mode=listener | whip"
    )
    up.add_argument("--srt-passphrase", help="SRT passphrase (10-79 characters)")
    up.add_argument("--mode", choices=["low-latency", "broadcast", "interactive"],
                    help="interactive: also WebRTC (WHEP) at /whep/<stream>")
    up.add_argument("--turn", action="store_true", help="run Debian's coturn on loopback; WHEP hands out TURN credentials")
    up.add_argument("--encoder", help="libx264 (default), libx265, libsvtav1, h264_nvenc, h264_qsv, h264_amf")
    up.add_argument("--stream", help="stream name in URLs (default: live)")
    up.add_argument("--host", help="listen address (default 127.0.0.1)")
    up.add_argument("--port", type=int, help="HTTP port (default 8080)")
    up.add_argument("--workers", type=int, help="origin processes sharing the port (default 1)")
    up.add_argument("--data-dir", type=Path)
    up.add_argument("--require-token", action="store_true", help="signed URLs on every media request")
    up.add_argument("--tls", choices=["self-signed"], help="serve HTTPS with a development certificate")
    up.add_argument("--tls-cert", type=Path, help="PEM certificate (chain) for HTTPS")
    up.add_argument("--tls-key", type=Path, help="PEM private key for HTTPS")
    up.add_argument("--encryption", choices=["none", "cenc", "cbcs"], help="Common Encryption scheme (ClearKey)")
    up.set_defaults(func=_up)

    tok = sub.add_parser("token", help="mint a signed player URL / token for a stream")
    tok.add_argument("--stream", default="live")
    tok.add_argument("--ttl", type=int, default=4 * 3600, help="seconds (default 4 h)")
    tok.add_argument("--session-id")
    tok.add_argument("--client-ip", help="bind the token to an address or CIDR network")
    tok.add_argument("--data-dir", type=Path, default=Path("data"))
    tok.add_argument("--base-url", default="http://127.0.0.1:8080")
    tok.set_defaults(func=_token)

    plan = sub.add_parser("plan", help="kickoff brief -> architecture pack and a config `flowcast up` runs")
    plan.add_argument("brief", type=Path, help="brief YAML (see examples/)")
    plan.add_argument("--out", type=Path, required=True, help="output folder")
    plan.add_argument("--lang", choices=["en", "pt-BR"], default="en")
    plan.add_argument("--probe", type=Path, help="a sample of the content, to place the ladder rungs")
    plan.set_defaults(func=_plan)

    qoe = sub.add_parser("qoe", help="QoE telemetry: reports, alert rules, dashboards, erasure")
    qsub = qoe.add_subparsers(dest="qoe_command", required=True)
    rep = qsub.add_parser("report", help="QoE aggregates over a time range, grouped")
    rep.add_argument("--since", default="1h", help="30m, 1h, 7d (default 1h)")
    rep.add_argument("--by", default="", help="comma list of protocol, cdn, region, player_version, stream_id, codec")
    rep.add_argument("--url", default="http://127.0.0.1:8080", help="a running origin (default)")
    rep.add_argument("--data-dir", type=Path, help="read the store directly instead (origin stopped)")
    rep.add_argument("--json", action="store_true")
    rep.set_defaults(func=_qoe_report)
    rules = qsub.add_parser("rules", help="Prometheus alert rules for the SLO burn rates (YAML on stdout)")
    rules.add_argument("--slo-file", type=Path)
    rules.set_defaults(func=_qoe_rules)
    graf = qsub.add_parser("grafana", help="Grafana dashboard JSON on stdout")
    graf.add_argument("--slo-file", type=Path)
    graf.set_defaults(func=_qoe_grafana)
    erase = qsub.add_parser("erase", help="erase one user's telemetry (LGPD Art. 18 VI) on a running origin")
    who = erase.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="the raw user id (hashed here with the server's HMAC key)")
    who.add_argument("--user-hash", help="the stored HMAC-SHA256 hex")
    erase.add_argument("--url", default="http://127.0.0.1:8080")
    erase.add_argument("--data-dir", type=Path, default=Path("data"))
    erase.set_defaults(func=_qoe_erase)
    consent = qsub.add_parser("consent", help="one session's recorded consent decisions (LGPD Art. 8 par. 2 proof)")
    consent.add_argument("--session", required=True, help="the analytics session id")
    consent.add_argument("--url", default="http://127.0.0.1:8080", help="a running origin (default)")
    consent.add_argument("--json", action="store_true")
    consent.set_defaults(func=_qoe_consent)

    lt = sub.add_parser("loadtest", help="virtual viewers against a running `flowcast up` on 127.0.0.1")
    lt.add_argument("--viewers", type=int, default=50)
    lt.add_argument("--duration", type=float, default=60.0, help="seconds, ramp up and down included")
    lt.add_argument("--profile", default="loopback", help="loopback, 4g, lte, 3g, 3g-lossy, wifi-congested")
    lt.add_argument("--protocol", choices=["ll-hls", "hls", "ll-dash"], default="ll-hls")
    lt.add_argument("--url", help="multivariant playlist or MPD on 127.0.0.1 (default: from --port and --stream)")
    lt.add_argument("--port", type=int, default=8080)
    lt.add_argument("--stream", default="live")
    lt.add_argument("--origin-pid", type=int, help="PID of `flowcast up`, to chart its CPU and memory")
    lt.add_argument("--out", type=Path, default=Path("loadtest-report"))
    lt.add_argument("--drill", choices=["origin-kill", "publication-stall", "license-outage"],
                    help="chaos drill mid-run (stall/outage use $FLOWCAST_TELEMETRY_ADMIN_TOKEN)")
    lt.add_argument("--drill-at", type=float, help="seconds after the start (default: half the duration)")
    lt.add_argument("--drill-pid", type=int, help="origin-kill: PID of the `flowcast up` to SIGKILL")
    lt.add_argument("--drill-origin", default="origin-1", help="origin-kill: its pathway / BaseURL id")
    lt.add_argument("--drill-seconds", type=float, default=4.0, help="publication-stall / license-outage length")
    lt.add_argument("--target-duration", type=float, default=2.0, help="the stream's target duration (drill limits)")
    lt.add_argument("--netns", action="store_true",
                    help="viewers in a network namespace: the profile's loss, rates, delay and jitter applied "
                         "on the kernel's path (root; delay needs NetfilterQueue)")
    lt.add_argument("--scenario", type=Path, help="scenario YAML (what `flowcast plan` writes as stream_loadplan_*.yaml)")
    lt.add_argument("--scale", type=float, default=1.0, help="with --scenario: shrink viewers and durations by this factor (0..1]")
    lt.set_defaults(func=_loadtest)

    keys = sub.add_parser("keys", help="content keys in the key store")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    exp = ksub.add_parser("export-cpix", help="write a stream's keys as a CPIX 2.3 document for a DRM service")
    exp.add_argument("--stream", required=True)
    exp.add_argument("--out", type=Path, required=True, help="output file (made 0600: it holds the keys)")
    exp.add_argument("--data-dir", type=Path, default=Path("data"))
    exp.add_argument("--scheme", choices=["cenc", "cbcs"], help="commonEncryptionScheme to state on each key")
    exp.set_defaults(func=_keys_export_cpix)

    wm = sub.add_parser("watermark", help="forensic watermark tools")
    wsub = wm.add_subparsers(dest="watermark_command", required=True)
    ex = wsub.add_parser("extract", help="name the session a recording of the output came from")
    ex.add_argument("recording", type=Path)
    ex.add_argument("--secret-env", default="FLOWCAST_WATERMARK_SECRET", help="env var holding the mark secret (hex)")
    ex.add_argument("--segment-duration", type=float, default=2.0)
    ex.add_argument("--candidates", type=Path,
                    help="file with one candidate session id per line (or session_id<TAB>timestamp)")
    ex.add_argument("--first-segment", type=int, default=0,
                    help="media sequence number of the recording's first segment (default 0)")
    ex.add_argument("--unknown-start", action="store_true", help="the capture may start mid-stream")
    ex.set_defaults(func=_watermark_extract)

    ps = sub.add_parser("pixelstreaming", help="Unreal Pixel Streaming signalling server (+ simulated streamer) and player page")
    ps.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    ps.add_argument("--port", type=int, default=8090, help="players: page + WebSocket (default 8090)")
    ps.add_argument("--streamer-port", type=int, default=8888, help="streamers' WebSocket (default 8888)")
    ps.add_argument("--sfu-port", type=int, help="SFUs' WebSocket (off by default)")
    ps.add_argument("--simulated-streamer", action="store_true", help="run the simulated Unreal streamer (test source) too")
    ps.add_argument("--connect", metavar="WS_URL", help="run only a simulated streamer against this signalling server")
    ps.add_argument("--streamer-id", default="DefaultStreamer")
    ps.add_argument("--input-log", type=Path, help="append every input event the streamer receives (JSON lines)")
    ps.add_argument("--max-players", type=int, default=0, help="players per streamer (0 = unlimited)")
    ps.add_argument("--max-message-bytes", type=int, default=64 * 1024)
    ps.add_argument("--rate", type=float, default=50.0, help="signalling messages per second per connection")
    ps.add_argument("--burst", type=int, default=100)
    ps.add_argument("--require-token", action="store_true", help="players need a signed token granting /live/<streamer-id>/")
    ps.add_argument("--data-dir", type=Path, default=Path("data"), help="where the token secret lives")
    ps.add_argument("--stun-url", action="append", help="STUN URL for clients (repeatable)")
    ps.add_argument("--turn-url", action="append", help="TURN URL (repeatable); secret from $FLOWCAST_TURN_SECRET")
    ps.add_argument("--no-audio", action="store_true", help="simulated streamer: video only (no Opus test tone)")
    ps.add_argument("--lip-sync", action="store_true", help="simulated streamer: audio in the video's stream (browser syncs; adds delay)")
    ps.add_argument("--ice-host", action="append", help="simulated streamer: host candidate address (repeatable), e.g. 127.0.0.1")
    ps.set_defaults(func=_pixelstreaming)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"flowcast: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
