"""Epic's Pixel Streaming data-channel protocol (input and control), sans-I/O.

Every message is one binary data-channel message: a uint8 message id, then the fields of
that message's *structure*, little-endian; a `string` is a uint16 length followed by that
many UTF-16 code units. The ids and structures are the streamer's to declare: on channel
open the streamer sends a `Protocol` message (id 255, then UTF-16LE JSON
`{"Direction": 0, "<Name>": {"id": n, "structure": [...]}, ...}`) and Epic's frontend
sends nothing it was not told about. We declare the layout Epic's frontend library ships
as its default (`UeInstanceMessage/StreamMessageController`, `populateDefaultProtocol`),
so a real Unreal Engine instance and our simulated one look the same to the page.

Streamer -> player messages are a uint8 id followed by UTF-16LE text (JSON for
`LatencyTest`, `InitialSettings`, `DataChannelLatencyTest`), again as Epic's library reads
them (`TextDecoder('utf-16').decode(message.slice(1))`).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

TO_STREAMER: dict[str, tuple[int, tuple[str, ...]]] = {
    "IFrameRequest": (0, ()),
    "RequestQualityControl": (1, ()),
    "FpsRequest": (2, ()),
    "AverageBitrateRequest": (3, ()),
    "StartStreaming": (4, ()),
    "StopStreaming": (5, ()),
    "LatencyTest": (6, ("string",)),
    "RequestInitialSettings": (7, ()),
    "TestEcho": (8, ()),
    "DataChannelLatencyTest": (9, ()),
    "UIInteraction": (50, ("string",)),
    "Command": (51, ("string",)),
    "TextboxEntry": (52, ("string",)),
    "KeyDown": (60, ("uint8", "uint8")),
    "KeyUp": (61, ("uint8",)),
    "KeyPress": (62, ("uint16",)),
    "MouseEnter": (70, ()),
    "MouseLeave": (71, ()),
    "MouseDown": (72, ("uint8", "uint16", "uint16")),
    "MouseUp": (73, ("uint8", "uint16", "uint16")),
    "MouseMove": (74, ("uint16", "uint16", "int16", "int16")),
    "MouseWheel": (75, ("int16", "uint16", "uint16")),
    "MouseDouble": (76, ("uint8", "uint16", "uint16")),
    "TouchStart": (80, ("uint8", "uint16", "uint16", "uint8", "uint8", "uint8")),
    "TouchEnd": (81, ("uint8", "uint16", "uint16", "uint8", "uint8", "uint8")),
    "TouchMove": (82, ("uint8", "uint16", "uint16", "uint8", "uint8", "uint8")),
    "GamepadButtonPressed": (90, ("uint8", "uint8", "uint8")),
    "GamepadButtonReleased": (91, ("uint8", "uint8", "uint8")),
    "GamepadAnalog": (92, ("uint8", "uint8", "double")),
    "GamepadConnected": (93, ()),
    "GamepadDisconnected": (94, ("uint8",)),
}

# Field names for the events we decode (Epic's structures carry only types).
FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "LatencyTest": ("payload",),
    "UIInteraction": ("descriptor",),
    "Command": ("descriptor",),
    "TextboxEntry": ("text",),
    "KeyDown": ("keyCode", "repeat"),
    "KeyUp": ("keyCode",),
    "KeyPress": ("charCode",),
    "MouseDown": ("button", "x", "y"),
    "MouseUp": ("button", "x", "y"),
    "MouseMove": ("x", "y", "deltaX", "deltaY"),
    "MouseWheel": ("delta", "x", "y"),
    "MouseDouble": ("button", "x", "y"),
    "TouchStart": ("count", "x", "y", "finger", "force", "valid"),
    "TouchEnd": ("count", "x", "y", "finger", "force", "valid"),
    "TouchMove": ("count", "x", "y", "finger", "force", "valid"),
    "GamepadButtonPressed": ("controller", "button", "repeat"),
    "GamepadButtonReleased": ("controller", "button", "repeat"),
    "GamepadAnalog": ("controller", "axis", "value"),
    "GamepadDisconnected": ("controller",),
}

FROM_STREAMER = {
    "QualityControlOwnership": 0,
    "Response": 1,
    "Command": 2,
    "FreezeFrame": 3,
    "UnfreezeFrame": 4,
    "VideoEncoderAvgQP": 5,
    "LatencyTest": 6,
    "InitialSettings": 7,
    "TestEcho": 11,
    "InputControlOwnership": 12,
    "DataChannelLatencyTest": 14,
    "Protocol": 255,
}

_BY_ID = {mid: (name, structure) for name, (mid, structure) in TO_STREAMER.items()}
_FIXED = {"uint8": "<B", "uint16": "<H", "int16": "<h", "float": "<f", "double": "<d"}

# Coordinates travel as uint16 normalised to the video size (Epic's InputCoordTranslator).
COORD_MAX = 65535


class BadInputMessage(ValueError):
    """A data-channel message that does not match the declared protocol."""


@dataclass(frozen=True, slots=True)
class InputEvent:
    name: str
    fields: dict[str, Any]


# In Epic's default table, but the 1.3 frontend registers no sender for it and logs an
# error for every declared message it cannot send; declaring it buys nothing.
UNDECLARED = frozenset({"DataChannelLatencyTest"})


def protocol_message() -> bytes:
    """The `Protocol` message a streamer sends when the data channel opens."""
    body: dict[str, Any] = {"Direction": 0}
    for name, (mid, structure) in TO_STREAMER.items():
        if name in UNDECLARED:
            continue
        body[name] = {"id": mid, "structure": list(structure)}
    return bytes([FROM_STREAMER["Protocol"]]) + json.dumps(body).encode("utf-16-le")


def from_streamer(name: str, text: str = "") -> bytes:
    """A streamer -> player message: id + UTF-16LE text (JSON for the structured ones)."""
    return bytes([FROM_STREAMER[name]]) + text.encode("utf-16-le")


def decode(data: bytes) -> InputEvent:
    """One to-streamer data-channel message -> an event, or `BadInputMessage`."""
    if not data:
        raise BadInputMessage("empty message")
    entry = _BY_ID.get(data[0])
    if entry is None:
        raise BadInputMessage(f"unknown message id {data[0]}")
    name, structure = entry
    names = FIELD_NAMES.get(name, ())
    values: list[Any] = []
    offset = 1
    for kind in structure:
        if kind == "string":
            if offset + 2 > len(data):
                raise BadInputMessage(f"{name}: truncated string length")
            (length,) = struct.unpack_from("<H", data, offset)
            offset += 2
            end = offset + 2 * length
            if end > len(data):
                raise BadInputMessage(f"{name}: string of {length} code units runs past the message")
            values.append(data[offset:end].decode("utf-16-le", "replace"))
            offset = end
        else:
            fmt = _FIXED[kind]
            size = struct.calcsize(fmt)
            if offset + size > len(data):
                raise BadInputMessage(f"{name}: truncated {kind} field")
            values.append(struct.unpack_from(fmt, data, offset)[0])
            offset += size
    if offset != len(data):
        raise BadInputMessage(f"{name}: {len(data) - offset} trailing bytes")
    return InputEvent(name, dict(zip(names, values)) if names else {})


def encode(name: str, *values: Any) -> bytes:
    """The bytes Epic's frontend sends for `name` with these values (for tests and tools)."""
    mid, structure = TO_STREAMER[name]
    if len(values) != len(structure):
        raise ValueError(f"{name} takes {len(structure)} values, got {len(values)}")
    out = bytearray([mid])
    for kind, value in zip(structure, values):
        if kind == "string":
            out += struct.pack("<H", len(value.encode("utf-16-le")) // 2) + value.encode("utf-16-le")
        else:
            out += struct.pack(_FIXED[kind], value)
    return bytes(out)
