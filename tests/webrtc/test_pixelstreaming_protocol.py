"""Pixel Streaming signalling and data-channel protocol, sans-I/O: message validation,
relaying between roles, player limit, rate limit, oversize and the input wire format,
checked against the definitions shipped in Epic's own npm libraries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowcast.webrtc.pixelstreaming import input as psinput
from flowcast.webrtc.pixelstreaming.app import IceConfig
from flowcast.webrtc.pixelstreaming.messages import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_POLICY,
    CLOSE_STREAMER_GONE,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED_DATA,
    SCHEMA,
    InvalidMessage,
    MalformedMessage,
    MessageTooLarge,
    ProtocolViolation,
    RateLimit,
    parse_message,
)
from flowcast.webrtc.pixelstreaming.signalling import Close, HubLimits, Send, SignallingHub

WEB = Path(__file__).resolve().parents[2] / "src" / "flowcast" / "web"


def j(**msg) -> str:
    return json.dumps(msg)


def sent(actions, conn):
    return [a.message for a in actions if isinstance(a, Send) and a.conn == conn]


def closes(actions):
    return {a.conn: (a.code, a.reason) for a in actions if isinstance(a, Close)}


# ---- messages -------------------------------------------------------------------------


def test_parse_keeps_schema_fields_and_drops_unknown_ones():
    msg = parse_message(j(type="answer", sdp="v=0", minBitrateBps=100000, extra="x", playerId="3"), max_bytes=4096)
    assert msg == {"type": "answer", "sdp": "v=0", "minBitrateBps": 100000, "playerId": "3"}


@pytest.mark.parametrize(
    "text, exc, code, words",
    [
        ("{not json", MalformedMessage, CLOSE_INVALID_PAYLOAD, "JSON"),
        ("[1, 2]", MalformedMessage, CLOSE_INVALID_PAYLOAD, "object"),
        (j(sdp="v=0"), InvalidMessage, CLOSE_POLICY, "'type'"),
        (j(type="hack"), InvalidMessage, CLOSE_POLICY, "unknown message type 'hack'"),
        (j(type="subscribe"), InvalidMessage, CLOSE_POLICY, "subscribe: required field 'streamerId'"),
        (j(type="ping", time="soon"), InvalidMessage, CLOSE_POLICY, "ping: field 'time' must be of type int"),
        (j(type="playerConnected", playerId="1", dataChannel=1, sfu=False), InvalidMessage, CLOSE_POLICY, "'dataChannel'"),
        (j(type="iceCandidate", candidate={"sdpMid": "0"}), InvalidMessage, CLOSE_POLICY, "candidate.candidate"),
    ],
)
def test_parse_refusals_name_the_field_and_close_code(text, exc, code, words):
    with pytest.raises(exc) as info:
        parse_message(text, max_bytes=4096)
    assert info.value.code == code
    assert words in info.value.reason


def test_binary_and_oversized_frames():
    with pytest.raises(ProtocolViolation) as info:
        parse_message(b"\x00\x01", max_bytes=4096)
    assert info.value.code == CLOSE_UNSUPPORTED_DATA
    with pytest.raises(MessageTooLarge) as info:
        parse_message(j(type="offer", sdp="a" * 5000), max_bytes=4096)
    assert info.value.code == CLOSE_TOO_BIG and "exceeds the limit of 4096 bytes" in info.value.reason


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=64), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["type", "sdp", "time", "playerId", "candidate", "ids", "x"]), inner, max_size=5),
    max_leaves=12,
).map(json.dumps)))
def test_parse_fails_only_with_protocol_violations(data):
    try:
        msg = parse_message(data, max_bytes=1024)
    except ProtocolViolation as exc:
        assert 1000 <= exc.code < 5000 and len(exc.reason.encode()) <= 123
    else:
        assert msg["type"] in SCHEMA


# ---- the hub ----------------------------------------------------------------------------


def hub_with_streamer(limits=HubLimits(), options=None):
    hub = SignallingHub(options, limits)
    s, greet = hub.connect("streamer", now=0.0)
    assert [m["type"] for m in sent(greet, s)] == ["config", "identify"]
    acts = hub.receive(s, j(type="endpointId", id="Game"), 0.0)
    assert sent(acts, s) == [{"type": "endpointIdConfirm", "committedId": "Game"}]
    return hub, s


def player(hub, now=0.0, grant=None, streamer="Game"):
    p, greet = hub.connect("player", now=now, grant=grant)
    assert sent(greet, p)[0]["type"] == "config"
    acts = hub.receive(p, j(type="subscribe", streamerId=streamer), now)
    return p, acts


def test_config_carries_turn_rest_credentials():
    ice = IceConfig(stun_urls=("stun:127.0.0.1:3478",), turn_urls=("turn:127.0.0.1:3478?transport=udp",), turn_secret="s3cret")
    hub = SignallingHub(ice.peer_connection_options)
    p, greet = hub.connect("player", now=0.0)
    servers = sent(greet, p)[0]["peerConnectionOptions"]["iceServers"]
    assert servers[0] == {"urls": ["stun:127.0.0.1:3478"]}
    turn = servers[1]
    expiry, user = turn["username"].split(":", 1)
    assert int(expiry) > 0 and user.startswith("ps-player-")
    expected = base64.b64encode(hmac.new(b"s3cret", turn["username"].encode(), hashlib.sha1).digest()).decode()
    assert turn["credential"] == expected
    assert "s3cret" not in json.dumps(sent(greet, p))


def test_negotiation_is_relayed_with_player_ids():
    hub, s = hub_with_streamer()
    p1, acts = player(hub)
    assert sent(acts, s) == [{"type": "playerConnected", "playerId": "1", "dataChannel": True, "sfu": False}]
    assert sent(acts, p1) == [{"type": "playerCount", "count": 1}]
    p2, acts = player(hub)
    assert sent(acts, p1) == [{"type": "playerCount", "count": 2}] and sent(acts, p2) == [{"type": "playerCount", "count": 2}]
    assert hub.receive(p1, j(type="listStreamers"), 0.1) == [Send(p1, {"type": "streamerList", "ids": ["Game"]})]

    # streamer -> the addressed player only
    acts = hub.receive(s, j(type="offer", sdp="v=0 offer", playerId="2"), 0.2)
    assert acts == [Send(p2, {"type": "offer", "sdp": "v=0 offer", "playerId": "2"})]
    cand = {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
    assert hub.receive(s, j(type="iceCandidate", candidate=cand, playerId="1"), 0.2) == [Send(p1, {"type": "iceCandidate", "candidate": cand, "playerId": "1"})]

    # player -> streamer, stamped with the sender's id even if it claims another
    acts = hub.receive(p2, j(type="answer", sdp="v=0 answer", playerId="1", minBitrateBps=1, maxBitrateBps=2), 0.3)
    assert acts == [Send(s, {"type": "answer", "sdp": "v=0 answer", "playerId": "2", "minBitrateBps": 1, "maxBitrateBps": 2})]
    assert hub.receive(p1, j(type="dataChannelRequest"), 0.3) == [Send(s, {"type": "dataChannelRequest", "playerId": "1"})]
    assert hub.receive(p1, j(type="layerPreference", spatialLayer=1, temporalLayer=0), 0.3) == [
        Send(s, {"type": "layerPreference", "spatialLayer": 1, "temporalLayer": 0, "playerId": "1"})
    ]
    assert hub.receive(p1, j(type="ping", time=42), 0.3) == [Send(p1, {"type": "pong", "time": 42})]

    acts = hub.receive(p1, j(type="unsubscribe"), 0.4)
    assert sent(acts, s) == [{"type": "playerDisconnected", "playerId": "1"}]
    assert sent(acts, p2) == [{"type": "playerCount", "count": 1}]
    assert hub.receive(s, j(type="offer", sdp="x", playerId="1"), 0.5) == []  # no longer its player


def test_duplicate_streamer_ids_get_a_suffix_and_unknown_streamer_fails():
    hub, _ = hub_with_streamer()
    s2, _ = hub.connect("streamer", now=0.0)
    assert sent(hub.receive(s2, j(type="endpointId", id="Game"), 0.0), s2) == [{"type": "endpointIdConfirm", "committedId": "Game1"}]
    p, acts = player(hub, streamer="Nope")
    assert sent(acts, p) == [{"type": "subscribeFailed", "message": "Streamer Nope does not exist."}]


def test_streamer_must_identify_before_relaying():
    hub = SignallingHub()
    s, _ = hub.connect("streamer", now=0.0)
    acts = hub.receive(s, j(type="offer", sdp="x", playerId="1"), 0.0)
    assert closes(acts) == {s: (CLOSE_POLICY, "offer: a streamer must send endpointId first")}


def test_player_limit():
    hub, s = hub_with_streamer(HubLimits(max_players_per_streamer=2))
    player(hub)
    player(hub)
    p3, acts = player(hub)
    assert sent(acts, p3) == [{"type": "subscribeFailed", "message": "Streamer Game is full. Max players = 2."}]
    assert sent(acts, s) == []
    assert hub.player_count("Game") == 2


def test_grant_refusal_is_subscribe_failed():
    hub, s = hub_with_streamer()
    p, acts = player(hub, grant=lambda sid: "Forbidden: your token does not grant streamer Game")
    assert sent(acts, p) == [{"type": "subscribeFailed", "message": "Forbidden: your token does not grant streamer Game"}]
    assert sent(acts, s) == []


def test_flooding_player_is_cut_off_and_others_are_unaffected():
    hub, s = hub_with_streamer(HubLimits(rate=RateLimit(per_second=10, burst=20)))
    good, _ = player(hub)
    bad, _ = player(hub)
    cut = None
    for i in range(100):
        acts = hub.receive(bad, j(type="ping", time=i), 0.5 + i * 0.001)
        if closes(acts):
            cut = (i, closes(acts), acts)
            break
    assert cut is not None, "the flood was never cut off"
    i, closed, acts = cut
    assert 18 <= i <= 21  # burst (20, one message used by subscribe) then refusal
    assert closed == {bad: (CLOSE_POLICY, "rate limit exceeded (10 messages/s, burst 20)")}
    assert sent(acts, s) == [{"type": "playerDisconnected", "playerId": "2"}]
    assert sent(acts, good) == [{"type": "playerCount", "count": 1}]
    assert hub.receive(bad, j(type="ping", time=1), 1.0) == []  # gone for good
    # the well-behaved player keeps negotiating at its own pace
    for k in range(30):
        assert hub.receive(good, j(type="ping", time=k), 1.0 + k * 0.2) == [Send(good, {"type": "pong", "time": k})]
    assert hub.receive(s, j(type="offer", sdp="v=0", playerId="1"), 7.0) == [Send(good, {"type": "offer", "sdp": "v=0", "playerId": "1"})]


def test_oversized_and_malformed_messages_close_only_their_sender():
    hub, s = hub_with_streamer(HubLimits(max_message_bytes=1000))
    good, _ = player(hub)
    big, _ = player(hub)
    junk, _ = player(hub)
    acts = hub.receive(big, j(type="answer", sdp="x" * 2000), 1.0)
    assert closes(acts) == {big: (CLOSE_TOO_BIG, "message of 2029 bytes exceeds the limit of 1000 bytes")}
    acts = hub.receive(junk, "\x00garbage", 1.0)
    assert closes(acts) == {junk: (CLOSE_INVALID_PAYLOAD, "message is not valid JSON")}
    assert hub.player_count("Game") == 1
    assert hub.receive(good, j(type="answer", sdp="v=0"), 1.1) == [Send(s, {"type": "answer", "sdp": "v=0", "playerId": "1"})]


def test_role_violations_close_the_sender():
    hub, s = hub_with_streamer()
    p, _ = player(hub)
    acts = hub.receive(p, j(type="playerConnected", playerId="9", dataChannel=True, sfu=False), 0.1)
    assert closes(acts) == {p: (CLOSE_POLICY, "playerConnected: not a message a player sends")}
    acts = hub.receive(s, j(type="offer", sdp="v=0"), 0.1)
    assert closes(acts) == {s: (CLOSE_POLICY, "offer: field 'playerId' is required from a streamer")}


def test_streamer_disconnect_tells_players_and_they_can_come_back():
    hub, s = hub_with_streamer()
    p1, _ = player(hub)
    p2, _ = player(hub)
    acts = hub.disconnect(s)
    for p in (p1, p2):
        assert sent(acts, p) == [{"type": "streamerDisconnected"}]
        assert closes(acts)[p] == (CLOSE_STREAMER_GONE, "streamer disconnected")
    assert hub.streamer_ids() == []
    # the streamer returns; a reconnecting player finds and subscribes to it again
    s2, _ = hub.connect("streamer", now=2.0)
    hub.receive(s2, j(type="endpointId", id="Game"), 2.0)
    p3, acts = player(hub, now=2.1)
    assert sent(acts, s2) == [{"type": "playerConnected", "playerId": "3", "dataChannel": True, "sfu": False}]


def test_streamer_can_kick_its_player():
    hub, s = hub_with_streamer()
    p, _ = player(hub)
    acts = hub.receive(s, j(type="disconnectPlayer", playerId="1", reason="AFK"), 0.1)
    assert closes(acts) == {p: (4001, "AFK")}
    assert sent(acts, s) == [{"type": "playerDisconnected", "playerId": "1"}]


def test_sfu_sits_between_streamer_and_players():
    hub, s = hub_with_streamer()
    sfu, greet = hub.connect("sfu", now=0.0)
    assert [m["type"] for m in sent(greet, sfu)] == ["config", "identify"]
    hub.receive(sfu, j(type="endpointId", id="SFU"), 0.0)
    acts = hub.receive(sfu, j(type="subscribe", streamerId="Game"), 0.0)
    sfu_pid = sent(acts, s)[0]["playerId"]
    assert sent(acts, s)[0] == {"type": "playerConnected", "playerId": sfu_pid, "dataChannel": True, "sfu": True}
    # streamer offers to the SFU (as a player); the SFU answers as that player
    assert hub.receive(s, j(type="offer", sdp="v=0", playerId=sfu_pid), 0.1) == [Send(sfu, {"type": "offer", "sdp": "v=0", "playerId": sfu_pid})]
    assert hub.receive(sfu, j(type="answer", sdp="v=0"), 0.1) == [Send(s, {"type": "answer", "sdp": "v=0", "playerId": sfu_pid})]
    acts = hub.receive(sfu, j(type="streamerDataChannels", sendStreamId=1, recvStreamId=2), 0.1)
    assert acts == [Send(s, {"type": "streamerDataChannels", "sendStreamId": 1, "recvStreamId": 2, "sfuId": sfu_pid, "playerId": sfu_pid})]
    # players subscribe to the SFU; its offers reach them without the playerId
    p, acts = player(hub, streamer="SFU")
    assert sent(acts, sfu)[0] == {"type": "playerConnected", "playerId": "2", "dataChannel": True, "sfu": False}
    assert hub.receive(sfu, j(type="offer", sdp="v=0 sfu", playerId="2", sfu=True), 0.2) == [Send(p, {"type": "offer", "sdp": "v=0 sfu", "sfu": True})]
    acts = hub.receive(sfu, j(type="peerDataChannels", playerId="2", sendStreamId=3, recvStreamId=4), 0.2)
    assert acts == [Send(p, {"type": "peerDataChannels", "sendStreamId": 3, "recvStreamId": 4})]
    assert hub.receive(s, j(type="layerPreference", spatialLayer=0, temporalLayer=0, playerId="2"), 0.3)[0].conn == sfu
    # the streamer leaves: the SFU is told and stays connected
    acts = hub.disconnect(s)
    assert sent(acts, sfu) == [{"type": "streamerDisconnected"}] and sfu not in closes(acts)


# ---- data-channel input protocol ------------------------------------------------------


def test_protocol_message_is_utf16_json_with_direction():
    data = psinput.protocol_message()
    assert data[0] == 255
    body = json.loads(data[1:].decode("utf-16-le"))
    assert body["Direction"] == 0
    assert body["KeyDown"] == {"id": 60, "structure": ["uint8", "uint8"]}
    assert body["TouchStart"] == {"id": 80, "structure": ["uint8", "uint16", "uint16", "uint8", "uint8", "uint8"]}


def test_decode_input_messages():
    assert psinput.decode(bytes([60, 65, 0])) == psinput.InputEvent("KeyDown", {"keyCode": 65, "repeat": 0})
    raw = bytes([74]) + struct.pack("<HHhh", 32768, 100, -5, 7)
    assert psinput.decode(raw) == psinput.InputEvent("MouseMove", {"x": 32768, "y": 100, "deltaX": -5, "deltaY": 7})
    ui = psinput.encode("UIInteraction", '{"hello":"wörld"}')
    assert psinput.decode(ui) == psinput.InputEvent("UIInteraction", {"descriptor": '{"hello":"wörld"}'})
    touch = psinput.encode("TouchStart", 1, 1000, 2000, 0, 255, 1)
    assert psinput.decode(touch).fields == {"count": 1, "x": 1000, "y": 2000, "finger": 0, "force": 255, "valid": 1}


@pytest.mark.parametrize(
    "data, words",
    [(b"", "empty"), (bytes([200]), "unknown message id 200"), (bytes([72, 0, 1]), "truncated uint16"),
     (bytes([60, 65, 0, 9]), "1 trailing bytes"), (bytes([50, 10, 0, 65, 0]), "runs past the message")],
)
def test_decode_refusals(data, words):
    with pytest.raises(psinput.BadInputMessage, match=words):
        psinput.decode(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40))
def test_decode_fuzz(data):
    try:
        event = psinput.decode(data)
    except psinput.BadInputMessage:
        return
    mid, structure = psinput.TO_STREAMER[event.name]
    assert data[0] == mid


# ---- conformance with Epic's npm libraries ----------------------------------------------

_DUMP_JS = r"""
const {StreamMessageController} = require('@epicgames-ps/lib-pixelstreamingfrontend-ue5.5/dist/cjs/UeInstanceMessage/StreamMessageController.js');
const {MessageRegistry} = require('@epicgames-ps/lib-pixelstreamingcommon-ue5.5');
const c = new StreamMessageController();
c.populateDefaultProtocol();
const registry = {};
for (const [name, t] of Object.entries(MessageRegistry)) {
  registry[name] = t.fields.filter(f => f.name !== 'type').map(f => [f.name, f.kind === 'message' ? 'object' : (f.repeat ? 'strings' : f.T), !f.opt]);
}
process.stdout.write(JSON.stringify({
  to: Object.fromEntries(c.toStreamerMessages),
  from: Object.fromEntries([...c.fromStreamerMessages].map(([k, v]) => [v, k])),
  registry,
}));
"""


@pytest.fixture(scope="module")
def epic_definitions():
    if shutil.which("node") is None or not (WEB / "node_modules" / "@epicgames-ps").is_dir():
        pytest.skip("needs node and `make web` (Epic's libraries from npm)")
    out = subprocess.run(["node", "-e", _DUMP_JS], cwd=WEB, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_input_layout_matches_epics_frontend(epic_definitions):
    theirs = {name: (m["id"], tuple(m["structure"])) for name, m in epic_definitions["to"].items()}
    assert theirs == psinput.TO_STREAMER
    for name, mid in psinput.FROM_STREAMER.items():
        assert epic_definitions["from"][name] == mid


def test_signalling_schema_matches_epics_registry(epic_definitions):
    scalar = {9: "string", 5: "int", 8: "bool"}  # protobuf scalar type numbers
    server_fills = {("layerPreference", "playerId"), ("streamerDataChannels", "sfuId")}
    for name, fields in epic_definitions["registry"].items():
        assert name in SCHEMA, name
        ours = SCHEMA[name]
        for fname, kind, required in fields:
            kind = scalar.get(kind, kind)
            assert fname in ours, (name, fname)
            assert ours[fname][0] == kind, (name, fname)
            assert ours[fname][1] == (required and (name, fname) not in server_fills), (name, fname)
        assert set(ours) == {f[0] for f in fields}, name


# ---- the hub under arbitrary traffic ------------------------------------------------------

_ROLES = st.sampled_from(["streamer", "player", "sfu"])
_MESSAGES = st.sampled_from([
    j(type="endpointId", id="Game"), j(type="endpointId", id="Other"), j(type="subscribe", streamerId="Game"),
    j(type="subscribe", streamerId="Other"), j(type="unsubscribe"), j(type="listStreamers"),
    j(type="offer", sdp="v=0", playerId="1"), j(type="offer", sdp="v=0", playerId="2"), j(type="answer", sdp="v=0"),
    j(type="iceCandidate", candidate={"candidate": "candidate:1", "sdpMid": "0", "sdpMLineIndex": 0}, playerId="1"),
    j(type="disconnectPlayer", playerId="1"), j(type="dataChannelRequest"), j(type="ping", time=1),
    j(type="streamerDataChannels", sendStreamId=1, recvStreamId=2), j(type="stopStreaming"), "{bad", j(type="bogus"),
])
_STEPS = st.lists(st.one_of(
    st.tuples(st.just("connect"), _ROLES),
    st.tuples(st.just("send"), st.integers(0, 7), _MESSAGES),
    st.tuples(st.just("drop"), st.integers(0, 7)),
), max_size=60)


@settings(max_examples=400, deadline=None)
@given(_STEPS)
def test_hub_invariants_under_random_traffic(steps):
    hub = SignallingHub(None, HubLimits(max_players_per_streamer=2, rate=RateLimit(per_second=5, burst=10)))
    live: list[int] = []
    now = 0.0
    for step in steps:
        now += 0.01
        if step[0] == "connect":
            cid, acts = hub.connect(step[1], now=now)
            live.append(cid)
        elif not live:
            continue
        elif step[0] == "send":
            acts = hub.receive(live[step[1] % len(live)], step[2], now)
        else:
            acts = hub.disconnect(live.pop(step[1] % len(live)))
        # in order: every action targets a live connection; nothing is sent after a close
        for a in acts:
            assert a.conn in live, f"{a} targets a closed or unknown connection"
            if isinstance(a, Close):
                live.remove(a.conn)
        # bookkeeping: subscribers are live, limits hold, ids map back to their connections
        conns = hub._conns
        assert set(conns) == set(live)
        for sid, cid in hub._streamers.items():
            assert conns[cid].streamer_id == sid
            assert all(sub in conns and conns[sub].subscribed == sid for sub in conns[cid].subscribers)
            assert sum(1 for sub in conns[cid].subscribers if conns[sub].role == "player") <= 2
