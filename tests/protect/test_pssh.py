"""pssh writer/parser (ISO/IEC 23001-7 8.1) against the shaka-packager golden vector."""

from __future__ import annotations

import base64
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowcast.media.boxes import BoxError, iter_boxes
from flowcast.protect.pssh import (
    COMMON_SYSTEM_ID,
    FAIRPLAY_SYSTEM_ID,
    PLAYREADY_SYSTEM_ID,
    WIDEVINE_SYSTEM_ID,
    PsshBox,
    clearkey_pssh,
    find_pssh,
    parse_pssh,
    pssh_box,
)

GOLDEN = base64.b64decode("AAAANHBzc2gBAAAAEHfv7MCyTQKs4zweUuL7SwAAAAExMjM0NTY3ODkwMTIzNDU2AAAAAA==")
KID = bytes.fromhex("31323334353637383930313233343536")


def test_golden_common_pssh_byte_for_byte() -> None:
    assert len(GOLDEN) == 52
    assert pssh_box(COMMON_SYSTEM_ID, [KID]) == GOLDEN
    assert pssh_box(COMMON_SYSTEM_ID.bytes, [KID], b"", 1) == GOLDEN
    assert clearkey_pssh([KID]) == GOLDEN


def test_parse_golden() -> None:
    (b,) = list(iter_boxes(GOLDEN))
    parsed = parse_pssh(b.payload)
    assert parsed == PsshBox(COMMON_SYSTEM_ID, (KID,), b"", 1)
    assert parsed.to_bytes() == GOLDEN
    assert find_pssh(GOLDEN) == [parsed]


def test_system_ids() -> None:
    assert COMMON_SYSTEM_ID == UUID("1077efec-c0b2-4d02-ace3-3c1e52e2fb4b")
    assert WIDEVINE_SYSTEM_ID == UUID("edef8ba9-79d6-4ace-a3c8-27dcd51d21ed")
    assert PLAYREADY_SYSTEM_ID == UUID("9a04f079-9840-4286-ab92-e65be0885f95")
    assert FAIRPLAY_SYSTEM_ID == UUID("94ce86fb-07ff-4f43-adb8-93d2fa968ca2")


def test_version_zero_with_data() -> None:
    raw = pssh_box(WIDEVINE_SYSTEM_ID, data=b"\x08\x01")
    assert raw[8] == 0  # version 0 when no KIDs
    assert parse_pssh(raw[8:]) == PsshBox(WIDEVINE_SYSTEM_ID, (), b"\x08\x01", 0)


def test_rejects_bad_input() -> None:
    with pytest.raises(BoxError):
        pssh_box(COMMON_SYSTEM_ID, [b"short"])
    with pytest.raises(BoxError):
        pssh_box(COMMON_SYSTEM_ID, [KID], version=0)
    with pytest.raises(BoxError):
        pssh_box(b"\x00" * 15)
    with pytest.raises(BoxError):
        parse_pssh(GOLDEN[8:-1])


@given(
    st.binary(min_size=16, max_size=16),
    st.lists(st.binary(min_size=16, max_size=16), max_size=4),
    st.binary(max_size=64),
)
def test_roundtrip(system: bytes, kids: list[bytes], data: bytes) -> None:
    raw = pssh_box(system, kids, data)
    assert parse_pssh(raw[8:]) == PsshBox(UUID(bytes=system), tuple(kids), data, 1 if kids else 0)


@given(st.binary(max_size=120))
def test_parser_only_raises_box_error(payload: bytes) -> None:
    try:
        parse_pssh(payload)
    except BoxError:
        pass
