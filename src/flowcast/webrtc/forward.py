"""Fan-out of the encoded WebRTC rendition: every packet to every viewer, no re-encoding.

Each viewer gets its own pair of tracks (aiortc's sender pulls one track from one
`recv()` loop), fed from a bounded queue. aiortc 1.16's RTCRtpSender packs an `av.Packet`
returned by `recv()` with the codec's `pack()` (H.264: Annex B split + FU-A, Opus: as is),
so the same packet object goes to every viewer.

A video track starts at the first keyframe after the peer is connected (the encoder's
short GOP bounds the wait; aiortc does not turn a PLI into a keyframe for pre-encoded
packets, and one encoder serves every viewer). A viewer that cannot keep up
(its queue is full: a slow network, a stalled peer) loses the frames queued for it and
resumes at the next keyframe, so one slow viewer never holds packets for the others or
grows memory; the frames it lost are counted.
"""

from __future__ import annotations

import asyncio

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from flowcast.webrtc.source import Kind

# A viewer more than ~1 s behind is better served from the next keyframe than late.
VIDEO_QUEUE = 30  # frames: 1 s at 30 fps
AUDIO_QUEUE = 50  # 20 ms packets: 1 s


class PacketTrack(MediaStreamTrack):
    """One viewer's video or audio track: encoded packets from the fan-out, in order."""

    def __init__(self, kind: Kind, maxsize: int) -> None:
        super().__init__()
        self.kind = kind
        self._queue: asyncio.Queue[av.Packet | None] = asyncio.Queue(maxsize)
        self._synced = kind == "audio"  # video waits for a keyframe
        # Nothing is queued before aiortc's sender first asks (DTLS is up by then): frames
        # queued while ICE connects would reach the viewer late and make its jitter buffer
        # start with that delay.
        self._pulling = False
        self._resyncing = False
        self.frames_sent = 0
        self.frames_dropped = 0

    def push(self, packet: av.Packet, keyframe: bool) -> None:
        if self.readyState != "live" or not self._pulling:
            return
        if not self._synced:
            if not keyframe:
                self.frames_dropped += self._resyncing  # lost to an overflow, not a late join
                return
            self._synced = True
            self._resyncing = False
        if self._queue.full():
            # Behind by the whole queue: drop what is queued and start again at a keyframe.
            n = self._queue.qsize()
            while not self._queue.empty():
                self._queue.get_nowait()
            self.frames_dropped += n
            self._synced = self.kind == "audio" or keyframe
            if not self._synced:
                self.frames_dropped += 1
                self._resyncing = True
                return
        self._queue.put_nowait(packet)

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        self._pulling = True
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        self.frames_sent += 1
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            try:
                self._queue.put_nowait(None)
            except asyncio.QueueFull:
                self._queue.get_nowait()
                self._queue.put_nowait(None)


class Fanout:
    """Publishes each encoded packet to every subscribed viewer's tracks."""

    def __init__(self) -> None:
        self._video: set[PacketTrack] = set()
        self._audio: set[PacketTrack] = set()
        self.packets = {"video": 0, "audio": 0}
        self.last_keyframe_at: float | None = None

    def subscribe(self) -> tuple[PacketTrack, PacketTrack]:
        video, audio = PacketTrack("video", VIDEO_QUEUE), PacketTrack("audio", AUDIO_QUEUE)
        self._video.add(video)
        self._audio.add(audio)
        return video, audio

    def unsubscribe(self, *tracks: PacketTrack) -> None:
        for t in tracks:
            self._video.discard(t)
            self._audio.discard(t)
            t.stop()

    @property
    def viewers(self) -> int:
        return len(self._video)

    def publish(self, kind: Kind, packet: av.Packet, keyframe: bool) -> None:
        self.packets[kind] += 1
        if kind == "video" and keyframe:
            self.last_keyframe_at = asyncio.get_running_loop().time()
        for track in tuple(self._video if kind == "video" else self._audio):
            track.push(packet, keyframe)
