"""The private _HLS_ directive parser (to be replaced by flowcast.package.directives)."""

from __future__ import annotations

import pytest

from flowcast.origin.app import BadDirective, advance_part_limit, parse_directives


@pytest.mark.parametrize(
    "query, expected",
    [
        ("", (None, None, None)),
        ("_HLS_msn=12", (12, None, None)),
        ("_HLS_msn=12&_HLS_part=3", (12, 3, None)),
        ("_HLS_msn=12&_HLS_part=3&_HLS_skip=YES", (12, 3, "YES")),
        ("_HLS_skip=v2", (None, None, "v2")),
        ("token=abc&_HLS_msn=4&CMCD=bl%3D100", (4, None, None)),
        ("_HLS_msn=4&_HLS_pathway=CDN-A&_HLS_throughput=1000000", (4, None, None)),
    ],
)
def test_parse(query, expected):
    assert parse_directives(query) == expected


@pytest.mark.parametrize(
    "query",
    ["_HLS_part=1", "_HLS_msn=-1", "_HLS_msn=x", "_HLS_msn=1&_HLS_part=", "_HLS_skip=NO", "_HLS_msn=1&_HLS_msn=2"],
)
def test_bad(query):
    with pytest.raises(BadDirective) as err:
        parse_directives(query)
    assert err.value.status == 400


def test_advance_part_limit():
    assert advance_part_limit(0.25) == 12
    assert advance_part_limit(0.3) == pytest.approx(10)
    assert advance_part_limit(1.0) == 3
    assert advance_part_limit(None) == 3
