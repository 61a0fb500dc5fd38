"""LL-HLS delivery directives (rfc8216bis 6.2.5, standards.md section 1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowcast.package.directives import (
    BadDirective,
    DirectiveError,
    Directives,
    advance_part_limit,
    cache_key,
    check_reachable,
    is_satisfied,
    max_block_seconds,
    parse_directives,
    resolve,
)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", Directives()),
        ("?", Directives()),
        ("_HLS_msn=12", Directives(12)),
        ("?_HLS_msn=12&_HLS_part=3", Directives(12, 3)),
        ("_HLS_msn=0&_HLS_part=0&_HLS_skip=YES", Directives(0, 0, "YES")),
        ("_HLS_skip=v2", Directives(skip="v2")),
        ("token=abc&_HLS_msn=5", Directives(5)),
        # unknown _HLS_ names are reserved but undefined: ignored (module docstring)
        ("_HLS_msn=5&_HLS_future=1&_HLS_throughput=5000000", Directives(5)),
    ],
)
def test_parse(query: str, expected: Directives) -> None:
    assert parse_directives(query) == expected


@pytest.mark.parametrize(
    "query",
    [
        "_HLS_part=3",  # part without msn: MUST 400
        "_HLS_part=3&_HLS_skip=YES",
        "_HLS_msn=-1",
        "_HLS_msn=1.5",
        "_HLS_msn=abc",
        "_HLS_msn=",
        "_HLS_msn=+3",
        "_HLS_msn=%EF%BC%91",  # full-width digit one
        "_HLS_msn=1&_HLS_part=-2",
        "_HLS_msn=1&_HLS_part=x",
        "_HLS_msn=1&_HLS_msn=2",
        "_HLS_skip=yes",
        "_HLS_skip=",
        "_HLS_skip=NO",
        "_HLS_msn=%FF",
    ],
)
def test_parse_rejects_with_400(query: str) -> None:
    with pytest.raises(BadDirective) as info:
        parse_directives(query)
    assert info.value.status == 400
    assert isinstance(info.value, DirectiveError)


def test_part_without_msn_is_400() -> None:
    with pytest.raises(BadDirective, match="_HLS_msn"):
        parse_directives("_HLS_part=0")


def test_advance_part_limit() -> None:
    assert advance_part_limit(0.5) == 6  # 3 / 0.5
    assert advance_part_limit(1 / 3) == 9
    assert advance_part_limit(0.2) == 15
    assert advance_part_limit(1.0) == 3
    assert advance_part_limit(2.0) == 3


def test_msn_more_than_two_ahead_is_400() -> None:
    ok = dict(last_msn=10, last_part=1, parts_per_segment_hint=4, part_target=0.5)
    check_reachable(Directives(12), **ok)
    check_reachable(Directives(3), **ok)  # old segments: answer at once, whole playlist
    with pytest.raises(BadDirective) as info:
        check_reachable(Directives(13), **ok)
    assert info.value.status == 400


def test_part_beyond_advance_part_limit_is_400() -> None:
    ok = dict(last_msn=10, last_part=1, parts_per_segment_hint=4, part_target=0.5)
    check_reachable(Directives(10, 7), **ok)  # 6 parts ahead: at the limit
    check_reachable(Directives(11, 3), **ok)  # 10.1 -> 11.3 is 6 parts
    with pytest.raises(BadDirective):
        check_reachable(Directives(11, 4), **ok)  # 7 ahead
    with pytest.raises(BadDirective):
        check_reachable(Directives(12, 0), **ok)  # 7 ahead
    # PART-TARGET >= 1 s: limit 3
    slow = dict(last_msn=10, last_part=0, parts_per_segment_hint=2, part_target=1.0)
    check_reachable(Directives(11, 1), **slow)
    with pytest.raises(BadDirective):
        check_reachable(Directives(12, 0), **slow)


def test_part_on_playlist_without_parts_is_400() -> None:
    with pytest.raises(BadDirective):
        check_reachable(Directives(10, 0), last_msn=10, last_part=None, parts_per_segment_hint=1, part_target=None)
    check_reachable(Directives(10), last_msn=10, last_part=None, parts_per_segment_hint=1, part_target=None)


def test_is_satisfied_msn_only_waits_for_complete_segment() -> None:
    assert is_satisfied(Directives(), last_msn=0, last_part=None, segment_complete=False)
    assert is_satisfied(Directives(9), last_msn=10, last_part=1, segment_complete=False)
    assert not is_satisfied(Directives(10), last_msn=10, last_part=1, segment_complete=False)
    assert is_satisfied(Directives(10), last_msn=10, last_part=3, segment_complete=True)
    assert not is_satisfied(Directives(11), last_msn=10, last_part=3, segment_complete=True)


def test_is_satisfied_with_part() -> None:
    edge = dict(last_msn=10, last_part=2, segment_complete=False)
    assert is_satisfied(Directives(10, 2), **edge)
    assert is_satisfied(Directives(10, 0), **edge)
    assert not is_satisfied(Directives(10, 3), **edge)
    assert not is_satisfied(Directives(11, 0), **edge)


def test_part_past_last_part_means_part_zero_of_next_segment() -> None:
    # Segment 10 complete with parts 0..3; 10.4 means 11.0.
    assert not is_satisfied(Directives(10, 4), last_msn=10, last_part=3, segment_complete=True)
    assert is_satisfied(Directives(10, 4), last_msn=11, last_part=0, segment_complete=False)
    assert is_satisfied(Directives(10, 99), last_msn=11, last_part=0, segment_complete=False)


def test_resolve_ignores_directives_per_spec() -> None:
    d = Directives(10, 2, "YES")
    assert resolve(d, ended=False, can_skip=True) == d
    assert resolve(d, ended=True, can_skip=True) == Directives()  # ENDLIST: no blocking, no skip
    assert resolve(d, ended=False, can_skip=False) == Directives(10, 2, "")  # no CAN-SKIP-UNTIL


def test_blocking_timeout() -> None:
    assert max_block_seconds(2) == 6.0  # 503 after 3 target durations
    assert Directives(1).blocking and not Directives().blocking


def test_cache_key_orders_hls_params_in_utf8_order() -> None:
    a = cache_key("_HLS_skip=YES&_HLS_part=2&_HLS_msn=10")
    b = cache_key("_HLS_msn=10&_HLS_part=2&_HLS_skip=YES")
    assert a == b == "_HLS_msn=10&_HLS_part=2&_HLS_skip=YES"
    assert cache_key("?token=t&_HLS_part=1&_HLS_msn=3") == "token=t&_HLS_msn=3&_HLS_part=1"
    assert cache_key("_HLS_msn=3&_HLS_throughput=123") == "_HLS_msn=3"  # left out of the key
    assert cache_key("") == ""


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_fuzz_parse_raises_only_bad_directive(query: str) -> None:
    try:
        d = parse_directives(query)
    except BadDirective as exc:
        assert exc.status == 400
        return
    assert d.part is None or d.msn is not None
    assert d.skip in ("", "YES", "v2")
    cache_key(query)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 3), st.integers(0, 20), st.booleans())
def test_property_satisfied_is_monotonic(msn: int, last_msn: int, last_part: int, part: int, complete: bool) -> None:
    """If a request is satisfied by an edge, it stays satisfied as the edge advances."""
    d = Directives(msn, part)
    if is_satisfied(d, last_msn=last_msn, last_part=last_part, segment_complete=complete):
        assert is_satisfied(d, last_msn=last_msn, last_part=last_part + 1, segment_complete=complete)
        assert is_satisfied(d, last_msn=last_msn + 1, last_part=0, segment_complete=False)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 10**6), st.integers(0, 50), st.integers(0, 1000), st.integers(0, 7),
    st.integers(1, 8), st.sampled_from([0.2, 1 / 3, 0.5, 1.0, 2.0]),
)
def test_property_reachable_bounds(msn: int, part: int, last_msn: int, last_part: int, pps: int, pt: float) -> None:
    d = Directives(msn, part)
    try:
        check_reachable(d, last_msn=last_msn, last_part=last_part, parts_per_segment_hint=pps, part_target=pt)
    except BadDirective as exc:
        assert exc.status == 400
        assert msn > last_msn + 2 or (msn * pps + part) - (last_msn * pps + last_part) > advance_part_limit(pt)
    else:
        assert msn <= last_msn + 2
        # the next part is always reachable
    check_reachable(Directives(last_msn, last_part + 1), last_msn=last_msn, last_part=last_part,
                    parts_per_segment_hint=pps, part_target=pt)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="_HLSmsnpartkiy=&?;:/.-0123456789%+ ", max_size=40))
def test_split_fast_path_agrees_with_parse_qsl(query: str) -> None:
    """The query splitter skips parse_qsl when there is nothing to decode (the origin's hot
    path); what it returns must be exactly what parse_qsl would."""
    from urllib.parse import parse_qsl

    from flowcast.package.directives import _split

    q = query[1:] if query.startswith("?") else query
    try:
        expected = parse_qsl(q, keep_blank_values=True, errors="strict")
    except ValueError:
        return
    assert _split(query) == expected
