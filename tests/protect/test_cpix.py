"""CPIX 2.x import (DASH-IF public test vectors) and export round trip."""

from __future__ import annotations

import base64
import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowcast.protect.cenc import ContentKey
from flowcast.protect.cpix import (
    CPIX_NS,
    PSKC_NS,
    CpixDocument,
    CpixError,
    CpixKey,
    DrmSystemData,
    KeyPeriod,
    UsageRule,
    cpix_for_keys,
    parse_cpix,
    render_cpix,
)
from flowcast.protect.keystore import KeyStore, LocalMasterKey
from flowcast.protect.pssh import (
    COMMON_SYSTEM_ID,
    FAIRPLAY_SYSTEM_ID,
    PLAYREADY_SYSTEM_ID,
    WIDEVINE_SYSTEM_ID,
    clearkey_pssh,
    parse_pssh,
)
from flowcast.protect.signalling import clearkey_signal, hls_key_lines

DATA = Path(__file__).parent / "data" / "cpix"


def load(name: str) -> CpixDocument:
    return parse_cpix((DATA / name).read_bytes())


def u(text: str) -> bytes:
    return UUID(text).bytes


# --- the public vectors --------------------------------------------------------------


def test_clear_content_keys_only() -> None:
    doc = load("ClearContentKeysOnly.xml")
    assert [str(k.kid_uuid) for k in doc.keys] == [
        "40d02dd1-61a3-4787-a155-572325d47b80",
        "0a30ea4f-539d-4b02-94b2-2b3fba2576d3",
        "9f7908fa-5d5c-4097-ba53-50edc2235fbc",
        "fac2cbf5-889c-412b-a385-04a29d409bdc",
    ]
    assert doc.key(u("40d02dd1-61a3-4787-a155-572325d47b80")).value == base64.b64decode("gPxt0PMwrHM4TdjwdQmhhQ==")
    assert doc.key(UUID("fac2cbf5-889c-412b-a385-04a29d409bdc")).value == base64.b64decode("1OZVZZoYFSU2X/7qT3sHwg==")
    assert not any(k.encrypted for k in doc.keys)
    assert doc.drm_systems == () and doc.periods == ()
    ck = doc.keys[0].content_key(iv=b"\x01" * 16)
    assert ck.key == base64.b64decode("gPxt0PMwrHM4TdjwdQmhhQ==")


def test_empty_document() -> None:
    assert load("EmptyDocument.xml") == CpixDocument()


def test_encrypted_content_keys_are_imported_without_values() -> None:
    doc = load("EncryptedContentKeys.xml")
    assert [str(k.kid_uuid) for k in doc.keys] == [
        "bd5adf51-cf04-410f-aac3-ec63a69e929e",
        "d2920429-87ab-41e6-a4c5-a8c836b6312e",
        "e17ba4b8-faff-4d30-bcba-7485e3f2e884",
        "0ae6b9ad-92d2-4ebe-882b-1d07dee70715",
    ]
    assert all(k.encrypted and k.value is None for k in doc.keys)
    with pytest.raises(CpixError, match="encrypted"):
        doc.keys[0].content_key(b"\0" * 16)
    with pytest.raises(CpixError, match="no value"):
        render_cpix(doc)


def test_complex_drm_systems() -> None:
    doc = load("Complex.xml")  # UTF-8 BOM, signatures, DeliveryData: all tolerated
    kids = ["b4c3188b-eddd-453d-9bc2-1cbca7566239", "c6294999-5f48-445f-bcce-f7e5f736d7c6",
            "b181a4df-2c38-41a4-993f-90b2f21343f6", "a466cdfd-e556-4b1d-8098-c1a4aa78997a"]
    assert [str(k.kid_uuid) for k in doc.keys] == kids
    assert all(k.encrypted for k in doc.keys)
    assert len(doc.drm_systems) == 12
    for kid in kids:
        assert {d.system_id for d in doc.systems_for(u(kid))} == {
            WIDEVINE_SYSTEM_ID, PLAYREADY_SYSTEM_ID, FAIRPLAY_SYSTEM_ID}
    kid = u(kids[0])
    # Widevine: pssh from ContentProtectionData, v0, the KID inside the protobuf data
    (wv,) = doc.pssh(WIDEVINE_SYSTEM_ID, kid)
    assert base64.b64encode(wv).decode() == "AAAAOHBzc2gAAAAA7e+LqXnWSs6jyCfc1R0h7QAAABgSELTDGIvt3UU9m8IcvKdWYjlI49yVmwY="
    box = parse_pssh(wv[8:])
    assert box.system_id == WIDEVINE_SYSTEM_ID and box.version == 0 and kid in box.data
    # PlayReady: pssh carrying a PlayReady Object; Smooth Streaming header too
    (pr,) = doc.pssh(PLAYREADY_SYSTEM_ID, kid)
    assert len(pr) == 484 and parse_pssh(pr[8:]).system_id == PLAYREADY_SYSTEM_ID
    prd = [d for d in doc.systems_for(kid) if d.system_id == PLAYREADY_SYSTEM_ID][0]
    assert prd.smooth_streaming_header is not None and "<WRMHEADER".encode("utf-16-le") in prd.smooth_streaming_header
    # FairPlay: HLS signalling only
    fp = [d for d in doc.systems_for(kid) if d.system_id == FAIRPLAY_SYSTEM_ID][0]
    assert fp.pssh_boxes() == ()
    assert fp.hls_signaling_for("media") == (
        '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://b4c3188b-eddd-453d-9bc2-1cbca7566239",'
        'KEYFORMAT="com.apple.streamingkeydelivery",KEYFORMATVERSIONS="1"'
    )
    assert fp.hls_signaling_for("master").startswith("#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,")
    wvd = [d for d in doc.systems_for(kid) if d.system_id == WIDEVINE_SYSTEM_ID][0]
    assert "KEYID=0xB4C3188BEDDD453D9BC21CBCA7566239" in (wvd.hls_signaling_for("media") or "")
    # usage rules
    assert [r.kid for r in doc.usage_rules] == [kid, u(kids[3])]
    assert doc.usage_rules[0].labels[:2] == ("EncryptedStream", "CencStream")
    assert doc.usage_rules[0].audio and not doc.usage_rules[0].video
    assert doc.usage_rules[1].video and not doc.usage_rules[1].audio


