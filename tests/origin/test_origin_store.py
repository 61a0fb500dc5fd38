"""MediaStore without HTTP: publish/wait semantics."""

from __future__ import annotations

import asyncio

import pytest

from flowcast.origin.store import MediaStore, PlaylistGone, ResourceKind, WaitTimeout
from origin_http import publish


def run(coro):
    return asyncio.run(coro)


def test_satisfies_is_lexicographic_with_part_past_end_rule():
    async def main():
        store = MediaStore()
        publish(store, "s/v/p.m3u8", 10, 3)
        pl = store.playlist("s/v/p.m3u8")
        assert pl.satisfies(9, None)
        assert not pl.satisfies(10, None)  # in progress: msn-only waits for the whole segment
        assert pl.satisfies(10, 3)
        assert pl.satisfies(9, 7)  # a part index past the end of 9 is part 0 of 10: present
        assert not pl.satisfies(10, 4)  # past the last part of 10 -> part 0 of 11: absent
        assert not pl.satisfies(11, None)
        assert not pl.satisfies(11, 0)

    run(main())


def test_playlist_waiters_woken_only_when_satisfied():
    async def main():
        store = MediaStore()
        publish(store, "s/v/p.m3u8", 10, 3)
        early = asyncio.ensure_future(store.wait_playlist("s/v/p.m3u8", 10, 4, 5))
        later = asyncio.ensure_future(store.wait_playlist("s/v/p.m3u8", 11, 1, 5))
        await asyncio.sleep(0.01)
        assert not early.done() and not later.done()
        publish(store, "s/v/p.m3u8", 11, 0)  # part 4 of 10 does not exist: 10 ended at 3
        await asyncio.sleep(0)
        assert early.done() and early.result().msn == 11
        assert not later.done()
        publish(store, "s/v/p.m3u8", 11, 1)
        assert (await later).part == 1

    run(main())


def test_ended_releases_all_and_removal_reports_gone():
    async def main():
        store = MediaStore()
        publish(store, "s/v/p.m3u8", 1, 0)
        w = asyncio.ensure_future(store.wait_playlist("s/v/p.m3u8", 3, None, 5))
        await asyncio.sleep(0)
        publish(store, "s/v/p.m3u8", 1, 1, ended=True)
        assert (await w).ended
        publish(store, "s/a/p.m3u8", 1, 0)
        g = asyncio.ensure_future(store.wait_playlist("s/a/p.m3u8", 2, None, 5))
        await asyncio.sleep(0)
        store.remove("s/a/p.m3u8")
        with pytest.raises(PlaylistGone):
            await g

    run(main())


def test_wait_playlist_times_out():
    async def main():
        store = MediaStore()
        publish(store, "s/v/p.m3u8", 1, 0)
        with pytest.raises(WaitTimeout):
            await store.wait_playlist("s/v/p.m3u8", 2, None, 0.05)
        with pytest.raises(KeyError):
            await store.wait_playlist("nope.m3u8", 2, None, 0.05)

    run(main())


def test_position_must_not_go_back():
    async def main():
        store = MediaStore()
        publish(store, "s/v/p.m3u8", 5, 2)
        with pytest.raises(ValueError):
            publish(store, "s/v/p.m3u8", 5, 1)

    run(main())


def test_object_hold_only_when_expected_and_bounded():
    async def main():
        store = MediaStore(hold_timeout=0.05)
        with pytest.raises(KeyError):
            await store.wait_object("s/v/part1.m4s")  # not announced: never held
        store.expect("s/v/part1.m4s", ResourceKind.PART, hold=1.0)
        w = asyncio.ensure_future(store.wait_object("s/v/part1.m4s"))
        await asyncio.sleep(0.01)
        assert not w.done()
        store.put("s/v/part1.m4s", b"moofmdat", ResourceKind.PART)
        assert (await w).data == b"moofmdat"
        store.expect("s/v/part2.m4s", ResourceKind.PART)  # store default bound: 50 ms
        with pytest.raises(WaitTimeout):
            await store.wait_object("s/v/part2.m4s")
        assert store.hold_bound("s/v/part2.m4s") is None  # expired, and no live playlist in s/v
        assert not store._object_holds  # no leftover waiter state

    run(main())


