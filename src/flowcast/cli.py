"""The `flowcast` command: a thin shell over library calls."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from flowcast.config import ConfigError, FlowcastConfig, load_config, parse_config

log = logging.getLogger("flowcast")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as a partial config mapping, so they go through the same validation as YAML."""
    out: dict[str, Any] = {}
    if args.input is not None:
        out.setdefault("ingest", {})["input"] = args.input
    if args.srt_passphrase is not None:
        out.setdefault("ingest", {})["srt_passphrase"] = args.srt_passphrase
    if args.mode is not None:
        out.setdefault("packaging", {})["mode"] = args.mode
    if args.host is not None:
        out.setdefault("origin", {})["host"] = args.host
    if args.port is not None:
        out.setdefault("origin", {})["port"] = args.port
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
        asyncio.run(run_forever(config))
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


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowcast", description="Self-hostable live streaming stack")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the live pipeline and origin (test source by default)")
    up.add_argument("--config", type=Path, help="YAML configuration (what `flowcast plan` writes)")
    up.add_argument("--input", help="testsrc | FILE | rtmp://0.0.0.0:1935/live/<key> | srt://0.0.0.0:9000?mode=listener")
    up.add_argument("--srt-passphrase", help="SRT passphrase (10-79 characters)")
    up.add_argument("--mode", choices=["low-latency", "broadcast"])
    up.add_argument("--encoder", help="libx264 (default), libx265, libsvtav1, h264_nvenc, h264_qsv, h264_amf")
    up.add_argument("--stream", help="stream name in URLs (default: live)")
    up.add_argument("--host", help="listen address (default 127.0.0.1)")
    up.add_argument("--port", type=int, help="HTTP port (default 8080)")
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
