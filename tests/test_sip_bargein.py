"""The bot's voice on the phone line obeys the agent: a barge-in silences it at once, and when
the agent ends the call the phone gets a BYE after the last words."""

from __future__ import annotations

import asyncio
import socket
import time
from contextlib import asynccontextmanager

import pytest

from agent import events as ev
from agent import topics
from connectors.sip.agent import SipAgent, SipAgentConfig
from connectors.threaded import ThreadedConnector
from tests.test_sip_calls import RawPeer, log_events


async def answered_call(agent: SipAgent, media_sock: socket.socket) -> tuple[RawPeer, str, str]:
    peer = RawPeer()
    peer.invite(agent.address, rtp_port=media_sock.getsockname()[1])
    ok = await peer.final_response()
    assert ok.startswith("SIP/2.0 200")
    peer.ack(ok, agent.address)
    call = next(iter(agent.calls.values()))
    return peer, call.call_id, ok


def bot_frames(call_id: str, reply_id: str, n: int, start: int = 0) -> list[ev.AudioFrame]:
    return [ev.AudioFrame(call_id=call_id, stage="tts", codec="pcmu8k", frame_index=i, reply_event_id=reply_id,
                          payload=bytes([0x10 + i % 64]) * 160) for i in range(start, start + n)]


async def receive_rtp(sock: socket.socket, until: float) -> list[float]:
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    arrivals = []
    while time.monotonic() < until:
        try:
            await asyncio.wait_for(loop.sock_recv(sock, 2048), timeout=max(0.01, until - time.monotonic()))
            arrivals.append(time.monotonic())
        except asyncio.TimeoutError:
            break
    return arrivals


@asynccontextmanager
async def sip_agent(bus, threaded: bool, **config):
    """The agent in this loop, or on its own media thread (how `dianxiao sip serve` runs it)."""
    if threaded:
        async with ThreadedConnector(bus, "sip", lambda b: SipAgent(bus, SipAgentConfig(port=0, **config), bridge=b)) as t:
            yield t.connector
    else:
        async with SipAgent(bus, SipAgentConfig(port=0, **config)) as agent:
            yield agent


@pytest.mark.parametrize("threaded", [False, True], ids=["same-loop", "media-thread"])
async def test_when_the_caller_barges_in_the_bot_stops_within_200_ms(embedded_bus, threaded):
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    try:
        async with sip_agent(embedded_bus, threaded) as agent:
            peer, call_id, _ = await answered_call(agent, media)
            reply = ev.new_event_id()
            receiving = asyncio.create_task(receive_rtp(media, time.monotonic() + 2.5))
            for f in bot_frames(call_id, reply, 150):  # a 3 s reply, written faster than real time
                await embedded_bus.publish_event(topics.AUDIO_OUT, f)
            await asyncio.sleep(0.6)
            barged_at = time.monotonic()
            await embedded_bus.publish_event(topics.CONTROL, ev.BargeIn(call_id=call_id, stage="vad", reply_event_id=reply))
            await asyncio.sleep(0.1)
            for f in bot_frames(call_id, reply, 20, start=150):  # TTS was still producing the reply
                await embedded_bus.publish_event(topics.AUDIO_OUT, f)
            arrivals = await receiving
            played_before = [t for t in arrivals if t < barged_at]
            after = [t for t in arrivals if t >= barged_at]
            assert len(played_before) >= 10  # it was speaking (0.6 s in, less the prebuffer and a busy box)
            assert after == [] or after[-1] - barged_at <= 0.2
            assert len(arrivals) < 60  # the rest of the reply (and its late frames) never played
            # a new reply after the barge-in plays normally
            receiving = asyncio.create_task(receive_rtp(media, time.monotonic() + 0.8))
            for f in bot_frames(call_id, ev.new_event_id(), 10):
                await embedded_bus.publish_event(topics.AUDIO_OUT, f)
            assert len(await receiving) == 10
    finally:
        media.close()


@pytest.mark.parametrize("threaded", [False, True], ids=["same-loop", "media-thread"])
async def test_when_the_agent_ends_the_call_the_phone_gets_a_bye_after_the_goodbye(embedded_bus, threaded):
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    try:
        async with sip_agent(embedded_bus, threaded) as agent:
            peer, call_id, _ = await answered_call(agent, media)
            receiving = asyncio.create_task(receive_rtp(media, time.monotonic() + 1.5))
            for f in bot_frames(call_id, ev.new_event_id(), 25):  # "再见" 0.5 s
                await embedded_bus.publish_event(topics.AUDIO_OUT, f)
            await embedded_bus.publish_event(topics.CONTROL, ev.CallEnded(call_id=call_id, stage="policy", reason="bot_ended"))
            bye = await asyncio.wait_for(peer.recv_request("BYE"), 3)
            bye_at = time.monotonic()
            assert peer.call_id in bye
            arrivals = await receiving
            assert len(arrivals) == 25 and arrivals[-1] <= bye_at  # the goodbye played in full first
            await asyncio.sleep(0.2)
            assert not agent.calls
    finally:
        media.close()
    ended = [e for e in log_events(embedded_bus, topics.CONTROL) if isinstance(e, ev.CallEnded)]
    assert [e.stage for e in ended] == ["policy"]  # the connector did not announce a second end
