"""The one FFmpeg process: input -> filter graph (split, fps, scale per rung) -> one CMAF output per track.

Each rung and the audio rendition is its own fragmented-MP4 output with a single track
(CMAF: one track per file), written to its own pipe file descriptor so the packager reads
each track incrementally. `frag_every_frame` + `flush_packets` make every access unit a
moof+mdat as soon as it is encoded; the packager groups them into parts and segments.
Progress (`frame=`, `fps=`, `speed=`) is written key=value to a separate descriptor.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from flowcast.config import FlowcastConfig
from flowcast.transcode.encoders import video_options
from flowcast.transcode.sources import Source

AUDIO_OUTPUT = "audio"
CMAF_MOVFLAGS = "empty_moov+default_base_moof+frag_every_frame"
VIDEO_TIMESCALE = 90000  # the MPEG-TS / RTP clock: every common frame rate is exact in it


def output_names(config: FlowcastConfig) -> list[str]:
    """Names of the outputs `build_command` expects descriptors for: rungs, then "audio"."""
    return [r.name for r in config.ladder.rungs] + [AUDIO_OUTPUT]


def filter_graph(config: FlowcastConfig, source: Source) -> str:
    rungs = config.ladder.rungs
    head = f"[{source.video}]"
    if source.video_filter:
        head += source.video_filter + ","
    head += f"split={len(rungs)}" + "".join(f"[s{i}]" for i in range(len(rungs)))
    chains = [head]
    for i, rung in enumerate(rungs):
        # fps before scale: frames dropped for a lower rate are never scaled
        chains.append(
            f"[s{i}]fps={rung.fps:g},scale={rung.width}:{rung.height}:flags=bicubic,setsar=1[v{i}]"
        )
    return ";".join(chains)


def _cmaf_output(fd: int) -> list[str]:
    return ["-f", "mp4", "-movflags", CMAF_MOVFLAGS, "-flush_packets", "1", f"pipe:{fd}"]


def build_command(
    config: FlowcastConfig,
    outputs: Mapping[str, int],
    *,
    source: Source,
    progress_fd: int | None = None,
    ffmpeg: str = "ffmpeg",
) -> list[str]:
    """The ffmpeg argv. `outputs` maps every name of `output_names(config)` to a descriptor."""
    missing = [n for n in output_names(config) if n not in outputs]
    if missing:
        raise ValueError(f"no descriptor for outputs {missing}")
    mode = config.packaging.mode
    seg = config.packaging.segment_s
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning"]
    if progress_fd is not None:
        cmd += ["-nostats", "-progress", f"pipe:{progress_fd}", "-stats_period", "1"]
    cmd += list(source.input_args)
    cmd += ["-filter_complex", filter_graph(config, source)]
    for i, rung in enumerate(config.ladder.rungs):
        cmd += ["-map", f"[v{i}]"]
        cmd += video_options(config.encoder, rung, mode=mode, segment_s=seg)
        cmd += ["-video_track_timescale", str(VIDEO_TIMESCALE)]
        cmd += _cmaf_output(outputs[rung.name])
    audio = config.ladder.audio
    cmd += ["-map", source.audio, "-c:a", "aac", "-b:a", f"{audio.bitrate_kbps}k"]
    cmd += ["-ac", str(audio.channels), "-ar", str(audio.sample_rate)]
    cmd += _cmaf_output(outputs[AUDIO_OUTPUT])
    return cmd


def loggable(cmd: list[str], source: Source) -> str:
    """The command line for logs, with stream keys and passphrases masked."""
    return source.mask(shlex.join(cmd))
