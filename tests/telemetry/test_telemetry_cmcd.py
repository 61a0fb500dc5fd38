from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowcast.telemetry.cmcd import (
    CmcdError,
    CmcdToken,
    cmcd_from_request,
    origin_request,
    parse_cmcd,
    serialize_cmcd,
)


def test_parse_cta5004_example() -> None:
    # The shape hls.js / dash.js send: strings quoted, tokens bare, booleans as bare keys.
    text = 'bl=21300,br=3200,bs,cid="faec5fc2-ac30-11ea-bb37-0242ac130002",d=4004,dl=18500,mtp=48100,nor="..%2F300kbps%2Ftrack.m4v",nrr="12323-48763",ot=v,pr=1.08,rtp=12000,sf=d,sid="6e2fb550-c457-11e9-bb97-0800200c9a66",st=v,su,tb=6000'
    d = parse_cmcd(text)
    assert d["bl"] == 21300 and d["br"] == 3200 and d["mtp"] == 48100
    assert d["bs"] is True and d["su"] is True
    assert d["sid"] == "6e2fb550-c457-11e9-bb97-0800200c9a66"
    assert d["ot"] == "v" and isinstance(d["ot"], CmcdToken)
    assert d["pr"] == 1.08
    assert not isinstance(d["sid"], CmcdToken)


@pytest.mark.parametrize(
    "bad",
    ["bl=", "bl=1,", "=1", "sid=\"abc", "bl=1,bl=2", "sid=\"a\\x\"", "bl=1;br=2", "br=(1 2)", "BL=1"],
)
def test_malformed(bad: str) -> None:
    with pytest.raises(CmcdError):
        parse_cmcd(bad)


def test_booleans_and_escapes() -> None:
    d = parse_cmcd('bs=?1,su=?0,cid="a\\"b\\\\c"')
    assert d == {"bs": True, "su": False, "cid": 'a"b\\c'}


def test_query_and_headers_merge() -> None:
    q = "foo=1&CMCD=" + "bl%3D1000%2Cot%3Dv%2Csid%3D%22s-1%22"
    assert cmcd_from_request(q, {}) == {"bl": 1000, "ot": "v", "sid": "s-1"}
    h = {"cmcd-request": "bl=500,mtp=2500", "CMCD-Object": "br=3000,ot=v", "CMCD-Session": 'sid="s-2",sf=h'}
    assert cmcd_from_request("", h) == {"bl": 500, "mtp": 2500, "br": 3000, "ot": "v", "sid": "s-2", "sf": "h"}
    with pytest.raises(CmcdError):
        cmcd_from_request("CMCD=bl%3D1", {"CMCD-Request": "bl=2"})


def test_origin_request_from_cmcd() -> None:
    r = origin_request(
        ts=1.5,
        path="/live/seg1.m4s",
        status=200,
        bytes_sent=12345,
        ttfb_ms=3.5,
        headers={"CMCD-Request": "bl=900,mtp=25000", "CMCD-Object": "ot=v,br=2500", "CMCD-Session": 'sid="abc"'},
    )
    assert (r.session_id, r.object_type, r.buffer_length_ms, r.throughput_kbps, r.bitrate_kbps) == (
        "abc", "v", 900, 25000, 2500,
    )
    # Malformed CMCD never fails the access log entry.
    r2 = origin_request(ts=1.5, path="/x", status=404, bytes_sent=0, ttfb_ms=1.0, query="CMCD=%22")
    assert r2.session_id == "" and r2.status == 404


_keys = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True)
_values = st.one_of(
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
    st.from_regex(r"[a-z][a-z0-9:/]{0,8}", fullmatch=True).map(CmcdToken),
)


@settings(deadline=None)  # shared CI cores: timing is not what this tests
@given(st.dictionaries(_keys, _values, max_size=8))
def test_roundtrip(d: dict) -> None:
    assert parse_cmcd(serialize_cmcd(d)) == d


@settings(deadline=None)
@given(st.text(max_size=80))
def test_fuzz_only_cmcd_error(text: str) -> None:
    try:
        parse_cmcd(text)
    except CmcdError:
        pass
