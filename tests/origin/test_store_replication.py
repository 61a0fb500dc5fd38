"""Store replication for origin workers: the journal, the snapshot and the frames that carry them."""

from __future__ import annotations

import asyncio
import marshal

import pytest

from flowcast.origin.store import Growing, MediaStore, StoredObject
from flowcast.origin.wire import MAX_FRAME, FrameError, FrameReader, frame
from origin_http import publish


def _state(store: MediaStore) -> dict[str, object]:
    """What a viewer could observe: objects (bytes), growing segments, playlists, hints."""
    out: dict[str, object] = {}
    for path in sorted({*store._objects, *store._growing, *store._playlists, *store._expected}):
        obj = store.get(path)
        if isinstance(obj, StoredObject):
            out[path] = ("object", obj.kind.value, obj.data, obj.gzip is not None)
        elif isinstance(obj, Growing):
            out[path] = ("growing", obj.kind.value, b"".join(obj.chunks), obj.finished)
        pl = store.playlist(path)
        if pl is not None:
            out[path] = ("playlist", pl.full, pl.delta, pl.msn, pl.part, pl.complete_msn, pl.ended, pl.part_target)
        if path in store._expected:
            out[path + "#expected"] = store._expected[path].kind.value
    return out


def _wire(entries: list[tuple]) -> list[tuple]:
    """Through the frames, fed a few bytes at a time, as a socket would deliver them."""
    data = b"".join(frame(("j", *e)) for e in entries)
    reader, out = FrameReader(), []
    for i in range(0, len(data), 7):
        out.extend(reader.feed(data[i : i + 7]))
    return [m[1:] for m in out]


def _publish_some(store: MediaStore, msn: int) -> None:
    store.put("s/v/init.mp4", b"init", "init")
    store.put_manifest("s/master.m3u8", b"#EXTM3U\n")
    store.begin(f"s/v/{msn}.m4s")
    store.append(f"s/v/{msn}.m4s", b"chunk-a")
    store.put(f"s/v/{msn}.0.m4s", b"chunk-a", "part")
    store.append(f"s/v/{msn}.m4s", b"chunk-b")
    publish(store, "s/v/index.m3u8", msn, 1)
    store.expect(f"s/v/{msn}.2.m4s", "part")


def test_replica_follows_every_publish_in_order() -> None:
    async def main() -> None:
        primary, replica = MediaStore(), MediaStore()
        journal: list[tuple] = []
        stop = primary.replicate_to(journal.append)
        _publish_some(primary, 10)
        primary.finish("s/v/10.m4s")
        primary.remove("s/v/10.0.m4s")
        publish(primary, "s/v/index.m3u8", 11, 0)
        for entry in _wire(journal):
            replica.apply(entry)
        assert _state(replica) == _state(primary)
        assert replica.playlist("s/v/index.m3u8").satisfies(11, 0)  # type: ignore[union-attr]
        assert [e[0] for e in journal][:3] == ["put", "put", "begin"]
        stop()
        n = len(journal)
        primary.put("s/v/late.m4s", b"x", "segment")
        assert len(journal) == n  # a retired worker gets nothing more

    asyncio.run(main())


def test_replica_wakes_its_own_waiters() -> None:
    """A blocking reload held in a worker is answered by the replicated publish."""

    async def main() -> None:
        primary, replica = MediaStore(), MediaStore()
        primary.replicate_to(replica.apply)
        publish(primary, "s/v/index.m3u8", 5, 0)
        held = asyncio.ensure_future(replica.wait_playlist("s/v/index.m3u8", 5, 1, 2.0))
        hinted = asyncio.ensure_future(replica.wait_object("s/v/5.1.m4s"))
        await asyncio.sleep(0.01)
        assert not held.done() and not hinted.done()
        primary.put("s/v/5.1.m4s", b"part", "part")
        publish(primary, "s/v/index.m3u8", 5, 1)
        assert (await held).part == 1
        assert (await hinted).data == b"part"  # type: ignore[union-attr]

    asyncio.run(main())


def test_snapshot_rebuilds_a_new_replica_mid_segment() -> None:
    """A worker started (or restarted) mid-stream sees the same state, growing segment
    and pending hint included, and then follows the journal."""

    async def main() -> None:
        primary = MediaStore()
        _publish_some(primary, 20)
        late = MediaStore()
        for entry in _wire(primary.snapshot()):
            late.apply(entry)
        primary.replicate_to(late.apply)
        assert _state(late) == _state(primary)
        primary.append("s/v/20.m4s", b"chunk-c")
        primary.finish("s/v/20.m4s")
        assert _state(late) == _state(primary)
        assert late.get("s/v/20.m4s").data == b"chunk-achunk-bchunk-c"  # type: ignore[union-attr]

    asyncio.run(main())


def test_a_publication_hold_reaches_replicas_and_so_do_the_withheld_publishes() -> None:
    async def main() -> None:
        primary, replica = MediaStore(), MediaStore()
        journal: list[tuple] = []
        primary.replicate_to(journal.append)
        primary.replicate_to(replica.apply)
        publish(primary, "s/v/index.m3u8", 1, 0)
        primary.hold_publication(5)
        assert replica.publication_held  # hints and early requests wait in the worker too
        publish(primary, "s/v/index.m3u8", 1, 1)
        primary.put("s/v/1.1.m4s", b"p", "part")
        assert replica.get("s/v/1.1.m4s") is None and replica.playlist("s/v/index.m3u8").part == 0  # type: ignore[union-attr]
        n = len(journal)
        assert primary.release_publication() == 2
        assert [e[0] for e in journal[n:]] == ["release_publication", "put_playlist", "put"]
        assert not replica.publication_held
        assert _state(replica) == _state(primary)

    asyncio.run(main())


def test_frames_refuse_what_no_peer_sends() -> None:
    with pytest.raises(FrameError):
        FrameReader().feed((MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(FrameError):
        FrameReader().feed(len(b"\xff\xff").to_bytes(4, "big") + b"\xff\xff")
    not_a_tuple = marshal.dumps([1, 2])
    with pytest.raises(FrameError):
        FrameReader().feed(len(not_a_tuple).to_bytes(4, "big") + not_a_tuple)
    with pytest.raises(ValueError):
        frame((object(),))  # marshal carries plain values only
    with pytest.raises(ValueError, match="unknown journal entry"):
        asyncio.run(_apply(("exec", "x")))


async def _apply(entry: tuple) -> None:
    MediaStore().apply(entry)