def test_key_rotation_multi_period() -> None:
    doc = load("KeyRotationMultiKeyMulitPeriod.xml")
    assert doc.periods == (KeyPeriod("now", 1), KeyPeriod("next", 2))
    assert [k.id for k in doc.keys_for_period("now")] == ["video_1", "audio_1"]
    assert [k.id for k in doc.keys_for_period("next")] == ["video_2", "audio_2"]
    v2 = doc.key(u("6bf7f10d-a91b-41b9-b331-7999fd1abe3b"))
    assert v2.value == base64.b64decode("Dsgzmhp1SbGzGusuf35Z8g==")
    assert v2.explicit_iv == u("f45bcebb-f0df-4a34-bf4e-c24edfcf6289")  # written as a UUID there
    ck = v2.content_key()
    assert ck.iv == v2.explicit_iv and ck.kid == v2.kid
    rules = {r.kid: r for r in doc.usage_rules}
    assert rules[v2.kid].period_ids == ("next",) and rules[v2.kid].video
    assert rules[u("ab8395ce-667a-443a-b9cc-58ad7875b541")].audio


def test_key_rotation_single_period() -> None:
    doc = load("KeyRotationMultiKeySinglePeriod.xml")
    assert doc.periods == (KeyPeriod("now", 1),)
    assert [k.id for k in doc.keys_for_period("now")] == ["video", "audio"]
    assert doc.key(u("988395ce-667a-443a-b9cc-58ad7875a687")).value == base64.b64decode("B9mye8sHQJSOhOkbpKKpNg==")


def test_usage_rules_based_on_labels() -> None:
    doc = load("UsageRulesBasedOnLabels.xml")
    assert len(doc.usage_rules) == 5
    audio = u("ba6c62d6-4a49-4aa4-8869-ce4d2727a2b5")
    assert [r.labels for r in doc.usage_rules if r.kid == audio] == [
        ("AllAudioStreams", "Audio", "PositionalAudio", "Stereo"),
        ("Commentary", "Telephony", "Speech"),
    ]
    assert doc.usage_rules[-1].labels == ("UHD-Video", "3D-Video", "WCG-Video", "HDR-Video")


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.xml")))
def test_every_vector_with_plain_keys_round_trips(name: str) -> None:
    doc = load(name)
    if any(k.encrypted for k in doc.keys):
        doc = dataclasses.replace(doc, keys=())
    again = parse_cpix(render_cpix(doc))
    assert again == dataclasses.replace(doc, version=again.version)


# --- export --------------------------------------------------------------------------


def _our_document(tmp_path: Path) -> tuple[CpixDocument, list[ContentKey]]:
    store = KeyStore(tmp_path / "keys.json", LocalMasterKey.generate())
    keys = [store.key_for("live", p) for p in range(3)]
    systems = []
    for i, k in enumerate(keys):
        nxt = keys[i + 1].kid if i + 1 < len(keys) else None
        sig = clearkey_signal(k.kid, "cbcs", "https://lic.example/clearkey", announce_kids=[nxt] if nxt else [])
        systems.append(
            DrmSystemData(
                COMMON_SYSTEM_ID,
                k.kid,
                pssh=clearkey_pssh([k.kid]),
                hls_signaling=(
                    ("media", hls_key_lines(sig)[0]),
                    ("master", hls_key_lines(sig, session=True)[0]),
                ),
            )
        )
    doc = cpix_for_keys(keys, "cbcs", drm_systems=systems, periods=[0, 1, 2], content_id="live")
    return doc, keys


def test_export_round_trips_through_import(tmp_path: Path) -> None:
    doc, keys = _our_document(tmp_path)
    xml = render_cpix(doc)
    again = parse_cpix(xml)
    assert again == doc
    for k in keys:
        assert again.key(k.kid).content_key() == k
        assert again.pssh(COMMON_SYSTEM_ID, k.kid) == (clearkey_pssh([k.kid]),)
    assert [k.kid for k in again.keys_for_period("keyPeriod_1")] == [keys[1].kid]
    assert again.periods == (KeyPeriod("keyPeriod_0", 0), KeyPeriod("keyPeriod_1", 1), KeyPeriod("keyPeriod_2", 2))


