"""CPIX 2.x (DASH-IF Content Protection Information Exchange): import and export.

Sans-I/O: bytes in, `CpixDocument` out, and back. Namespaces: CPIX `urn:dashif:org:cpix`,
keys in PSKC `urn:ietf:params:xml:ns:keyprov:pskc` (RFC 6030), PSSH inside
ContentProtectionData in `urn:mpeg:cenc:2013`.

What is read: ContentKeyList/ContentKey (@kid, @commonEncryptionScheme, @explicitIV,
Data/Secret/PlainValue), DRMSystemList/DRMSystem (@systemId, @kid, PSSH,
ContentProtectionData, URIExtXKey, HLSSignalingData @playlist,
SmoothStreamingProtectionHeaderData), ContentKeyPeriodList/ContentKeyPeriod (@id, @index,
@start, @end) and ContentKeyUsageRuleList/ContentKeyUsageRule (@kid, @intendedTrackType,
KeyPeriodFilter, LabelFilter, Video/AudioFilter). Encrypted content keys
(Secret/EncryptedValue, sent to a DeliveryData recipient) are imported as `encrypted=True`
with no value: decrypting them needs the recipient's private key and is not done here.
Signatures are not verified. DTDs and entities are refused.
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from .cenc import ContentKey, ProtectError

__all__ = [
    "CPIX_NS",
    "PSKC_NS",
    "CpixDocument",
    "CpixError",
    "CpixKey",
    "DrmSystemData",
    "KeyPeriod",
    "UsageRule",
    "cpix_for_keys",
    "cpix_for_store",
    "key_periods",
    "parse_cpix",
    "render_cpix",
]

CPIX_NS = "urn:dashif:org:cpix"
PSKC_NS = "urn:ietf:params:xml:ns:keyprov:pskc"
CENC_NS = "urn:mpeg:cenc:2013"
CPIX_VERSION = "2.3"
_C = "{" + CPIX_NS + "}"
_P = "{" + PSKC_NS + "}"
_CENC = "{" + CENC_NS + "}"


class CpixError(ValueError):
    """The document is not CPIX this module can read (or a value cannot be written)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str | None, what: str) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise CpixError(f"{what}: not base64") from None


def _uuid(text: str | None, what: str) -> UUID:
    if text is None:
        raise CpixError(f"{what} missing")
    try:
        return UUID(text.strip())
    except ValueError:
        raise CpixError(f"{what}: not a UUID: {text!r}") from None


@dataclass(frozen=True, slots=True)
class CpixKey:
    """A content key. `value` is None when it came encrypted for a recipient."""

    kid: bytes
    value: bytes | None = field(default=None, repr=False)
    common_encryption_scheme: str | None = None  # cenc | cbc1 | cens | cbcs
    explicit_iv: bytes | None = field(default=None, repr=False)
    id: str | None = None
    encrypted: bool = False

    def __post_init__(self) -> None:
        if len(self.kid) != 16:
            raise CpixError("KID must be 16 bytes")
        if self.value is not None and len(self.value) != 16:
            raise CpixError(f"content key {UUID(bytes=self.kid)} is {len(self.value)} bytes, not 16")
        if self.explicit_iv is not None and len(self.explicit_iv) not in (8, 16):
            raise CpixError("explicitIV must be 8 or 16 bytes")

    @property
    def kid_uuid(self) -> UUID:
        return UUID(bytes=self.kid)

    def content_key(self, iv: bytes | None = None) -> ContentKey:
        """For TrackEncryptor: `iv` overrides the document's explicitIV."""
        if self.value is None:
            raise CpixError(f"content key {self.kid_uuid} is encrypted; cannot use it")
        use_iv = iv if iv is not None else self.explicit_iv
        if use_iv is None:
            raise CpixError(f"content key {self.kid_uuid} has no explicitIV; pass an IV")
        try:
            return ContentKey(self.kid, self.value, use_iv)
        except ProtectError as exc:
            raise CpixError(str(exc)) from None

    @classmethod
    def from_content_key(cls, key: ContentKey, scheme: str | None = None, id: str | None = None) -> CpixKey:
        return cls(key.kid, key.key, scheme, key.iv if len(key.iv) == 16 else None, id)


