"""Sans-I/O RTMP: AMF0 and chunk stream round trips, and the publish gate's decisions."""

from __future__ import annotations

import math
import struct

from hypothesis import given
from hypothesis import strategies as st

from flowcast.transcode import rtmp

amf_scalars = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=40),
)
amf_values = st.recursive(
    amf_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=4)),
    max_leaves=12,
)


@given(st.lists(amf_values, max_size=5))
def test_amf0_round_trip(values: list) -> None:
    assert rtmp.amf0_decode(rtmp.amf0_encode(*values)) == values


@given(st.binary(max_size=64))
def test_amf0_decoder_fails_cleanly(data: bytes) -> None:
    try:
        rtmp.amf0_decode(data)
    except rtmp.ProtocolError:
        pass


messages = st.builds(
    rtmp.Message,
    type_id=st.sampled_from([rtmp.AUDIO, rtmp.VIDEO, rtmp.COMMAND_AMF0, rtmp.DATA_AMF0]),
    payload=st.binary(max_size=3000),
    stream_id=st.integers(0, 5),
    timestamp=st.integers(0, 2**32 - 1),
    csid=st.integers(3, 400),
)


@given(st.lists(messages, min_size=1, max_size=6), st.integers(1, 5000), st.integers(1, 700))
def test_chunk_stream_round_trip(msgs: list[rtmp.Message], chunk_size: int, split: int) -> None:
    writer = rtmp.ChunkWriter()
    wire = writer.write(rtmp.control(rtmp.SET_CHUNK_SIZE, struct.pack(">I", chunk_size)))
    wire += b"".join(writer.write(m) for m in msgs)
    reader = rtmp.ChunkReader()
    got = []
    for i in range(0, len(wire), split):  # arbitrary TCP segmentation
        got += reader.feed(wire[i : i + split])
    assert got[1:] == msgs
    assert reader.chunk_size == chunk_size


def _publisher(app: str, key: str) -> bytes:
    w = rtmp.ChunkWriter()
    c0c1 = rtmp.handshake_c0c1()
    c2 = b"\0" * rtmp.HANDSHAKE_SIZE
    body = w.write(rtmp.command("connect", 1.0, {"app": app, "type": "nonprivate", "tcUrl": f"rtmp://h/{app}"}))
    body += w.write(rtmp.command("releaseStream", 2.0, None, key))
    body += w.write(rtmp.command("createStream", 3.0, None))
    body += w.write(rtmp.command("publish", 4.0, None, key, "live", stream_id=1))
    return c0c1 + c2 + body


def _run(gate: rtmp.PublishGate, wire: bytes) -> list:
    events = []
    for i in range(0, len(wire), 100):
        events += gate.receive(wire[i : i + 100])
    return events


def test_gate_accepts_right_key_and_records_for_replay() -> None:
    wire = _publisher("live", "s3cret")
    gate = rtmp.PublishGate("live", "s3cret")
    events = _run(gate, wire)
    assert events[-1] == rtmp.Accepted("live", "s3cret")
    sent = b"".join(e.data for e in events if isinstance(e, rtmp.Send))
    assert sent[0] == 3 and len(sent) > 1 + 2 * rtmp.HANDSHAKE_SIZE
    replies = rtmp.ChunkReader().feed(sent[1 + 2 * rtmp.HANDSHAKE_SIZE :])
    results = [rtmp.parse_command(m) for m in replies if m.type_id == rtmp.COMMAND_AMF0]
    assert results[0][0] == "_result" and results[0][2][1]["code"] == "NetConnection.Connect.Success"
    assert results[1] == ("_result", 3.0, [None, 1.0])
    assert bytes(gate.recorded) == wire[1 + 2 * rtmp.HANDSHAKE_SIZE :]
    assert gate.answered == {1.0, 3.0}


def test_gate_refuses_wrong_key_at_first_mention() -> None:
    gate = rtmp.PublishGate("live", "s3cret")
    events = _run(gate, _publisher("live", "guess"))
    refused = [e for e in events if isinstance(e, rtmp.Refused)]
    assert refused == [rtmp.Refused("wrong stream key")]
    assert not any(isinstance(e, rtmp.Accepted) for e in events)


def test_gate_refuses_wrong_app() -> None:
    gate = rtmp.PublishGate("live", "s3cret")
    events = _run(gate, _publisher("other", "s3cret"))
    assert any(isinstance(e, rtmp.Refused) and "application" in e.reason for e in events)


def test_gate_refuses_non_rtmp() -> None:
    gate = rtmp.PublishGate("live", "k")
    events = gate.receive(b"GET / HTTP/1.1\r\n" + b"x" * 2000)
    assert isinstance(events[0], rtmp.Refused)


def test_extended_timestamp() -> None:
    msg = rtmp.Message(rtmp.VIDEO, b"x" * 300, 1, 0x1234567, 6)
    assert rtmp.ChunkReader().feed(rtmp.ChunkWriter().write(msg)) == [msg]
    assert math.isclose(rtmp.amf0_decode(rtmp.amf0_encode(1.5))[0], 1.5)
