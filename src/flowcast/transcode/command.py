"""The one FFmpeg process: input -> filter graph (split, fps, scale per rung) -> one CMAF output per track.

Each rung and the audio rendition is its own fragmented-MP4 output with a single track
(CMAF: one track per file), written to its own pipe file descriptor so the packager reads
each track incrementally. `frag_every_frame` + `flush_packets` make every access unit a
moof+mdat as soon as it is encoded; the packager groups them into parts and segments.
Progress (`frame=`, `fps=`, `speed=`) is written key=value to a separate descriptor.

Epoch-locked sources (redundant origins, transcode/epoch.py) keep their epoch timestamps
through the graph and the muxer, and the graph drops the frames before the first segment
boundary, so the forced keyframes fall on epoch multiples of the segment duration.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from flowcast.config import FlowcastConfig
from flowcast.transcode import epoch
from flowcast.transcode.encoders import video_options
from flowcast.transcode.forensic import ForensicEncode, variant_b_output
from flowcast.transcode.sources import Source

AUDIO_OUTPUT = "audio"
WEBRTC_OUTPUT = "webrtc"  # the interactive mode's H.264/Opus MPEG-TS, read by flowcast.webrtc.source
CMAF_MOVFLAGS = "empty_moov+default_base_moof+frag_every_frame"
VIDEO_TIMESCALE = 90000  # the MPEG-TS / RTP clock: every common frame rate is exact in it


def output_names(config: FlowcastConfig) -> list[str]:
    """Names of the outputs `build_command` expects descriptors for: rungs, then "audio"
    (then "webrtc" when webrtc.enabled)."""
    extra = [WEBRTC_OUTPUT] if config.webrtc.enabled else []
    forensic = config.protection.watermark.forensic
    if forensic is not None:  # the marked rung's variant B (transcode.forensic)
        extra.append(variant_b_output(forensic.rendition))
    return [r.name for r in config.ladder.rungs] + [AUDIO_OUTPUT] + extra


def _check_forensic(config: FlowcastConfig, forensic: ForensicEncode | None) -> None:
    wanted = config.protection.watermark.forensic
    if (wanted is None) != (forensic is None) or (forensic and wanted and forensic.rendition != wanted.rendition):
        raise ValueError("protection.watermark.forensic and the pattern given to the command disagree")


def audio_labels(config: FlowcastConfig, source: Source) -> list[str]:
    """What each audio output maps: the source's audio, or, when the source has an audio
    filter (its epoch clock), one split output of it per consumer (CMAF, then WebRTC)."""
    n = 2 if config.webrtc.enabled else 1
    if not source.audio_filter:
        return [source.audio] * n
    return [f"[a{i}]" for i in range(n)]


def filter_graph(config: FlowcastConfig, source: Source, forensic: ForensicEncode | None = None) -> str:
    rungs = config.ladder.rungs
    head = f"[{source.video}]"
    if source.video_filter:
        head += source.video_filter + ","
    if source.epoch_locked:
        fastest = max([r.fps for r in rungs] + ([config.webrtc.fps] if config.webrtc.enabled else []))
        head += epoch.first_boundary(config.packaging.segment_s, fastest) + ","
    webrtc = config.webrtc
    n = len(rungs) + (1 if webrtc.enabled else 0)
    head += f"split={n}" + "".join(f"[s{i}]" for i in range(n))
    chains = [head]
    if webrtc.enabled:
        chains.append(
            f"[s{len(rungs)}]fps={webrtc.fps:g},scale={webrtc.width}:{webrtc.height}:flags=bicubic,setsar=1[vw]"
        )
    for i, rung in enumerate(rungs):
        # fps before scale: frames dropped for a lower rate are never scaled
        marked = forensic is not None and rung.name == forensic.rendition
        chains.append(
            f"[s{i}]fps={rung.fps:g},scale={rung.width}:{rung.height}:flags=bicubic,setsar=1[v{i}{'m' if marked else ''}]"
        )
        if marked:  # split after scaling: A and B differ only by the mark
            assert forensic is not None
            chains.append(forensic.graph(f"v{i}m", f"v{i}", f"v{i}b"))
    if source.audio_filter:
        labels = audio_labels(config, source)
        split = f",asplit={len(labels)}" if len(labels) > 1 else ""
        chains.append(f"[{source.audio}]{source.audio_filter}{split}{''.join(labels)}")
    return ";".join(chains)


def _cmaf_output(fd: int, epoch_locked: bool = False) -> list[str]:
    if epoch_locked:
        return [*epoch.muxer_options(), "-f", "mp4", "-movflags", CMAF_MOVFLAGS + epoch.MOVFLAGS_EPOCH,
                "-flush_packets", "1", f"pipe:{fd}"]
    return ["-f", "mp4", "-movflags", CMAF_MOVFLAGS, "-flush_packets", "1", f"pipe:{fd}"]


def build_command(
    config: FlowcastConfig,
    outputs: Mapping[str, int],
    *,
    source: Source,
    progress_fd: int | None = None,
    ffmpeg: str = "ffmpeg",
    forensic: ForensicEncode | None = None,
) -> list[str]:
    """The ffmpeg argv. `outputs` maps every name of `output_names(config)` to a descriptor.

    ``forensic``: the pattern of the rung `protection.watermark.forensic` marks (required then).
    """
    _check_forensic(config, forensic)
    missing = [n for n in output_names(config) if n not in outputs]
    if missing:
        raise ValueError(f"no descriptor for outputs {missing}")
    mode = config.packaging.mode
    seg = config.packaging.segment_s
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning"]
    if progress_fd is not None:
        cmd += ["-nostats", "-progress", f"pipe:{progress_fd}", "-stats_period", "1"]
    cmd += list(source.input_args)
    cmd += ["-filter_complex", filter_graph(config, source, forensic)]
    locked = source.epoch_locked
    sync = epoch.VIDEO_SYNC if locked else []
    for i, rung in enumerate(config.ladder.rungs):
        cmd += ["-map", f"[v{i}]"]
        cmd += video_options(config.encoder, rung, mode=mode, segment_s=seg)
        cmd += ["-video_track_timescale", str(VIDEO_TIMESCALE), *sync]
        cmd += _cmaf_output(outputs[rung.name], locked)
        if forensic is not None and rung.name == forensic.rendition:
            # variant B: the very same options, so both cut at the same forced keyframes
            cmd += ["-map", f"[v{i}b]"]
            cmd += video_options(config.encoder, rung, mode=mode, segment_s=seg)
            cmd += ["-video_track_timescale", str(VIDEO_TIMESCALE), *sync]
            cmd += _cmaf_output(outputs[forensic.output_b], locked)
    audio = config.ladder.audio
    audio_in = audio_labels(config, source)
    cmd += ["-map", audio_in[0], "-c:a", "aac", "-b:a", f"{audio.bitrate_kbps}k"]
    cmd += ["-ac", str(audio.channels), "-ar", str(audio.sample_rate)]
    cmd += _cmaf_output(outputs[AUDIO_OUTPUT], locked)
    if config.webrtc.enabled:
        cmd += webrtc_output(config, source, outputs[WEBRTC_OUTPUT], audio=audio_in[-1])
    return cmd


def h264_level(width: int, height: int, fps: float) -> str:
    """The lowest H.264 level (Table A-1: MaxFS, MaxMBPS) for a WebRTC size and rate."""
    mbs = ((width + 15) // 16) * ((height + 15) // 16)
    for level, max_fs, max_mbps in (("3.0", 1620, 40500), ("3.1", 3600, 108000), ("3.2", 5120, 216000),
                                    ("4.0", 8192, 245760), ("4.2", 8704, 522240)):
        if mbs <= max_fs and mbs * fps <= max_mbps:
            return level
    return "5.1"


def webrtc_output(config: FlowcastConfig, source: Source, fd: int, *, audio: str | None = None) -> list[str]:
    """The one rendition WHEP viewers share, forwarded as encoded (no per-viewer encode).

    WebRTC's H.264 profile: constrained baseline (x264 `baseline` sets constraint_set1, so
    profile-level-id 42c0xx, which RFC 6184 counts as constrained baseline), packetization
    mode 1, no B-frames; SPS/PPS in-band before every IDR (Annex B in MPEG-TS) so a viewer
    can start at any keyframe; a short closed GOP bounds a new viewer's wait. MPEG-TS with
    the video PES length written lets the demuxer hand out each frame as soon as it is in,
    and `pes_payload_size 0` does the same for every 20 ms Opus packet. `ultrafast`: about
    half veryfast's CPU, so the encoder keeps real time on a busy machine, where a late
    frame costs more than the bits saved.
    """
    w = config.webrtc
    gop = max(1, round(w.gop_s * w.fps))
    return [
        "-map", "[vw]", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast",
        "-tune", "zerolatency", "-profile:v", "baseline", "-level:v", h264_level(w.width, w.height, w.fps),
        "-bf", "0", "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-b:v", f"{w.video_bitrate_kbps}k", "-maxrate", f"{w.video_bitrate_kbps}k",
        "-bufsize", f"{max(1, w.video_bitrate_kbps // 2)}k",
        "-map", audio or source.audio, "-c:a", "libopus", "-application", "lowdelay", "-frame_duration", "20",
        "-b:a", f"{w.audio_bitrate_kbps}k", "-ar", "48000", "-ac", "2",
        "-f", "mpegts", "-omit_video_pes_length", "0", "-pes_payload_size", "0",
        "-muxdelay", "0", "-muxpreload", "0", "-flush_packets", "1", f"pipe:{fd}",
    ]  # fmt: skip


def loggable(cmd: list[str], source: Source) -> str:
    """The command line for logs, with stream keys and passphrases masked."""
    return source.mask(shlex.join(cmd))