@dataclass(frozen=True, slots=True)
class DrmSystemData:
    """Per-system signalling for one KID, as a CPIX DRMSystem carries it."""

    system_id: UUID
    kid: bytes
    pssh: bytes | None = None  # PSSH element: a whole pssh box
    content_protection_data: str | None = None  # decoded XML for the MPD ContentProtection
    uri_ext_x_key: str | None = None
    hls_signaling: tuple[tuple[str | None, str], ...] = ()  # (playlist master|media|None, tag text)
    smooth_streaming_header: bytes | None = None

    def pssh_boxes(self) -> tuple[bytes, ...]:
        """The pssh boxes for this system: the PSSH element, else the cenc:pssh elements
        found in ContentProtectionData (CPIX 2.0 documents put them only there)."""
        if self.pssh is not None:
            return (self.pssh,)
        if not self.content_protection_data:
            return ()
        try:
            root = ET.fromstring(f"<r>{self.content_protection_data}</r>")
        except ET.ParseError:
            return ()
        return tuple(_unb64(el.text, "cenc:pssh") for el in root.iter(_CENC + "pssh"))

    def hls_signaling_for(self, playlist: str) -> str | None:
        for pl, text in self.hls_signaling:
            if pl == playlist or pl is None:
                return text
        return None


@dataclass(frozen=True, slots=True)
class KeyPeriod:
    """ContentKeyPeriod: an @index (our key period number) or a @start/@end time span."""

    id: str
    index: int | None = None
    start: str | None = None  # xs:dateTime as written
    end: str | None = None


@dataclass(frozen=True, slots=True)
class UsageRule:
    kid: bytes
    period_ids: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    video: bool = False  # has a VideoFilter
    audio: bool = False  # has an AudioFilter
    intended_track_type: str | None = None


@dataclass(frozen=True, slots=True)
class CpixDocument:
    keys: tuple[CpixKey, ...] = ()
    drm_systems: tuple[DrmSystemData, ...] = ()
    periods: tuple[KeyPeriod, ...] = ()
    usage_rules: tuple[UsageRule, ...] = ()
    content_id: str | None = None
    version: str | None = None

    def key(self, kid: bytes | UUID) -> CpixKey:
        raw = kid.bytes if isinstance(kid, UUID) else bytes(kid)
        for k in self.keys:
            if k.kid == raw:
                return k
        raise KeyError(str(UUID(bytes=raw)) if len(raw) == 16 else raw.hex())

    def systems_for(self, kid: bytes | UUID) -> tuple[DrmSystemData, ...]:
        raw = kid.bytes if isinstance(kid, UUID) else bytes(kid)
        return tuple(d for d in self.drm_systems if d.kid == raw)

    def pssh(self, system_id: UUID, kid: bytes | UUID) -> tuple[bytes, ...]:
        return tuple(b for d in self.systems_for(kid) if d.system_id == system_id for b in d.pssh_boxes())

    def keys_for_period(self, period_id: str) -> tuple[CpixKey, ...]:
        kids = {r.kid for r in self.usage_rules if period_id in r.period_ids}
        return tuple(k for k in self.keys if k.kid in kids)


# --- import -------------------------------------------------------------------------


def _refuse_dtd(data: bytes) -> None:
    probe = data
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        probe = data.decode("utf-16", "replace").encode("utf-8", "replace")
    if b"<!DOCTYPE" in probe or b"<!ENTITY" in probe:
        raise CpixError("DTDs and entities are not accepted in CPIX")


def _children(el: ET.Element, tag: str) -> list[ET.Element]:
    return [c for c in el if c.tag == tag]


def _list(root: ET.Element, name: str, item: str) -> list[ET.Element]:
    out: list[ET.Element] = []
    for lst in _children(root, _C + name):
        out.extend(_children(lst, _C + item))
    return out


def _explicit_iv(text: str) -> bytes:
    # CPIX says base64Binary; some published vectors write a UUID. Accept both.
    t = text.strip()
    try:
        raw = base64.b64decode(t, validate=True)
        if len(raw) in (8, 16):
            return raw
    except (binascii.Error, ValueError):
        pass
    try:
        return UUID(t).bytes
    except ValueError:
        raise CpixError(f"explicitIV is neither base64 of 8/16 bytes nor a UUID: {text!r}") from None


