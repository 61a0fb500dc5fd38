"""In-memory media store with publish/wait: the only state the origin serves from.

No HTTP here. The packager publishes pre-built bytes (objects, growing CMAF segments,
playlists rendered once per publish) and requests wait on asyncio primitives that a
single publish wakes:

- objects: one hold (``_Hold``) per waited-on path, released by its publish;
- growing segments: one pulse per segment, fired on each appended chunk;
- playlists: one hold per distinct ``(msn, part)`` target, kept in a heap, so a publish
  wakes exactly the waiters it satisfies (thousands of viewers waiting for the same next
  part share one hold) and nobody polls.

A hold is a list of futures with one timer for all of them (their deadlines come in the
order they arrived): a held request costs a future and a list entry, not an Event waiter
plus a timer and a timeout context of its own (docs/benchmarks.md, fan-out).

Everything runs on one event loop (the packager's); the methods are not thread-safe.

Replication: ``replicate_to(send)`` hands every applied publish to ``send`` as a journal
entry (a tuple of plain values), and ``snapshot()`` gives the entries that rebuild the
current state; ``apply(entry)`` replays one on another store. Origin worker processes
(origin/workers.py) serve from such replicas.

Chaos: ``hold_publication(seconds)`` withholds every publish (parts, segments, playlists,
manifests, removals, hints) for that long, then applies them all at once, in order, so
players see the origin stall exactly as if the packager had stopped (origin/chaos.py).
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import gzip
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate

__all__ = [
    "Growing",
    "JournalEntry",
    "MediaStore",
    "Playlist",
    "PlaylistGone",
    "ResourceKind",
    "StoredObject",
    "WaitTimeout",
]

log = logging.getLogger(__name__)


class ResourceKind(str, enum.Enum):
    """What a stored path holds; drives Content-Type, Cache-Control and metrics labels.

    A ``str`` enum: publishers may pass ``"init"``, ``"part"``, ``"segment"`` too.
    """

    INIT = "init"
    PART = "part"
    SEGMENT = "segment"
    PLAYLIST = "playlist"  # an HLS media playlist (blocking reload applies)
    MANIFEST = "manifest"  # multivariant playlist or DASH MPD


class WaitTimeout(Exception):
    """A held request was not satisfied within its bound."""


class PlaylistGone(Exception):
    """The playlist a request was waiting on was removed (stream stopped)."""


# gzip level 6 once per publish: playlists are a few KB, this costs ~0.1 ms and saves
# 70-85 % of the bytes on every one of the many responses that follow.
_GZIP_LEVEL = 6

_versions = itertools.count(1)

# One applied publish, as plain values (str, bytes, numbers, bool, None): the method name,
# the path, then that method's arguments (MediaStore.apply). The hold entries carry their
# number of seconds (or None) in the path position.
JournalEntry = tuple


def _gzip(data: bytes) -> bytes:
    # mtime=0 keeps the output a pure function of the input (stable ETags, CDN dedupe).
    return gzip.compress(data, compresslevel=_GZIP_LEVEL, mtime=0)


def _http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


@dataclass(frozen=True, slots=True)
class StoredObject:
    """A complete, immutable object: init, part, segment or manifest."""

    data: bytes
    kind: ResourceKind
    gzip: bytes | None  # pre-compressed once, for text (manifests) only
    etag: str
    last_modified: str
    # The origin app's responses for this object, built on first use (origin/app.py):
    # the object never changes, so neither do they.
    memo: dict[object, object] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Playlist:
    """One publish of an HLS media playlist: both renderings, pre-compressed.

    ``msn``/``part`` are the position of the newest media in the playlist, with the
    meaning of EXT-X-RENDITION-REPORT LAST-MSN / LAST-PART: the Media Sequence Number of
    the last (possibly still partial) segment and the index of its last part (for a
    playlist without parts, the last segment and any part value, e.g. 0).
    ``complete_msn`` is the last segment that is complete (has its EXTINF).
    """

    full: bytes
    full_gzip: bytes
    delta: bytes | None
    delta_gzip: bytes | None
    msn: int
    part: int
    target_duration: float
    part_target: float | None
    ended: bool
    etag: str
    last_modified: str
    complete_msn: int
    memo: dict[object, object] = field(default_factory=dict, compare=False, repr=False)  # as StoredObject's

    def satisfies(self, msn: int, part: int | None) -> bool:
        """True when segment ``msn`` (or part ``part`` of it) is in this playlist (6.2.5.2).

        With a part, lexicographic order on (msn, part) is exactly the rule: a part index
        past the last part of segment M means part 0 of M+1, and that part exists iff the
        playlist has moved on to M+1, i.e. ``self.msn > msn``. Without one, the request
        is for a Media Segment, so segment M must be complete: a client that is not
        part-aware then gets a new segment, never an unchanged list (which would make it
        re-ask at once, in a loop).
        """
        if part is None:
            return msn <= self.complete_msn
        return (msn, part) <= (self.msn, self.part)


class _Hold:
    """Waiters for one publish, each with a deadline; one timer for all of them.

    ``add(deadline)`` gives a future that ``release()`` resolves, or that raises
    WaitTimeout once its deadline passes first. ``park(deadline, callback)`` is the same
    without a future: ``callback(None)`` on release, ``callback(WaitTimeout)`` at the
    deadline, all of one release's callbacks from one loop callback (a publish wakes
    thousands of parked blocking reloads, and a future plus a step per waiter was most of
    what each cost). Deadlines mostly arrive in order (one timeout per playlist), so
    expiry pops from the front and re-arms the one timer.
    """

    __slots__ = ("_loop", "_entries", "_timer", "path")

    def __init__(self, loop: asyncio.AbstractEventLoop, path: str) -> None:
        self._loop = loop
        # (deadline, future, None) or (deadline, None, callback)
        self._entries: deque[tuple[float, asyncio.Future[None] | None, Parked | None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self.path = path

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, deadline: float) -> asyncio.Future[None]:
        fut = self._loop.create_future()
        self._insert((deadline, fut, None))
        return fut

    def park(self, deadline: float, callback: Parked) -> None:
        self._insert((deadline, None, callback))

    def _insert(self, entry: tuple[float, asyncio.Future[None] | None, Parked | None]) -> None:
        entries = self._entries
        deadline = entry[0]
        if entries and deadline < entries[-1][0]:
            bisect.insort(entries, entry, key=lambda e: e[0])
            if entries[0] is entry and self._timer is not None:
                self._timer.cancel()
                self._timer = None
        else:
            entries.append(entry)
        if self._timer is None:
            self._timer = self._loop.call_at(entries[0][0], self._expire)

    def release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        parked = []
        for _, fut, callback in self._entries:
            if fut is None:
                parked.append(callback)
            elif not fut.done():
                fut.set_result(None)
        self._entries.clear()
        if parked:
            self._loop.call_soon(_wake_parked, parked, None)

    def _expire(self) -> None:
        self._timer = None
        entries = self._entries
        now = self._loop.time()
        parked = []
        while entries and entries[0][0] <= now:
            _, fut, callback = entries.popleft()
            if fut is None:
                parked.append(callback)
            elif not fut.done():
                fut.set_exception(WaitTimeout(self.path))
        if entries:
            self._timer = self._loop.call_at(entries[0][0], self._expire)
        if parked:
            _wake_parked(parked, WaitTimeout(self.path))


Parked = Callable[[BaseException | None], None]
"""A parked waiter: called with None once released, or with the exception that ends its wait."""


def _wake_parked(parked: list[Parked], exc: BaseException | None) -> None:
    for callback in parked:
        try:
            callback(exc)
        except Exception:  # noqa: BLE001 - one waiter's failure must not cost the others theirs
            log.exception("parked waiter failed")


class _ParkedPlaylistWait:
    """One parked blocking reload, as the hold's callback: one object, where a closure
    was a function and a cell per name (thousands are parked at once, and each one the
    collector has to walk)."""

    __slots__ = ("store", "loop", "path", "msn", "part", "deadline", "callback")

    def __init__(self, store: MediaStore, loop: asyncio.AbstractEventLoop, path: str, msn: int, part: int | None,
                 deadline: float, callback: Callable[[Playlist | None, BaseException | None], None]) -> None:
        self.store, self.loop, self.path, self.msn, self.part = store, loop, path, msn, part
        self.deadline, self.callback = deadline, callback

    def __call__(self, exc: BaseException | None) -> None:
        store, path = self.store, self.path
        if exc is None and store._waits_ended:
            exc = WaitTimeout(path)
        if exc is not None:
            self.callback(None, exc)
            return
        pl = store._playlists.get(path)
        if pl is None:
            self.callback(None, PlaylistGone(path))
        elif pl.ended or pl.satisfies(self.msn, self.part):
            self.callback(pl, None)
        else:  # released for a playlist since replaced by one that no longer satisfies
            store._park_playlist(self.loop, path, self.msn, self.part, self.deadline, self.callback)


class _Pulse:
    """One asyncio.Event shared by every waiter on a key; fired once, then replaced."""

    __slots__ = ("event", "waiters")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.waiters = 0


@dataclass(slots=True)
class Growing:
    """A CMAF segment still being produced (LL-DASH chunked transfer, HLS early fetch)."""

    kind: ResourceKind
    chunks: list[bytes] = field(default_factory=list)
    finished: bool = False
    aborted: bool = False
    _pulse: _Pulse = field(default_factory=_Pulse)

    def _fire(self) -> None:
        pulse, self._pulse = self._pulse, _Pulse()
        pulse.event.set()

    async def chunks_from(self, index: int) -> tuple[list[bytes], bool]:
        """Chunks from ``index`` on, waiting for at least one when there are none yet.

        Returns ``(chunks, done)``; ``done`` means no more will come.
        """
        while index >= len(self.chunks) and not (self.finished or self.aborted):
            pulse = self._pulse
            await pulse.event.wait()
        return self.chunks[index:], self.finished or self.aborted


@dataclass(slots=True)
class _Expectation:
    kind: ResourceKind
    deadline: float  # loop.time()


@dataclass(slots=True)
class _PlaylistWaiters:
    """Per-playlist waiters: one hold per distinct target, heap-ordered.

    ``parts`` holds (msn, part) targets released by the newest part position;
    ``segments`` holds msn targets released by the last complete segment.
    """

    path: str
    parts: list[tuple[int, int]] = field(default_factory=list)
    segments: list[int] = field(default_factory=list)
    holds: dict[object, _Hold] = field(default_factory=dict)

    def hold_for(self, msn: int, part: int | None) -> _Hold:
        key: object = msn if part is None else (msn, part)
        hold = self.holds.get(key)
        if hold is None:
            hold = self.holds[key] = _Hold(asyncio.get_running_loop(), self.path)
            if part is None:
                heapq.heappush(self.segments, msn)
            else:
                heapq.heappush(self.parts, (msn, part))
        return hold

    def release(self, pl: Playlist) -> None:
        holds = self.holds
        position = (pl.msn, pl.part)
        while self.parts and self.parts[0] <= position:
            holds.pop(heapq.heappop(self.parts)).release()
        while self.segments and self.segments[0] <= pl.complete_msn:
            holds.pop(heapq.heappop(self.segments)).release()

    def release_all(self) -> None:
        for hold in self.holds.values():
            hold.release()
        self.parts.clear()
        self.segments.clear()
        self.holds.clear()


@dataclass(frozen=True, slots=True)
class _DirInfo:
    """What the store knows about a rendition directory from its media playlist."""

    target_duration: float
    part_target: float | None
    ended: bool


_MEDIA_EXTENSIONS = (".m4s", ".mp4", ".m4v", ".m4a", ".cmfv", ".cmfa", ".ts", ".aac", ".vtt", ".webvtt")


class MediaStore:
    """Objects, growing segments, playlists and manifests of every stream, by path.

    Paths are relative to the stream tree: ``<stream>/<rendition>/<file>``,
    ``<stream>/master.m3u8``, ``<stream>/manifest.mpd``.

    The "may be requested early" rule (what an absent path gets):

    1. announced with :meth:`expect` (an EXT-X-PRELOAD-HINT URI, the next DASH segment):
       held until it exists or the announcement's own bound passes;
    2. otherwise, a media file name (``.m4s``, ``.mp4``, ...) in a rendition directory
       whose media playlist is live (published, not ended): held for at most 3 part
       targets (6.2.6 hinted parts are due within one part target; DASH clients driven
       by the clock are early by less than that), or ``min(target duration,
       hold_timeout)`` when the playlist has no parts - and only while fewer than
       ``max_speculative_holds`` such requests are held, so random names cannot pile up;
    3. anything else: 404 at once.
    """

    def __init__(self, *, hold_timeout: float = 3.0, max_speculative_holds: int = 10_000) -> None:
        self.hold_timeout = hold_timeout
        self.max_speculative_holds = max_speculative_holds
        self._speculative = 0
        self._objects: dict[str, StoredObject] = {}
        self._growing: dict[str, Growing] = {}
        self._playlists: dict[str, Playlist] = {}
        self._expected: dict[str, _Expectation] = {}
        self._object_holds: dict[str, _Hold] = {}
        self._playlist_waiters: dict[str, _PlaylistWaiters] = {}
        self._dirs: dict[str, _DirInfo] = {}
        # Publication hold (chaos): the deferred publishes, in order, and when it ends.
        self._held: list[tuple[str, tuple[object, ...], dict[str, object]]] | None = None
        self._hold_until = 0.0
        self._hold_timer: asyncio.TimerHandle | None = None
        self._waits_ended = False  # end_playlist_waits(): the origin is shutting down
        # Replicas (origin/workers.py): each gets every publish as it is applied.
        self._replicas: list[Callable[[JournalEntry], None]] = []

    # -- replication ---------------------------------------------------------------------

    def replicate_to(self, send: Callable[[JournalEntry], None]) -> Callable[[], None]:
        """Call ``send(entry)`` with every publish from now on, in order, as it is applied
        (a publish withheld by a hold reaches replicas when the hold ends). Returns the
        function that stops it."""
        self._replicas.append(send)

        def stop() -> None:
            if send in self._replicas:
                self._replicas.remove(send)

        return stop

    def _replicate(self, entry: JournalEntry) -> None:
        for send in self._replicas:
            send(entry)

    def snapshot(self) -> list[JournalEntry]:
        """Journal entries that rebuild this store's current state on an empty one:
        objects, growing segments so far, the newest rendering of each playlist, and the
        announcements (preload hints) still pending with their remaining bound."""
        now = asyncio.get_running_loop().time()
        out: list[JournalEntry] = []
        # Media before the playlists that list it, as the packager publishes.
        for path, obj in self._objects.items():
            out.append(("put", path, obj.data, obj.kind.value))
        for path, growing in self._growing.items():
            out.append(("begin", path, growing.kind.value))
            out.extend(("append", path, chunk) for chunk in growing.chunks)
        for path, pl in self._playlists.items():
            out.append(("put_playlist", path, pl.full, pl.delta, pl.msn, pl.part, pl.target_duration,
                        pl.part_target, pl.ended, pl.complete_msn))
        for path, exp in self._expected.items():
            if exp.deadline > now:
                out.append(("expect", path, exp.kind.value, exp.deadline - now))
        if self._held is not None:
            out.append(("hold_publication", max(0.001, self._hold_until - now)))
        return out

    def apply(self, entry: JournalEntry) -> None:
        """Replay one journal entry (from ``replicate_to`` or ``snapshot``)."""
        name, path, *args = entry
        if name == "put":
            self.put(path, args[0], args[1])
        elif name == "put_playlist":
            full, delta, msn, part, td, pt, ended, complete = args
            self.put_playlist(path, full=full, delta=delta, msn=msn, part=part, target_duration=td,
                              part_target=pt, ended=ended, complete_msn=complete)
        elif name == "expect":
            self.expect(path, args[0], hold=args[1])
        elif name == "begin":
            self.begin(path, args[0])
        elif name == "append":
            self.append(path, args[0])
        elif name in ("finish", "remove"):
            getattr(self, name)(path)
        elif name == "hold_publication":
            self.hold_publication(path)
        elif name == "release_publication":
            self.release_publication()
        else:
            raise ValueError(f"unknown journal entry {name!r}")

    # -- publication hold ----------------------------------------------------------------

    def hold_publication(self, seconds: float) -> float:
        """Withhold every publish for ``seconds`` (extending a hold in progress), then
        apply them all at once. Returns the loop time the hold ends.

        Requests keep their normal rules while held: a blocking reload waits up to its 3
        target durations, and the bounds of hinted or early media requests are pushed back
        by the hold, so they wait for the release rather than 404 in the middle of it.
        """
        if not 0 < seconds <= 60:
            raise ValueError("seconds must be > 0 and <= 60")
        loop = asyncio.get_running_loop()
        now = loop.time()
        until = max(now + seconds, self._hold_until if self._held is not None else now)
        extend = until - max(now, self._hold_until if self._held is not None else now)
        if self._held is None:
            self._held = []
        for exp in self._expected.values():
            exp.deadline += extend
        self._hold_until = until
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        self._hold_timer = loop.call_at(until, self.release_publication)
        self._replicate(("hold_publication", seconds))
        return until

    @property
    def publication_held(self) -> bool:
        return self._held is not None

    def release_publication(self) -> int:
        """End a hold now: apply the withheld publishes in order. Returns how many."""
        held, self._held = self._held, None
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        if held is not None:
            self._replicate(("release_publication", None))  # before the publishes it releases
        if not held:
            return 0
        published: set[object] = set()
        applied = 0
        for i, (name, args, kwargs) in enumerate(held):
            path = args[0]
            if (
                name == "remove"
                and path in published
                and i + 1 < len(held)
                and held[i + 1][0] == "expect"
            ):
                # A preload hint withdrawn just before the next hint is announced, for a
                # part published during the hold: the packager saw the part as absent only
                # because it was held (get() hides it); it would not remove it otherwise.
                # (A window-slide removal is not followed by a new hint.)
                continue
            if name in ("put", "begin"):
                published.add(path)
            getattr(self, name)(*args, **kwargs)
            applied += 1
        return applied

    def _defer(self, name: str, path: str, *args: object, **kwargs: object) -> bool:
        """Queue a publish while a hold is on (True), or let it run now (False)."""
        if self._held is None:
            return False
        self._held.append((name, (path, *args), kwargs))
        return True

    # -- publishing ------------------------------------------------------------------

    def put(self, path: str, data: bytes, kind: ResourceKind | str) -> None:
        """Publish a complete immutable object (init, part, segment); wakes its waiters."""
        if self._defer("put", path, data, kind):
            return
        kind = ResourceKind(kind)
        if kind is ResourceKind.PLAYLIST:
            raise ValueError("use put_playlist() for media playlists")
        gz = _gzip(data) if kind is ResourceKind.MANIFEST else None
        self._objects[path] = StoredObject(
            data=data,
            kind=kind,
            gzip=gz,
            etag=f'"{next(_versions):x}"',
            last_modified=_http_date(time.time()),
        )
        growing = self._growing.pop(path, None)
        if growing is not None and not growing.finished:
            # Published whole while a growing copy existed: readers of the growing copy
            # get what it has and end; new readers get the complete object.
            growing.aborted = True
            growing._fire()
        self._expected.pop(path, None)
        self._fire_object(path)
        self._replicate(("put", path, data, kind.value))

    def put_manifest(self, path: str, data: bytes) -> None:
        """Publish master.m3u8 / manifest.mpd (gzipped once here)."""
        self.put(path, data, ResourceKind.MANIFEST)

    def remove(self, path: str) -> None:
        """Drop an object, a growing segment or a playlist (window slid, stream stopped)."""
        if self._defer("remove", path):
            return
        self._objects.pop(path, None)
        self._expected.pop(path, None)
        growing = self._growing.pop(path, None)
        if growing is not None and not growing.finished:
            growing.aborted = True
            growing._fire()
        if self._playlists.pop(path, None) is not None:
            self._dirs.pop(path.rpartition("/")[0], None)
            waiters = self._playlist_waiters.pop(path, None)
            if waiters is not None:
                waiters.release_all()
        self._fire_object(path)
        self._replicate(("remove", path))

    def expect(self, path: str, kind: ResourceKind | str, *, hold: float | None = None) -> None:
        """Announce that ``path`` is about to exist: requests for it are held until it does.

        Call it when a playlist carries ``EXT-X-PRELOAD-HINT`` for ``path`` (6.2.6), and
        for the next DASH segment when the current one begins. ``hold`` bounds the wait;
        by default 3 part targets for a part whose directory has a playlist with a
        PART-TARGET (a hinted part is due within one part target, 6.2.1), else the
        store's ``hold_timeout``. Past the bound the request is a 404.
        """
        if self._defer("expect", path, kind, hold=hold):
            return
        kind = ResourceKind(kind)
        if path in self._objects or path in self._growing:
            return
        loop = asyncio.get_running_loop()
        if hold is None:
            info = self._dirs.get(path.rpartition("/")[0])
            if kind is ResourceKind.PART and info is not None and info.part_target:
                hold = 3.0 * info.part_target
            else:
                hold = self.hold_timeout
        self._expected[path] = _Expectation(kind, loop.time() + hold)
        self._replicate(("expect", path, kind.value, hold))

    def begin(self, path: str, kind: ResourceKind | str = ResourceKind.SEGMENT) -> None:
        """Start a growing object (an in-progress CMAF segment)."""
        if self._defer("begin", path, kind):
            return
        kind = ResourceKind(kind)
        previous = self._growing.get(path)
        if previous is not None:
            # Restarted (encoder restart mid-segment): readers of the old copy end.
            previous.aborted = True
            previous._fire()
        self._objects.pop(path, None)
        self._growing[path] = Growing(kind=kind)
        self._expected.pop(path, None)
        self._fire_object(path)
        self._replicate(("begin", path, kind.value))

    def append(self, path: str, chunk: bytes) -> None:
        """Add a CMAF chunk to a growing object; wakes its readers."""
        if self._defer("append", path, chunk):
            return
        growing = self._growing[path]
        if growing.finished:
            raise ValueError(f"{path} is finished")
        if chunk:
            growing.chunks.append(chunk)
            growing._fire()
            self._replicate(("append", path, chunk))

    def finish(self, path: str) -> None:
        """Complete a growing object: it becomes an immutable object of the same path."""
        if self._defer("finish", path):
            return
        growing = self._growing.pop(path)
        growing.finished = True
        growing._fire()
        self._objects[path] = StoredObject(
            data=b"".join(growing.chunks),
            kind=growing.kind,
            gzip=None,
            etag=f'"{next(_versions):x}"',
            last_modified=_http_date(time.time()),
        )
        self._fire_object(path)
        self._replicate(("finish", path))

    def put_playlist(
        self,
        path: str,
        *,
        full: bytes,
        delta: bytes | None,
        msn: int,
        part: int,
        target_duration: float,
        part_target: float | None,
        ended: bool,
        complete_msn: int | None = None,
    ) -> None:
        """Publish one rendering of a media playlist (full and optional delta update).

        ``msn``/``part``: LAST-MSN / LAST-PART of this playlist (see :class:`Playlist`).
        ``complete_msn``: the last segment with its EXTINF; by default ``msn`` when the
        playlist has no parts (every listed segment is whole) or has ended, else
        ``msn - 1`` (conservative: an msn-only request for a segment that has just
        completed is then answered with the next part, at most one part target later).
        Wakes every blocking-reload waiter that is now satisfied, and all of them when
        the playlist has ended (directives are ignored after ENDLIST).
        """
        if self._defer(
            "put_playlist", path, full=full, delta=delta, msn=msn, part=part, target_duration=target_duration,
            part_target=part_target, ended=ended, complete_msn=complete_msn,
        ):
            return
        if complete_msn is None:
            complete_msn = msn if (ended or not part_target) else msn - 1
        previous = self._playlists.get(path)
        if previous is not None and (msn, part) < (previous.msn, previous.part):
            # 6.2.1: MEDIA-SEQUENCE must not decrease; a packager bug, not a request error.
            raise ValueError(f"{path}: position went back from {previous.msn}.{previous.part} to {msn}.{part}")
        pl = self._playlists[path] = Playlist(
            full=full,
            full_gzip=_gzip(full),
            delta=delta,
            delta_gzip=_gzip(delta) if delta is not None else None,
            msn=msn,
            part=part,
            target_duration=target_duration,
            part_target=part_target,
            ended=ended,
            etag=f'"{next(_versions):x}"',
            last_modified=_http_date(time.time()),
            complete_msn=complete_msn,
        )
        self._dirs[path.rpartition("/")[0]] = _DirInfo(target_duration, part_target, ended)
        waiters = self._playlist_waiters.get(path)
        if waiters is not None:
            if ended:
                waiters.release_all()
            else:
                waiters.release(pl)
            if not waiters.holds:
                del self._playlist_waiters[path]
        self._replicate(("put_playlist", path, full, delta, msn, part, target_duration, part_target, ended, complete_msn))

    # -- reading ---------------------------------------------------------------------

    def get(self, path: str) -> StoredObject | Growing | None:
        """The complete object or the growing segment at ``path``, if any."""
        obj = self._objects.get(path)
        if obj is not None:
            return obj
        return self._growing.get(path)

    def playlist(self, path: str) -> Playlist | None:
        return self._playlists.get(path)

    def target_duration_for(self, path: str) -> float | None:
        """Target duration of the playlist in the same directory as ``path``, if known."""
        info = self._dirs.get(path.rpartition("/")[0])
        return info.target_duration if info is not None else None

    def hold_bound(self, path: str) -> tuple[float, ResourceKind, bool] | None:
        """How long a request for absent ``path`` may be held: (deadline, kind, speculative).

        None when the "may be requested early" rule (class docstring) says 404 at once.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        exp = self._expected.get(path)
        if exp is not None:
            if now < exp.deadline:
                return exp.deadline, exp.kind, False
            del self._expected[path]
        directory, _, name = path.rpartition("/")
        info = self._dirs.get(directory)
        if (
            info is None
            or info.ended
            or not name.lower().endswith(_MEDIA_EXTENSIONS)
            or self._speculative >= self.max_speculative_holds
        ):
            return None
        held = max(0.0, self._hold_until - now) if self._held is not None else 0.0
        if info.part_target:
            return now + held + 3.0 * info.part_target, ResourceKind.PART, True
        return now + held + min(info.target_duration, self.hold_timeout), ResourceKind.SEGMENT, True

    # -- waiting ---------------------------------------------------------------------

    async def wait_object(self, path: str, timeout: float | None = None) -> StoredObject | Growing:
        """The object at ``path``, holding the caller while it may still appear.

        Raises KeyError when the hold rule says it will not (404 at once), WaitTimeout
        when the hold's bound (or ``timeout``) passes first.
        """
        obj = self.get(path)
        if obj is not None:
            return obj
        bound = self.hold_bound(path)
        if bound is None:
            raise KeyError(path)
        deadline, _, speculative = bound
        loop = asyncio.get_running_loop()
        if timeout is not None:
            deadline = min(deadline, loop.time() + timeout)
        if speculative:
            self._speculative += 1
        try:
            while True:
                if deadline <= loop.time():
                    raise WaitTimeout(path)
                hold = self._object_holds.get(path)
                if hold is None:
                    hold = self._object_holds[path] = _Hold(loop, path)
                try:
                    await hold.add(deadline)
                finally:
                    if not hold and self._object_holds.get(path) is hold:
                        del self._object_holds[path]
                obj = self.get(path)
                if obj is not None:
                    return obj
        finally:
            if speculative:
                self._speculative -= 1

    async def wait_playlist(self, path: str, msn: int, part: int | None, timeout: float) -> Playlist:
        """Hold until the playlist at ``path`` has segment ``msn`` (part ``part`` of it).

        Returns the newest playlist (the whole one, 6.2.5.2) once satisfied or ended.
        Raises KeyError if there is no such playlist, PlaylistGone if it is removed while
        waiting, WaitTimeout after ``timeout`` seconds.
        """
        pl = self._playlists.get(path)
        if pl is None:
            raise KeyError(path)
        deadline = asyncio.get_running_loop().time() + timeout
        while not (pl.ended or pl.satisfies(msn, part)):
            if self._waits_ended:
                raise WaitTimeout(path)
            waiters = self._playlist_waiters.get(path)
            if waiters is None:
                waiters = self._playlist_waiters[path] = _PlaylistWaiters(path)
            await waiters.hold_for(msn, part).add(deadline)
            if self._waits_ended:
                raise WaitTimeout(path)
            pl = self._playlists.get(path)
            if pl is None:
                raise PlaylistGone(path)
        return pl

    def park_playlist(
        self, path: str, msn: int, part: int | None, timeout: float,
        callback: Callable[[Playlist | None, BaseException | None], None],
    ) -> None:
        """``wait_playlist`` without a coroutine, for a server that can answer from a callback.

        ``callback(playlist, None)`` once satisfied (or ended), else ``callback(None, exc)``
        with the exception ``wait_playlist`` would raise. Always called later, from the loop.
        """
        loop = asyncio.get_running_loop()
        if path not in self._playlists:
            loop.call_soon(callback, None, KeyError(path))
            return
        self._park_playlist(loop, path, msn, part, loop.time() + timeout, callback)

    def _park_playlist(
        self, loop: asyncio.AbstractEventLoop, path: str, msn: int, part: int | None, deadline: float,
        callback: Callable[[Playlist | None, BaseException | None], None],
    ) -> None:
        if self._waits_ended:
            loop.call_soon(callback, None, WaitTimeout(path))
            return
        waiters = self._playlist_waiters.get(path)
        if waiters is None:
            waiters = self._playlist_waiters[path] = _PlaylistWaiters(path)
        waiters.hold_for(msn, part).park(deadline, _ParkedPlaylistWait(self, loop, path, msn, part, deadline, callback))

    def end_playlist_waits(self) -> None:
        """The server is stopping: every blocking reload held now or later times out at
        once (WaitTimeout), instead of holding the shutdown for up to 3 target durations."""
        self._waits_ended = True
        for waiters in self._playlist_waiters.values():
            waiters.release_all()
        self._playlist_waiters.clear()

    # -- internals -------------------------------------------------------------------

    def _fire_object(self, path: str) -> None:
        hold = self._object_holds.pop(path, None)
        if hold is not None:
            hold.release()