def test_export_is_well_formed_against_the_namespaces(tmp_path: Path) -> None:
    doc, keys = _our_document(tmp_path)
    root = ET.fromstring(render_cpix(doc))
    assert root.tag == f"{{{CPIX_NS}}}CPIX" and root.get("version") == "2.3" and root.get("contentId") == "live"
    for el in root.iter():
        assert el.tag.startswith((f"{{{CPIX_NS}}}", f"{{{PSKC_NS}}}")), el.tag
    assert [c.tag.split("}")[1] for c in root] == [
        "ContentKeyList", "DRMSystemList", "ContentKeyPeriodList", "ContentKeyUsageRuleList"]
    ck = root.find(f"{{{CPIX_NS}}}ContentKeyList/{{{CPIX_NS}}}ContentKey")
    assert ck is not None and ck.get("commonEncryptionScheme") == "cbcs" and ck.get("kid") == str(UUID(bytes=keys[0].kid))
    pv = ck.find(f"{{{CPIX_NS}}}Data/{{{PSKC_NS}}}Secret/{{{PSKC_NS}}}PlainValue")
    assert pv is not None and base64.b64decode(pv.text or "") == keys[0].key
    drm = root.find(f"{{{CPIX_NS}}}DRMSystemList/{{{CPIX_NS}}}DRMSystem")
    assert drm is not None and drm.get("systemId") == str(COMMON_SYSTEM_ID)
    assert [c.tag.split("}")[1] for c in drm] == ["PSSH", "HLSSignalingData", "HLSSignalingData"]


def test_cpix_key_repr_hides_the_key() -> None:
    k = CpixKey(b"\x01" * 16, b"\x99" * 16, "cbcs", b"\x77" * 16)
    assert "\\x99" not in repr(k) and "99999999" not in repr(k) and "\\x77" not in repr(k)


@pytest.mark.parametrize(
    ("xml", "match"),
    [
        (b"<notxml", "not XML"),
        (b'<?xml version="1.0" encoding="no-such-codec"?><CPIX xmlns="urn:dashif:org:cpix"/>', "not XML"),
        (b'<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"/>', "not"),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><CPIX xmlns="urn:dashif:org:cpix"/>', "DTD"),
        (b'<CPIX xmlns="urn:dashif:org:cpix"><ContentKeyList><ContentKey kid="nope"/></ContentKeyList></CPIX>', "UUID"),
        (b'<CPIX xmlns="urn:dashif:org:cpix"><ContentKeyList><ContentKey kid="40d02dd1-61a3-4787-a155-572325d47b80">'
         b'<Data><Secret xmlns="urn:ietf:params:xml:ns:keyprov:pskc"><PlainValue>!!</PlainValue></Secret></Data>'
         b"</ContentKey></ContentKeyList></CPIX>", "base64"),
        (b'<CPIX xmlns="urn:dashif:org:cpix"><ContentKeyList><ContentKey kid="40d02dd1-61a3-4787-a155-572325d47b80">'
         b'<Data><Secret xmlns="urn:ietf:params:xml:ns:keyprov:pskc"><PlainValue>AAAA</PlainValue></Secret></Data>'
         b"</ContentKey></ContentKeyList></CPIX>", "not 16"),
        (b'<CPIX xmlns="urn:dashif:org:cpix"><ContentKeyPeriodList><ContentKeyPeriod id="a" index="x"/>'
         b"</ContentKeyPeriodList></CPIX>", "index"),
    ],
)
def test_bad_documents(xml: bytes, match: str) -> None:
    with pytest.raises(CpixError, match=match):
        parse_cpix(xml)


def test_utf16_dtd_is_refused_too() -> None:
    xml = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x><CPIX xmlns="urn:dashif:org:cpix"/>'
    with pytest.raises(CpixError, match="DTD"):
        parse_cpix(b"\xff\xfe" + xml.encode("utf-16-le"))


@settings(max_examples=200)
@given(st.binary(max_size=400))
def test_parser_only_raises_cpix_error(data: bytes) -> None:
    try:
        parse_cpix(data)
    except CpixError:
        pass


@given(
    st.lists(
        st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16),
                  st.sampled_from(["cenc", "cbcs", None]), st.integers(0, 10**6)),
        max_size=6, unique_by=lambda t: t[0],
    )
)
def test_round_trip_property(items: list[tuple[bytes, bytes, str | None, int]]) -> None:
    doc = CpixDocument(
        keys=tuple(CpixKey(kid, key, scheme, None, None) for kid, key, scheme, _ in items),
        periods=tuple(KeyPeriod(f"p{i}", idx) for i, (_, _, _, idx) in enumerate(items)),
        usage_rules=tuple(UsageRule(kid, (f"p{i}",), video=True) for i, (kid, _, _, _) in enumerate(items)),
        version="2.3",
    )
    assert parse_cpix(render_cpix(doc)) == doc