def _parse_key(el: ET.Element) -> CpixKey:
    kid = _uuid(el.get("kid"), "ContentKey@kid").bytes
    value: bytes | None = None
    encrypted = False
    data = _children(el, _C + "Data")
    if data:
        secrets_ = _children(data[0], _P + "Secret")
        if not secrets_:
            raise CpixError("ContentKey/Data without pskc:Secret")
        secret = secrets_[0]
        plain = _children(secret, _P + "PlainValue")
        if plain:
            value = _unb64(plain[0].text, "PlainValue")
        elif _children(secret, _P + "EncryptedValue"):
            encrypted = True
        else:
            raise CpixError("pskc:Secret without PlainValue or EncryptedValue")
    iv = el.get("explicitIV")
    return CpixKey(
        kid=kid,
        value=value,
        common_encryption_scheme=el.get("commonEncryptionScheme"),
        explicit_iv=_explicit_iv(iv) if iv else None,
        id=el.get("id"),
        encrypted=encrypted,
    )


def _text_child(el: ET.Element, name: str) -> str | None:
    found = _children(el, _C + name)
    return (found[0].text or "").strip() if found else None


def _parse_drm(el: ET.Element) -> DrmSystemData:
    pssh_text = _text_child(el, "PSSH")
    cpd = _text_child(el, "ContentProtectionData")
    uri = _text_child(el, "URIExtXKey")
    sss = _text_child(el, "SmoothStreamingProtectionHeaderData")

    def text(b64: str | None, what: str) -> str | None:
        if b64 is None:
            return None
        try:
            return _unb64(b64, what).decode("utf-8")
        except UnicodeDecodeError:
            raise CpixError(f"{what} is not UTF-8") from None

    hls = tuple(
        (h.get("playlist"), text((h.text or "").strip(), "HLSSignalingData") or "")
        for h in _children(el, _C + "HLSSignalingData")
    )
    return DrmSystemData(
        system_id=_uuid(el.get("systemId"), "DRMSystem@systemId"),
        kid=_uuid(el.get("kid"), "DRMSystem@kid").bytes,
        pssh=_unb64(pssh_text, "PSSH") if pssh_text is not None else None,
        content_protection_data=text(cpd, "ContentProtectionData"),
        uri_ext_x_key=text(uri, "URIExtXKey"),
        hls_signaling=hls,
        smooth_streaming_header=_unb64(sss, "SmoothStreamingProtectionHeaderData") if sss is not None else None,
    )


def _parse_period(el: ET.Element) -> KeyPeriod:
    pid = el.get("id")
    if pid is None:
        raise CpixError("ContentKeyPeriod without @id")
    index = el.get("index")
    if index is not None and not index.strip().isdigit():
        raise CpixError(f"ContentKeyPeriod@index not an unsigned integer: {index!r}")
    return KeyPeriod(pid, int(index) if index is not None else None, el.get("start"), el.get("end"))


def _parse_rule(el: ET.Element) -> UsageRule:
    return UsageRule(
        kid=_uuid(el.get("kid"), "ContentKeyUsageRule@kid").bytes,
        period_ids=tuple(f.get("periodId", "") for f in _children(el, _C + "KeyPeriodFilter")),
        labels=tuple(f.get("label", "") for f in _children(el, _C + "LabelFilter")),
        video=bool(_children(el, _C + "VideoFilter")),
        audio=bool(_children(el, _C + "AudioFilter")),
        intended_track_type=el.get("intendedTrackType"),
    )


