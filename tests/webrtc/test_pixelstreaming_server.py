"""The signalling server on real sockets (websockets): token gate, close codes and
reasons on the wire, and one misbehaving client never disturbing the others."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from flowcast.protect.tokens import TokenSigner, TokenVerifier
from flowcast.webrtc.pixelstreaming.messages import RateLimit
from flowcast.webrtc.pixelstreaming.server import Listen, PixelStreamingServer
from flowcast.webrtc.pixelstreaming.signalling import HubLimits, SignallingHub

SECRET = secrets.token_bytes(32)


async def start(limits=HubLimits(), verifier=None):
    server = PixelStreamingServer(SignallingHub({"iceServers": []}, limits), verifier=verifier)
    await server.start(Listen("127.0.0.1", 0, 0))
    return server


async def recv(ws, timeout=5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_type(ws, mtype, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        msg = await recv(ws, max(0.05, deadline - time.monotonic()))
        if msg["type"] == mtype:
            return msg


async def streamer(server, sid="Game"):
    ws = await connect(f"ws://127.0.0.1:{server.ports['streamer']}")
    assert (await recv(ws))["type"] == "config"
    assert (await recv(ws))["type"] == "identify"
    await ws.send(json.dumps({"type": "endpointId", "id": sid}))
    assert await recv(ws) == {"type": "endpointIdConfirm", "committedId": sid}
    return ws


async def player(server, query=""):
    ws = await connect(f"ws://127.0.0.1:{server.ports['player']}/signalling{query}")
    cfg = await recv(ws)
    assert cfg["type"] == "config" and cfg["peerConnectionOptions"] == {"iceServers": []}
    return ws


async def closed_with(ws, timeout=5.0):
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as exc:
        return exc.rcvd.code, exc.rcvd.reason


def test_token_gate_and_acl():
    async def run():
        server = await start(verifier=TokenVerifier({"k1": SECRET}))
        signer = TokenSigner({"k1": SECRET}, "k1")
        try:
            s = await streamer(server)
            for query, status in [("", 403), ("?token=v1.bogus", 403),
                                  (f"?token={signer.sign('/live/Game/', expires=int(time.time()) - 5)}", 410),
                                  (f"?token={TokenSigner({'k1': secrets.token_bytes(32)}, 'k1').sign('/live/Game/', ttl=60)}", 403)]:
                with pytest.raises(InvalidStatus) as info:
                    await connect(f"ws://127.0.0.1:{server.ports['player']}/signalling{query}")
                assert info.value.response.status_code == status, query
            # a genuine token for another stream connects but may not subscribe here
            other = await player(server, f"?token={signer.sign('/live/Other/', ttl=60)}")
            await other.send(json.dumps({"type": "subscribe", "streamerId": "Game"}))
            failed = await recv(other)
            assert failed["type"] == "subscribeFailed" and "does not grant streamer Game" in failed["message"]
            good = await player(server, f"?token={signer.sign('/live/Game/', ttl=60)}")
            await good.send(json.dumps({"type": "subscribe", "streamerId": "Game"}))
            assert await recv_type(s, "playerConnected") == {"type": "playerConnected", "playerId": "2", "dataChannel": True, "sfu": False}
            assert server.hub.player_count("Game") == 1
            for ws in (s, other, good):
                await ws.close()
        finally:
            await server.close()

    asyncio.run(run())


def test_flooder_is_cut_off_on_the_wire_and_others_keep_going():
    async def run():
        server = await start(HubLimits(rate=RateLimit(per_second=20, burst=40)))
        try:
            s = await streamer(server)
            good = await player(server)
            bad = await player(server)
            for ws in (good, bad):
                await ws.send(json.dumps({"type": "subscribe", "streamerId": "Game"}))
            await recv_type(s, "playerConnected")
            await recv_type(s, "playerConnected")
            for i in range(500):
                try:
                    await bad.send(json.dumps({"type": "iceCandidate", "candidate": {"candidate": f"candidate:{i}", "sdpMid": "0", "sdpMLineIndex": 0}}))
                except ConnectionClosed:
                    break
            code, reason = await closed_with(bad)
            assert (code, reason) == (1008, "rate limit exceeded (20 messages/s, burst 40)")
            # the streamer saw at most the burst, then the flooder leaving
            seen = 0
            while True:
                msg = await recv(s)
                if msg["type"] == "playerDisconnected":
                    assert msg["playerId"] == "2"
                    break
                seen += 1
            assert seen <= 40
            # the good player is untouched: relaying both ways still works
            await s.send(json.dumps({"type": "offer", "sdp": "v=0 hello", "playerId": "1"}))
            assert await recv_type(good, "offer") == {"type": "offer", "sdp": "v=0 hello", "playerId": "1"}
            await good.send(json.dumps({"type": "answer", "sdp": "v=0 back"}))
            assert await recv_type(s, "answer") == {"type": "answer", "sdp": "v=0 back", "playerId": "1"}
            for ws in (s, good):
                await ws.close()
        finally:
            await server.close()

    asyncio.run(run())


def test_oversized_binary_and_malformed_frames_close_with_reasons():
    async def run():
        server = await start(HubLimits(max_message_bytes=4096))
        try:
            s = await streamer(server)
            good = await player(server)
            await good.send(json.dumps({"type": "subscribe", "streamerId": "Game"}))
            await recv_type(s, "playerConnected")
            cases = [
                (json.dumps({"type": "answer", "sdp": "x" * 5000}), 1009, "exceeds the limit of 4096 bytes"),
                (b"\x01\x02", 1003, "binary frames are not part of the signalling protocol"),
                ("{", 1007, "message is not valid JSON"),
                (json.dumps({"type": "subscribe"}), 1008, "subscribe: required field 'streamerId' is missing"),
            ]
            for frame, code, words in cases:
                ws = await player(server)
                await ws.send(frame)
                got_code, reason = await closed_with(ws)
                assert got_code == code and words in reason, (got_code, reason)
            await s.send(json.dumps({"type": "offer", "sdp": "v=0", "playerId": "1"}))
            assert (await recv_type(good, "offer"))["sdp"] == "v=0"
            await good.send(json.dumps({"type": "ping", "time": 7}))
            assert await recv_type(good, "pong") == {"type": "pong", "time": 7}
        finally:
            await server.close()

    asyncio.run(run())


def test_streamer_disconnect_reaches_players_on_the_wire():
    async def run():
        server = await start()
        try:
            s = await streamer(server)
            players = [await player(server) for _ in range(2)]
            for ws in players:
                await ws.send(json.dumps({"type": "subscribe", "streamerId": "Game"}))
                await recv_type(ws, "playerCount")
            await s.close()
            for ws in players:
                assert await recv_type(ws, "streamerDisconnected") == {"type": "streamerDisconnected"}
                assert await closed_with(ws) == (4002, "streamer disconnected")
            # back again: a new player lists and subscribes
            s2 = await streamer(server)
            p = await player(server)
            await p.send(json.dumps({"type": "listStreamers"}))
            assert await recv(p) == {"type": "streamerList", "ids": ["Game"]}
            await p.send(json.dumps({"type": "subscribe", "streamerId": "Game"}))
            assert (await recv_type(s2, "playerConnected"))["playerId"] == "3"
        finally:
            await server.close()

    asyncio.run(run())


def test_page_is_served_and_other_paths_are_not():
    async def run():
        server = await start()
        try:
            base = f"http://127.0.0.1:{server.ports['player']}"
            async with httpx.AsyncClient() as client:
                page = await client.get(f"{base}/")
                assert page.status_code == 200 and "pixelstreaming.bundle.js" in page.text
                assert (await client.get(f"{base}/../../etc/passwd")).status_code == 404
                bundle = await client.get(f"{base}/pixelstreaming.bundle.js")
                assert bundle.status_code in (200, 503)
                if bundle.status_code == 503:
                    assert "make web" in bundle.text
        finally:
            await server.close()

    asyncio.run(run())


def test_a_player_that_stops_reading_is_closed_and_does_not_stall_the_streamer():
    async def run():
        server = await start(HubLimits(max_message_bytes=64 * 1024, rate=RateLimit(per_second=10000, burst=10000)))
        try:
            s = await streamer(server)
            good = await player(server)
            slow = await connect(f"ws://127.0.0.1:{server.ports['player']}/signalling", max_queue=1)
            for ws in (good, slow):
                await ws.send(json.dumps({"type": "subscribe", "streamerId": "Game"}))
            await recv_type(s, "playerConnected")
            await recv_type(s, "playerConnected")
            sdp = "a" * 60000
            started = time.monotonic()
            for _ in range(600):  # ~36 MB towards a client that reads nothing
                await s.send(json.dumps({"type": "offer", "sdp": sdp, "playerId": "2"}))
            # the streamer learns the slow player is gone; its relays to others still flow
            msg = await recv_type(s, "playerDisconnected", timeout=30)
            assert msg["playerId"] == "2"
            await s.send(json.dumps({"type": "offer", "sdp": "v=0 fine", "playerId": "1"}))
            assert (await recv_type(good, "offer", timeout=10))["sdp"] == "v=0 fine"
            assert time.monotonic() - started < 30
            assert server.hub.player_count("Game") == 1
            await slow.close()
        finally:
            await server.close()

    asyncio.run(run())