def test_growing_object_chunks_then_complete():
    async def main():
        store = MediaStore()
        store.begin("s/v/seg5.m4s")
        store.append("s/v/seg5.m4s", b"a")
        g = store.get("s/v/seg5.m4s")
        assert await g.chunks_from(0) == ([b"a"], False)
        pending = asyncio.ensure_future(g.chunks_from(1))
        await asyncio.sleep(0.01)
        assert not pending.done()
        store.append("s/v/seg5.m4s", b"b")
        assert await pending == ([b"b"], False)
        store.finish("s/v/seg5.m4s")
        assert await g.chunks_from(2) == ([], True)
        obj = store.get("s/v/seg5.m4s")
        assert obj.data == b"ab" and obj.kind is ResourceKind.SEGMENT

    run(main())


def test_one_publish_wakes_ten_thousand_waiters_through_one_hold():
    async def main():
        store = MediaStore()
        publish(store, "s/v/p.m3u8", 1, 0)
        waiters = [asyncio.ensure_future(store.wait_playlist("s/v/p.m3u8", 1, 1, 5)) for _ in range(10_000)]
        await asyncio.sleep(0)
        holds = store._playlist_waiters["s/v/p.m3u8"].holds
        assert len(holds) == 1 and len(next(iter(holds.values()))) == 10_000  # one hold, shared
        publish(store, "s/v/p.m3u8", 1, 1)
        results = await asyncio.gather(*waiters)
        assert all(r.part == 1 for r in results)
        assert "s/v/p.m3u8" not in store._playlist_waiters

    run(main())


def test_gzip_done_once_at_publish():
    async def main():
        import gzip

        store = MediaStore()
        publish(store, "s/v/p.m3u8", 1, 0)
        pl = store.playlist("s/v/p.m3u8")
        assert gzip.decompress(pl.full_gzip) == pl.full
        assert gzip.decompress(pl.delta_gzip) == pl.delta
        store.put_manifest("s/master.m3u8", b"#EXTM3U\n")
        assert gzip.decompress(store.get("s/master.m3u8").gzip) == b"#EXTM3U\n"

    run(main())


def test_msn_only_waits_for_a_complete_segment():
    async def main():
        store = MediaStore()
        publish(store, "s/v/p.m3u8", 10, 2)  # LL playlist: segment 10 in progress
        pl = store.playlist("s/v/p.m3u8")
        assert pl.complete_msn == 9 and pl.satisfies(9, None) and not pl.satisfies(10, None)
        w = asyncio.ensure_future(store.wait_playlist("s/v/p.m3u8", 10, None, 5))
        await asyncio.sleep(0)
        publish(store, "s/v/p.m3u8", 10, 3)
        await asyncio.sleep(0)
        assert not w.done()
        store.put_playlist("s/v/p.m3u8", full=b"x", delta=None, msn=10, part=3, target_duration=1,
                           part_target=0.25, ended=False, complete_msn=10)
        assert (await w).complete_msn == 10
        # no parts: every listed segment is complete
        store.put_playlist("s/b/p.m3u8", full=b"x", delta=None, msn=4, part=0, target_duration=6,
                           part_target=None, ended=False)
        assert store.playlist("s/b/p.m3u8").satisfies(4, None)

    run(main())


def test_media_names_in_a_live_rendition_are_held_briefly_without_expect():
    async def main():
        store = MediaStore()
        publish(store, "s/v/p.m3u8", 3, 1, pt=0.05)  # bound: 3 part targets = 150 ms
        w = asyncio.ensure_future(store.wait_object("s/v/3.2.m4s"))
        await asyncio.sleep(0.01)
        store.put("s/v/3.2.m4s", b"part", "part")  # publishers may pass kind strings
        assert (await w).kind is ResourceKind.PART
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(WaitTimeout):
            await store.wait_object("s/v/99.0.m4s")
        assert 0.14 < loop.time() - t0 < 0.5
        with pytest.raises(KeyError):
            await store.wait_object("s/v/notes.txt")  # not a media name
        with pytest.raises(KeyError):
            await store.wait_object("s/other/3.2.m4s")  # no live playlist there
        publish(store, "s/v/p.m3u8", 3, 2, pt=0.05, ended=True)
        with pytest.raises(KeyError):
            await store.wait_object("s/v/4.0.m4s")  # ended: nothing more will come
        capped = MediaStore(max_speculative_holds=1)
        publish(capped, "s/v/p.m3u8", 1, 0, pt=0.05)
        first = asyncio.ensure_future(capped.wait_object("s/v/a.m4s"))
        await asyncio.sleep(0)
        with pytest.raises(KeyError):
            await capped.wait_object("s/v/b.m4s")  # over the cap: 404 at once
        with pytest.raises(WaitTimeout):
            await first

    run(main())


