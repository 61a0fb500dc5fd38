"""Input descriptions (`ingest.input`) -> FFmpeg input options.

    testsrc                                  lavfi testsrc2 1280x720@30 + 1 kHz tone, burned-in clock
    /path/to/file.mp4                        looped in real time (-stream_loop -1 -re), probed first
    rtmp://0.0.0.0:1935/live/<stream-key>    RTMP listener; the key is checked by our front (rtmp_front)
    srt://0.0.0.0:9000?mode=listener         SRT listener, optional passphrase (AES, enforced by libsrt)
    whip                                     WebRTC publish (WHIP) at /whip/<stream> on the origin

Redundant origins epoch-lock their input (`resolve_source(..., epoch_locked=True)`, see
transcode/epoch.py): the test source is labelled with the wall clock on the frame grid, SRT
and RTMP keep the contribution's own timestamps (`-copyts`) mapped onto the epoch, a file
is played out on the epoch (position = seconds since 1970 modulo its duration, so every
origin shows the same frame at the same instant; `Source.for_run`), and a WHIP publisher
is placed by its arrival time.

A WHIP publisher's tracks are decoded by aiortc in our process and handed to FFmpeg as raw
NUT on a loopback listener (`webrtc.ingest_feed`); FFmpeg never sees the WebRTC side.

FFmpeg's RTMP listener does not enforce the stream name: rtmpproto.c only logs
"Unexpected stream X, expecting Y" (AV_LOG_WARNING) and accepts the publish anyway, and
likewise only warns "App field don't match up". So for RTMP, FFmpeg listens on an internal
loopback port and `transcode.rtmp_front` owns the public port and refuses wrong keys.

libsrt does refuse a wrong passphrase itself, but FFmpeg says nothing: the listener keeps
waiting and the reason appears only in libsrt's own log lines on stderr; `ingest_refusal`
turns those into a sentence for our log.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from flowcast.config import IngestConfig
from flowcast.transcode import epoch
from flowcast.transcode.timecode import timecode_filter

SourceKind = Literal["testsrc", "file", "rtmp", "srt", "whip"]

FFPROBE = "ffprobe"
TEST_AUDIO_HZ = 1000
TEST_RATE = 30
SRT_PBKEYLEN = 16  # AES-128: every SRT implementation supports it


class SourceError(Exception):
    """The input cannot be used; raised before the pipeline starts."""


@dataclass(frozen=True)
class PlayoutPlan:
    """One run of an epoch-locked file: the concat list, and what to add to its timestamps."""

    listing: str
    offset: float  # epoch seconds of the run's media time 0 (the list's first inpoint)
    position: float  # seconds into the file where the run starts


@dataclass(frozen=True)
class FilePlayout:
    """A looped file played out on the epoch: at wall time t it shows position t mod duration,
    on every origin alike. One FFmpeg run reads a concat list of `loops` copies whose first
    entry starts at that position; every entry's outpoint is the probed duration, so loop k
    begins exactly k durations later whatever the streams' own lengths (fftools'
    -stream_loop offset by its own, per-stream estimate, and mis-counts after -ss)."""

    path: Path
    duration: float
    extra_inputs: tuple[str, ...] = ()  # e.g. silent audio for a file without any
    startup_s: float = 0.5  # FFmpeg's start-up: the first frame comes out about this late
    horizon_s: float = 6 * 3600.0  # one run's list covers this much; the next run re-locks

    def plan(self, now: float) -> PlayoutPlan:
        start = now + self.startup_s
        position = start % self.duration
        loops = max(2, math.ceil(self.horizon_s / self.duration))
        name = "'" + str(self.path.resolve()).replace("'", "'\\''") + "'"
        lines = ["ffconcat version 1.0", f"file {name}", f"inpoint {position:.6f}", f"outpoint {self.duration:.6f}"]
        for _ in range(loops):
            lines += [f"file {name}", f"outpoint {self.duration:.6f}"]
        return PlayoutPlan("\n".join(lines) + "\n", offset=start, position=position)


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    input_args: tuple[str, ...]  # one or two `... -i X` groups
    video: str  # stream specifier of the video to encode, e.g. "0:v:0"
    audio: str  # stream specifier of the audio, e.g. "1:a:0"
    video_filter: str | None = None  # runs on the source frames before the ladder split
    audio_filter: str | None = None  # runs on the source audio before it is encoded
    epoch_locked: bool = False  # timestamps are seconds since the UNIX epoch (transcode.epoch)
    secrets: tuple[str, ...] = field(default=(), repr=False)  # mask these in anything logged
    listen: tuple[str, int] | None = None  # public (host, port) for listeners
    # RTMP: where our front expects publishers, and where FFmpeg listens behind it;
    # WHIP: internal_port is FFmpeg's loopback NUT listener that the WHIP session feeds
    rtmp_app: str | None = None
    rtmp_key: str | None = field(default=None, repr=False)
    internal_port: int | None = None
    playout: FilePlayout | None = None  # epoch-locked file: its input is made per run (for_run)

    def for_run(self, now: float, workdir: Path) -> "Source":
        """The source as one FFmpeg run starting about `now` reads it: itself, except an
        epoch-locked file, whose concat list and clock offset depend on the start time."""
        if self.playout is None:
            return self
        plan = self.playout.plan(now)
        listing = workdir / "playout.ffconcat"
        listing.write_text(plan.listing)
        offset = f"{plan.offset:.6f}"
        return replace(
            self,
            input_args=("-copyts", "-re", "-f", "concat", "-safe", "0", "-i", str(listing), *self.playout.extra_inputs),
            video_filter=f"setpts=PTS+{offset}/TB",
            audio_filter=f"asetpts=PTS+{offset}/TB",
        )

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text


def _testsrc(epoch_locked: bool) -> Source:
    return Source(
        kind="testsrc",
        input_args=(
            "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate={TEST_RATE}",
            "-f", "lavfi", "-i", f"sine=frequency={TEST_AUDIO_HZ}:sample_rate=48000",
        ),
        video="0:v:0",
        audio="1:a:0",
        video_filter=timecode_filter(epoch_rate=TEST_RATE if epoch_locked else None),
        audio_filter=epoch.generator_audio_clock() if epoch_locked else None,
        epoch_locked=epoch_locked,
    )


def _locked(source: Source, clock: epoch.InputClock) -> Source:
    """`source` with its timestamps mapped onto the epoch by `clock` (transcode.epoch)."""
    args = source.input_args
    if clock in ("mpegts", "flv"):
        args = ("-copyts", *args)  # the contribution's own timestamps: alike on every origin
    return replace(
        source,
        input_args=args,
        video_filter=epoch.input_clock(clock),
        audio_filter=epoch.input_clock(clock, audio=True),
        epoch_locked=True,
    )


def probe_file(path: Path, ffprobe: str = FFPROBE) -> set[str]:
    """The stream kinds ("video", "audio") of a media file; SourceError if unusable."""
    return _probe(path, ffprobe)[0]


def _probe(path: Path, ffprobe: str = FFPROBE) -> tuple[set[str], float | None]:
    """Stream kinds and container duration (s, None if unknown) of a media file."""
    if not path.is_file():
        raise SourceError(f"input file {path} does not exist")
    try:
        proc = subprocess.run(
            [ffprobe, "-v", "error", "-show_entries", "stream=codec_type:format=duration", "-of", "json", str(path)],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except subprocess.TimeoutExpired:
        raise SourceError(f"input file {path}: ffprobe did not finish in 30 s") from None
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise SourceError(f"input file {path} is not a readable media file: {why}")
    info = json.loads(proc.stdout or "{}")
    kinds = {s.get("codec_type") for s in info.get("streams", [])}
    if "video" not in kinds:
        raise SourceError(f"input file {path} has no video stream")
    try:
        duration: float | None = float(info.get("format", {}).get("duration"))
    except (TypeError, ValueError):
        duration = None
    return {k for k in kinds if k in ("video", "audio")}, duration


def _file(path: Path, epoch_locked: bool = False) -> Source:
    kinds, duration = _probe(path)
    silence: tuple[str, ...] = ()
    audio = "0:a:0"
    if "audio" not in kinds:
        # the ladder always has an audio rendition: give silent files a silent track
        silence = ("-f", "lavfi", "-i", "anullsrc=channel_layout=stereo:sample_rate=48000")
        audio = "1:a:0"
    if epoch_locked:
        if not duration or duration < 1.0:
            raise SourceError(f"input file {path}: redundant origins play a file out on the epoch, "
                              "which needs a known duration of at least 1 s")
        playout = FilePlayout(path=path, duration=round(duration, 6), extra_inputs=silence)
        return Source(kind="file", input_args=(), video="0:v:0", audio=audio, epoch_locked=True, playout=playout)
    args: tuple[str, ...] = ("-stream_loop", "-1", "-re", "-i", str(path), *silence)
    return Source(kind="file", input_args=args, video="0:v:0", audio=audio)


def _rtmp(url: str, internal_port: int) -> Source:
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if len(path) != 2:
        raise SourceError("rtmp input must look like rtmp://0.0.0.0:1935/<app>/<stream-key>")
    app, key = path
    port = 1935 if parts.port is None else parts.port
    inner = f"rtmp://127.0.0.1:{internal_port}/{app}/{key}"
    return Source(
        kind="rtmp",
        # -timeout -1: wait for a publisher forever (the supervisor restarts us after each one)
        input_args=("-listen", "1", "-timeout", "-1", "-i", inner),
        video="0:v:0",
        audio="0:a:0",
        secrets=(key,),
        listen=(parts.hostname or "0.0.0.0", port),
        rtmp_app=app,
        rtmp_key=key,
        internal_port=internal_port,
    )


def _srt(url: str, passphrase: str | None) -> Source:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    if query.get("mode", "listener") != "listener":
        raise SourceError("srt input must be a listener: srt://0.0.0.0:9000?mode=listener")
    if "passphrase" in query:
        raise SourceError("put the SRT passphrase in ingest.srt_passphrase, not in the URL")
    host, port = parts.hostname or "0.0.0.0", parts.port or 9000
    inner = f"srt://{host}:{port}?mode=listener"
    secrets: tuple[str, ...] = ()
    if passphrase:
        inner += f"&passphrase={passphrase}&pbkeylen={SRT_PBKEYLEN}"
        secrets = (passphrase,)
    return Source(
        kind="srt",
        input_args=("-f", "mpegts", "-i", inner),
        video="0:v:0",
        audio="0:a:0",
        secrets=secrets,
        listen=(host, port),
    )


def _whip(internal_port: int) -> Source:
    return Source(
        kind="whip",
        # NUT carries its stream headers: nothing to probe, so the first frame goes straight in
        input_args=(
            "-fflags", "nobuffer", "-probesize", "32", "-analyzeduration", "0",
            "-f", "nut", "-i", f"tcp://127.0.0.1:{internal_port}?listen=1",
        ),
        video="0:v:0",
        audio="0:a:0",
        internal_port=internal_port,
    )


def resolve_source(ingest: IngestConfig, *, rtmp_internal_port: int = 19350, epoch_locked: bool = False) -> Source:
    """Describe the configured input; files are probed now so errors come before the pipeline.

    `rtmp_internal_port`: the loopback port FFmpeg listens on behind our RTMP front or WHIP feed.
    `epoch_locked`: timestamps on the UNIX epoch, for redundant origins (transcode.epoch)."""
    spec = ingest.input
    if spec == "testsrc":
        return _testsrc(epoch_locked)
    if spec == "whip":
        source = _whip(rtmp_internal_port)
        clock: epoch.InputClock = "arrival"
    elif spec.startswith("rtmp://"):
        source, clock = _rtmp(spec, rtmp_internal_port), "flv"
    elif spec.startswith("srt://"):
        source, clock = _srt(spec, ingest.srt_passphrase), "mpegts"
    elif re.match(r"^[a-z][a-z0-9+.-]*://", spec):
        raise SourceError(f"unsupported input {spec.split('://')[0]}://; use testsrc, whip, a file, rtmp:// or srt://")
    else:
        return _file(Path(spec), epoch_locked)
    return _locked(source, clock) if epoch_locked else source


# ---- explaining refusals FFmpeg itself does not log --------------------------------------

_SRT_REJECT = re.compile(r"connection rejected due to: .*?ERROR:(\w+)")
_SRT_REASONS = {
    "BADSECRET": "wrong passphrase",
    "UNSECURE": "passphrase missing on one side (encryption is enforced)",
}


def ingest_refusal(line: str) -> str | None:
    """A log sentence if this FFmpeg/libsrt stderr line says a publisher was refused."""
    m = _SRT_REJECT.search(line)
    if m:
        code = m.group(1)
        return f"SRT publish refused: {_SRT_REASONS.get(code, 'rejected by libsrt')} (libsrt {code})"
    return None
