"""Encryption signalling for HLS playlists and DASH MPDs, per key and DRM system.

A `KeySignal` says which key (KID, scheme) and which DRM systems (pssh, license URL) a
rendition uses; this module turns it into EXT-X-KEY / EXT-X-SESSION-KEY attribute lists
(for `package.hls`) and ContentProtection descriptors (for `package.dash`). Pure functions:
the packager renders them once per key change.

HLS, what hls.js 1.7 accepts (src/loader/level-key.ts, utils/mediakeys-helper.ts):
- METHOD must be SAMPLE-AES, SAMPLE-AES-CTR or SAMPLE-AES-CENC with an EME KEYFORMAT;
  we write SAMPLE-AES for cbcs and SAMPLE-AES-CTR for cenc (rfc8216bis 4.4.4.4).
- ClearKey, KEYFORMAT="org.w3.clearkey": hls.js takes the KID from the first 16 bytes of a
  data: URI (or from KEYID=0x...) and does NOT read a pssh from it; the session's init data
  comes from the init segment's Common pssh ("encrypted" event). So the URI carries the
  bare KID: URI="data:text/plain;base64,<base64 KID>", plus KEYID=0x<hex>. The license
  URL is not in the playlist: hls.js takes it from `drmSystems['org.w3.clearkey'].licenseUrl`
  with `emeEnabled: true`.
- Widevine, KEYFORMAT="urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed": URI is a data: URI
  of the whole Widevine pssh box (hls.js sets it as init data and reads the KID from it).
- PlayReady, KEYFORMAT="com.microsoft.playready": URI is a data: URI of the PlayReady
  Object (the pssh *data*); hls.js wraps it in a pssh itself.
- FairPlay, KEYFORMAT="com.apple.streamingkeydelivery": URI="skd://<KID hex or id>";
  cbcs only.

DASH (DASH-IF IOP 4.3 7.6, 23009-1 5.8.4.1): the mp4protection descriptor with value
cenc|cbcs and cenc:default_KID, then one descriptor per system. ClearKey gets two:
- the DASH-IF ClearKey scheme urn:uuid:e2719d58-... value "ClearKey1.0" with
  dashif:Laurl (https://dashif.org/CPS) and clearkey:Laurl Lic_type="EME-1.0"
  (http://dashif.org/guidelines/clearKey). dash.js 5 and Shaka 5 read the licence URL only
  from a descriptor with this scheme, Shaka only with the capital-L spelling. It carries
  NO cenc:pssh: dash.js 5.2 hands ClearKey init data to generateRequest() as "keyids",
  so a pssh there fails with a TypeError (seen in Chromium); without one, dash.js builds
  {"kids":[default_KID]} itself.
- the W3C Common system urn:uuid:1077efec-... with the Common pssh (version 1, KIDs) in
  cenc:pssh, for players that take init data from the MPD (and the same bytes as in moov).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from flowcast.package.dash import MP4PROTECTION_SCHEME, ContentProtection
from flowcast.package.hls import HlsKey

from .cenc import ProtectError, Scheme
from .pssh import (
    COMMON_SYSTEM_ID,
    FAIRPLAY_SYSTEM_ID,
    PLAYREADY_SYSTEM_ID,
    WIDEVINE_SYSTEM_ID,
    clearkey_pssh,
    parse_pssh,
)

__all__ = [
    "CLEARKEY_DASH_SYSTEM_ID",
    "KEYFORMATS",
    "KeySignal",
    "SystemSignal",
    "clearkey_signal",
    "dash_content_protection",
    "hls_key",
    "hls_key_attributes",
    "hls_key_lines",
    "hls_key_tags",
    "hls_method",
    "kid_uuid",
    "pssh_boxes",
]

# DASH-IF IOP 7.6.2.4: the ClearKey ContentProtection scheme (not a pssh SystemID).
CLEARKEY_DASH_SYSTEM_ID = UUID("e2719d58-a985-b3c9-781a-b030af78d30e")

KEYFORMATS: dict[UUID, str] = {
    COMMON_SYSTEM_ID: "org.w3.clearkey",
    WIDEVINE_SYSTEM_ID: f"urn:uuid:{WIDEVINE_SYSTEM_ID}",
    PLAYREADY_SYSTEM_ID: "com.microsoft.playready",
    FAIRPLAY_SYSTEM_ID: "com.apple.streamingkeydelivery",
}


def kid_uuid(kid: bytes) -> str:
    """A KID as cenc:default_KID / CPIX write it: 8-4-4-4-12 lower-case hex."""
    if len(kid) != 16:
        raise ProtectError("KID must be 16 bytes")
    return str(UUID(bytes=bytes(kid)))


def _quoted_ok(value: str, what: str) -> str:
    # A quoted-string cannot hold '"', CR or LF (rfc8216bis 4.2).
    if any(c in value for c in '"\r\n'):
        raise ProtectError(f"{what} cannot be written as an HLS quoted-string")
    return value


def _data_uri(data: bytes, charset: str | None = None) -> str:
    media = "text/plain" + (f";charset={charset}" if charset else "")
    return f"data:{media};base64,{base64.b64encode(data).decode('ascii')}"


@dataclass(frozen=True, slots=True)
class SystemSignal:
    """One DRM system for a key.

    `pssh`: the whole pssh box; None for the Common system means "build the ClearKey pssh
    from the KIDs". `license_url`: where the player gets licenses (ClearKey: our license
    endpoint). `key_uri`: an explicit HLS URI (FairPlay skd://...); None derives one.
    """

    system_id: UUID
    pssh: bytes | None = None
    license_url: str | None = None
    key_uri: str | None = None


@dataclass(frozen=True, slots=True)
class KeySignal:
    """The signalling for one content key. `announce_kids`: further KIDs named in the
    ClearKey pssh (key rotation: the next period's KID, see rotation.py)."""

    scheme: Scheme
    kid: bytes
    systems: tuple[SystemSignal, ...]
    announce_kids: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if self.scheme not in ("cenc", "cbcs"):
            raise ProtectError(f"unknown scheme {self.scheme!r}")
        if len(self.kid) != 16 or any(len(k) != 16 for k in self.announce_kids):
            raise ProtectError("KIDs must be 16 bytes")
        if not self.systems:
            raise ProtectError("at least one DRM system")

    @property
    def kids(self) -> tuple[bytes, ...]:
        return (self.kid,) + tuple(k for k in self.announce_kids if k != self.kid)

    def pssh_for(self, system: SystemSignal) -> bytes | None:
        if system.pssh is not None:
            return system.pssh
        if system.system_id == COMMON_SYSTEM_ID:
            return clearkey_pssh(self.kids)
        return None


def clearkey_signal(
    kid: bytes,
    scheme: Scheme = "cbcs",
    license_url: str | None = None,
    *,
    announce_kids: Sequence[bytes] = (),
    extra_systems: Sequence[SystemSignal] = (),
) -> KeySignal:
    """ClearKey (plus any other systems) for one key."""
    return KeySignal(
        scheme,
        bytes(kid),
        (SystemSignal(COMMON_SYSTEM_ID, license_url=license_url),) + tuple(extra_systems),
        tuple(bytes(k) for k in announce_kids),
    )


def hls_method(scheme: Scheme) -> str:
    """cbcs -> SAMPLE-AES, cenc -> SAMPLE-AES-CTR (rfc8216bis 4.4.4.4)."""
    if scheme == "cbcs":
        return "SAMPLE-AES"
    if scheme == "cenc":
        return "SAMPLE-AES-CTR"
    raise ProtectError(f"unknown scheme {scheme!r}")


def hls_key_attributes(signal: KeySignal, system: SystemSignal) -> str:
    """The attribute list of one EXT-X-KEY / EXT-X-SESSION-KEY for one DRM system."""
    sid = system.system_id
    keyformat = KEYFORMATS.get(sid)
    if keyformat is None:
        raise ProtectError(f"no HLS KEYFORMAT known for system {sid}")
    uri = system.key_uri
    if uri is None:
        if sid == COMMON_SYSTEM_ID:
            uri = _data_uri(signal.kid)  # hls.js: KID = first 16 bytes of the data URI
        elif sid == WIDEVINE_SYSTEM_ID:
            pssh = signal.pssh_for(system)
            if pssh is None:
                raise ProtectError("Widevine needs a pssh box")
            uri = _data_uri(pssh)
        elif sid == PLAYREADY_SYSTEM_ID:
            pssh = signal.pssh_for(system)
            if pssh is None:
                raise ProtectError("PlayReady needs a pssh box")
            uri = _data_uri(parse_pssh(pssh[8:]).data, "UTF-16")
        else:  # FairPlay
            uri = f"skd://{signal.kid.hex()}"
    if sid == FAIRPLAY_SYSTEM_ID and signal.scheme != "cbcs":
        raise ProtectError("FairPlay needs cbcs")
    attrs = [
        f"METHOD={hls_method(signal.scheme)}",
        f'URI="{_quoted_ok(uri, "key URI")}"',
    ]
    if sid != FAIRPLAY_SYSTEM_ID:
        attrs.append(f"KEYID=0x{signal.kid.hex().upper()}")
    attrs += [f'KEYFORMAT="{keyformat}"', 'KEYFORMATVERSIONS="1"']
    return ",".join(attrs)


def hls_key_tags(signal: KeySignal) -> tuple[str, ...]:
    """One attribute list per system with an HLS KEYFORMAT (others are skipped)."""
    return tuple(hls_key_attributes(signal, s) for s in signal.systems if s.system_id in KEYFORMATS)


def pssh_boxes(signal: KeySignal) -> tuple[bytes, ...]:
    """The pssh boxes for the init segment's moov: one per system that has one (the Common
    one lists the announced KIDs too, so a CDM licenses the next period's key early)."""
    return tuple(b for b in (signal.pssh_for(s) for s in signal.systems) if b is not None)


def hls_key(signal: KeySignal, msn: int) -> HlsKey:
    """For MediaPlaylist.keys: this key in force from segment `msn` on."""
    return HlsKey(msn, hls_key_tags(signal))


def hls_key_lines(signal: KeySignal, *, session: bool = False) -> tuple[str, ...]:
    """Whole tag lines: EXT-X-KEY (media playlist) or EXT-X-SESSION-KEY (multivariant)."""
    tag = "#EXT-X-SESSION-KEY" if session else "#EXT-X-KEY"
    return tuple(f"{tag}:{a}" for a in hls_key_tags(signal))


def dash_content_protection(signal: KeySignal) -> tuple[ContentProtection, ...]:
    """mp4protection first, then one descriptor per DRM system (DASH-IF IOP 7.6.2)."""
    out = [ContentProtection(MP4PROTECTION_SCHEME, signal.scheme, kid_uuid(signal.kid))]
    for system in signal.systems:
        pssh = signal.pssh_for(system)
        pssh_b64 = base64.b64encode(pssh).decode("ascii") if pssh is not None else None
        if system.system_id == COMMON_SYSTEM_ID:
            out.append(
                ContentProtection(
                    f"urn:uuid:{CLEARKEY_DASH_SYSTEM_ID}",
                    "ClearKey1.0",
                    laurl=system.license_url,
                    clearkey_laurl=system.license_url,
                )
            )
            out.append(ContentProtection(f"urn:uuid:{COMMON_SYSTEM_ID}", pssh=pssh_b64))
        elif system.system_id == FAIRPLAY_SYSTEM_ID:
            continue  # FairPlay is HLS-only
        else:
            value = {WIDEVINE_SYSTEM_ID: "Widevine", PLAYREADY_SYSTEM_ID: "MSPR 2.0"}.get(system.system_id)
            pro = None
            if system.system_id == PLAYREADY_SYSTEM_ID and pssh is not None:
                # PlayReady DASH guidance: the PlayReady Object in mspr:pro beside cenc:pssh.
                pro = base64.b64encode(parse_pssh(pssh[8:]).data).decode("ascii")
            out.append(
                ContentProtection(
                    f"urn:uuid:{system.system_id}", value, pssh=pssh_b64, laurl=system.license_url, pro=pro
                )
            )
    return tuple(out)