def parse_cpix(data: bytes | str) -> CpixDocument:
    """Parse a CPIX document; `CpixError` for anything malformed."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    _refuse_dtd(raw)
    try:
        root = ET.fromstring(raw)
    except (ET.ParseError, ValueError, LookupError) as exc:  # LookupError: unknown encoding
        raise CpixError(f"not XML: {exc}") from None
    if root.tag != _C + "CPIX":
        raise CpixError(f"root element is {root.tag!r}, not {{{CPIX_NS}}}CPIX")
    return CpixDocument(
        keys=tuple(_parse_key(e) for e in _list(root, "ContentKeyList", "ContentKey")),
        drm_systems=tuple(_parse_drm(e) for e in _list(root, "DRMSystemList", "DRMSystem")),
        periods=tuple(_parse_period(e) for e in _list(root, "ContentKeyPeriodList", "ContentKeyPeriod")),
        usage_rules=tuple(_parse_rule(e) for e in _list(root, "ContentKeyUsageRuleList", "ContentKeyUsageRule")),
        content_id=root.get("contentId"),
        version=root.get("version"),
    )


# --- export -------------------------------------------------------------------------


def render_cpix(doc: CpixDocument) -> bytes:
    """The document as CPIX XML (element order of the CPIX 2.3 schema).

    Keys are written in the clear (PlainValue): send the result only over an
    authenticated, encrypted channel to the packager or DRM service that needs it.
    """
    attrs = {"xmlns:cpix": CPIX_NS, "xmlns:pskc": PSKC_NS, "version": doc.version or CPIX_VERSION}
    if doc.content_id is not None:
        attrs["contentId"] = doc.content_id
    root = ET.Element("cpix:CPIX", attrs)
    if doc.keys:
        lst = ET.SubElement(root, "cpix:ContentKeyList")
        for k in doc.keys:
            if k.value is None:
                raise CpixError(f"content key {k.kid_uuid} has no value to export")
            a = {"kid": str(k.kid_uuid)}
            if k.id is not None:
                a["id"] = k.id
            if k.explicit_iv is not None:
                a["explicitIV"] = _b64(k.explicit_iv)
            if k.common_encryption_scheme is not None:
                a["commonEncryptionScheme"] = k.common_encryption_scheme
            ck = ET.SubElement(lst, "cpix:ContentKey", a)
            secret = ET.SubElement(ET.SubElement(ck, "cpix:Data"), "pskc:Secret")
            ET.SubElement(secret, "pskc:PlainValue").text = _b64(k.value)
    if doc.drm_systems:
        lst = ET.SubElement(root, "cpix:DRMSystemList")
        for d in doc.drm_systems:
            el = ET.SubElement(lst, "cpix:DRMSystem", {"kid": str(UUID(bytes=d.kid)), "systemId": str(d.system_id)})
            if d.pssh is not None:
                ET.SubElement(el, "cpix:PSSH").text = _b64(d.pssh)
            if d.content_protection_data is not None:
                ET.SubElement(el, "cpix:ContentProtectionData").text = _b64(d.content_protection_data.encode())
            if d.uri_ext_x_key is not None:
                ET.SubElement(el, "cpix:URIExtXKey").text = _b64(d.uri_ext_x_key.encode())
            for playlist, text in d.hls_signaling:
                h = ET.SubElement(el, "cpix:HLSSignalingData", {"playlist": playlist} if playlist else {})
                h.text = _b64(text.encode())
            if d.smooth_streaming_header is not None:
                ET.SubElement(el, "cpix:SmoothStreamingProtectionHeaderData").text = _b64(d.smooth_streaming_header)
    if doc.periods:
        lst = ET.SubElement(root, "cpix:ContentKeyPeriodList")
        for p in doc.periods:
            a = {"id": p.id}
            if p.index is not None:
                a["index"] = str(p.index)
            if p.start is not None:
                a["start"] = p.start
            if p.end is not None:
                a["end"] = p.end
            ET.SubElement(lst, "cpix:ContentKeyPeriod", a)
    if doc.usage_rules:
        lst = ET.SubElement(root, "cpix:ContentKeyUsageRuleList")
        for r in doc.usage_rules:
            a = {"kid": str(UUID(bytes=r.kid))}
            if r.intended_track_type is not None:
                a["intendedTrackType"] = r.intended_track_type
            el = ET.SubElement(lst, "cpix:ContentKeyUsageRule", a)
            for pid in r.period_ids:
                ET.SubElement(el, "cpix:KeyPeriodFilter", {"periodId": pid})
            for label in r.labels:
                ET.SubElement(el, "cpix:LabelFilter", {"label": label})
            if r.video:
                ET.SubElement(el, "cpix:VideoFilter")
            if r.audio:
                ET.SubElement(el, "cpix:AudioFilter")
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def cpix_for_keys(
    keys: Sequence[ContentKey],
    scheme: str,
    *,
    drm_systems: Iterable[DrmSystemData] = (),
    periods: Sequence[int] | None = None,
    content_id: str | None = None,
) -> CpixDocument:
    """Our keys as a CpixDocument. With `periods` (one key period number per key, as
    rotation.py counts them), a ContentKeyPeriod @index and a usage rule per key."""
    if periods is not None and len(periods) != len(keys):
        raise CpixError("one period per key")
    ck = tuple(CpixKey.from_content_key(k, scheme) for k in keys)
    kp: tuple[KeyPeriod, ...] = ()
    rules: tuple[UsageRule, ...] = ()
    if periods is not None:
        uniq = sorted(set(periods))
        kp = tuple(KeyPeriod(f"keyPeriod_{p}", p) for p in uniq)
        rules = tuple(UsageRule(k.kid, (f"keyPeriod_{p}",)) for k, p in zip(keys, periods))
    return CpixDocument(ck, tuple(drm_systems), kp, rules, content_id, CPIX_VERSION)


# --- keys for the packager ----------------------------------------------------------

TRACK_KINDS = ("video", "audio")


def _rule_kinds(rule: UsageRule) -> tuple[str, ...]:
    kinds = tuple(k for k, on in (("video", rule.video), ("audio", rule.audio)) if on)
    if not kinds and rule.intended_track_type:
        t = rule.intended_track_type.lower()
        kinds = tuple(k for k in TRACK_KINDS if t.startswith(k))
    return kinds or TRACK_KINDS


def key_periods(doc: CpixDocument) -> tuple[dict[str, CpixKey], ...]:
    """The document's keys as our key periods, in order: period i -> {"video": key, "audio": key}.

    With ContentKeyPeriods referenced by usage rules, one period per ContentKeyPeriod (by
    @index, else document order), each track kind taking the key its rule filters for
    (VideoFilter/AudioFilter; a rule with neither covers both). Without them, one period
    per ContentKey in document order. `CpixError` when a key has no clear value (keys
    encrypted for a DeliveryData recipient need that recipient's private key) or a period
    has no key.
    """
    encrypted = [k for k in doc.keys if k.value is None]
    if encrypted:
        raise CpixError(
            f"content key {encrypted[0].kid_uuid} is encrypted for a recipient (pskc:EncryptedValue); "
            "flowcast reads only pskc:PlainValue keys: ask the DRM service for clear keys over an "
            "authenticated, encrypted channel"
        )
    if not doc.keys:
        raise CpixError("no ContentKey in the document")
    by_kid = {k.kid: k for k in doc.keys}
    used = {pid for r in doc.usage_rules for pid in r.period_ids}
    periods = [p for p in doc.periods if p.id in used]
    if periods:
        order = sorted(range(len(periods)), key=lambda i: (periods[i].index is None, periods[i].index or 0, i))
        out: list[dict[str, CpixKey]] = []
        for i in order:
            p = periods[i]
            keys: dict[str, CpixKey] = {}
            for rule in doc.usage_rules:
                if p.id in rule.period_ids:
                    if rule.kid not in by_kid:
                        raise CpixError(f"ContentKeyUsageRule names KID {UUID(bytes=rule.kid)}, which has no ContentKey")
                    for kind in _rule_kinds(rule):
                        keys.setdefault(kind, by_kid[rule.kid])
            if not keys:
                raise CpixError(f"ContentKeyPeriod {p.id!r} has no content key")
            for kind in TRACK_KINDS:  # a period keyed for one kind only: that key for both
                keys.setdefault(kind, next(iter(keys.values())))
            out.append(keys)
        return tuple(out)
    return tuple({kind: k for kind in TRACK_KINDS} for k in doc.keys)


def cpix_for_store(store: object, stream: str, scheme: str | None = None) -> CpixDocument:
    """Every key of `stream` in a `keystore.KeyStore` as a CPIX document, one ContentKeyPeriod
    per key period (for sending our keys to a DRM service)."""
    entries = store.entries(stream)  # type: ignore[attr-defined]
    if not entries:
        raise CpixError(f"no content keys for stream {stream!r}")
    keys = [store.get(e.kid) for e in entries]  # type: ignore[attr-defined]
    return cpix_for_keys(keys, scheme, periods=[e.period for e in entries], content_id=stream)