def _parker(store: MediaStore, path: str, msn: int, part: int | None, timeout: float = 5.0) -> asyncio.Future:
    """A future for what a parked waiter is called back with: (playlist, None) or (None, exc)."""
    fut = asyncio.get_running_loop().create_future()
    store.park_playlist(path, msn, part, timeout, lambda pl, exc: fut.set_result((pl, exc)))
    return fut


def test_parked_waiters_called_back_when_satisfied_beside_futures_on_one_hold():
    async def main():
        store = MediaStore()
        publish(store, "s/v/p.m3u8", 10, 3)
        parked = [_parker(store, "s/v/p.m3u8", 10, 4) for _ in range(500)]
        awaited = asyncio.ensure_future(store.wait_playlist("s/v/p.m3u8", 10, 4, 5))
        later = _parker(store, "s/v/p.m3u8", 11, 1)
        await asyncio.sleep(0.01)
        holds = store._playlist_waiters["s/v/p.m3u8"].holds
        assert len(holds[(10, 4)]) == 501  # parked and awaited share the target's hold
        assert not any(f.done() for f in parked) and not later.done()
        publish(store, "s/v/p.m3u8", 11, 0)
        assert not parked[0].done()  # called back from the loop, never inside the publish
        await asyncio.sleep(0)
        assert all(f.done() and f.result()[0].msn == 11 and f.result()[1] is None for f in parked)
        assert (await awaited).msn == 11
        assert not later.done()
        publish(store, "s/v/p.m3u8", 11, 1)
        pl, exc = await later
        assert exc is None and (pl.msn, pl.part) == (11, 1)
        assert "s/v/p.m3u8" not in store._playlist_waiters

    run(main())


def test_parked_waiter_timeout_gone_missing_and_shutdown():
    async def main():
        store = MediaStore()
        publish(store, "s/v/p.m3u8", 1, 0)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        pl, exc = await _parker(store, "s/v/p.m3u8", 2, None, timeout=0.05)
        assert pl is None and isinstance(exc, WaitTimeout) and loop.time() - t0 >= 0.05
        pl, exc = await _parker(store, "nope.m3u8", 2, None)
        assert pl is None and isinstance(exc, KeyError)
        gone = _parker(store, "s/v/p.m3u8", 3, None)
        await asyncio.sleep(0)
        store.remove("s/v/p.m3u8")
        pl, exc = await gone
        assert pl is None and isinstance(exc, PlaylistGone)
        publish(store, "s/a/p.m3u8", 1, 0)
        ended = _parker(store, "s/a/p.m3u8", 5, None)
        await asyncio.sleep(0)
        publish(store, "s/a/p.m3u8", 1, 1, ended=True)  # directives are moot after ENDLIST
        pl, exc = await ended
        assert exc is None and pl.ended
        publish(store, "s/b/p.m3u8", 1, 0)
        held = _parker(store, "s/b/p.m3u8", 2, None)
        await asyncio.sleep(0)
        store.end_playlist_waits()
        pl, exc = await held
        assert pl is None and isinstance(exc, WaitTimeout)
        pl, exc = await _parker(store, "s/b/p.m3u8", 2, None)  # and every later one at once
        assert isinstance(exc, WaitTimeout)

    run(main())


def test_a_failing_parked_callback_does_not_cost_the_others_their_answer(caplog):
    async def main():
        store = MediaStore()
        publish(store, "s/v/p.m3u8", 1, 0)
        got = []

        def broken(pl, exc):
            raise RuntimeError("broken waiter")

        store.park_playlist("s/v/p.m3u8", 1, 1, 5, lambda pl, exc: got.append(pl.part))
        store.park_playlist("s/v/p.m3u8", 1, 1, 5, broken)
        store.park_playlist("s/v/p.m3u8", 1, 1, 5, lambda pl, exc: got.append(pl.part))
        publish(store, "s/v/p.m3u8", 1, 1)
        await asyncio.sleep(0)
        assert got == [1, 1]

    run(main())
    assert "parked waiter failed" in caplog.text
