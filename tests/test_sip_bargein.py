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
from connectors.sip.peers import have
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


# A sipp caller whose SDP points its media at the test's own UDP socket (to time the packets):
# INVITE, ACK, then it waits for the agent's BYE and answers it.
UAC_WAITS_FOR_BYE = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="caller that waits for the agent's BYE">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:customer@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:customer@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=- 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio RTP_PORT RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:customer@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: <sip:customer@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv request="BYE" timeout="30000"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"""


@pytest.mark.skipif(not have("sipp") or not have("espeak-ng"), reason="sipp / espeak-ng not installed")
@pytest.mark.parametrize("threaded", [False, True], ids=["same-loop", "media-thread"])
async def test_a_caller_who_says_never_call_again_hears_the_goodbye_then_gets_a_bye_within_2_s(
        embedded_bus, tmp_path, threaded):
    """The real agent decides (NLU -> policy says goodbye, ends_call -> TTS speaks it -> the
    connector reports it played -> the hangup stage ends the call -> BYE).  The test only plays
    the caller: sipp for SIP, a socket for its RTP, and the caller's words as the ASR would
    write them (the speech recogniser itself is tested in test_sip_speech_call.py)."""
    from agent.pipeline import build_stage
    from agent.settings import Settings
    from agent.testing import running_pipeline
    from connectors.sip.peers import Sipp

    settings = Settings(silence_hangup_s=0)
    stages = [build_stage(n, settings) for n in ("nlu", "dst", "policy", "tts", "hangup")]
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    scenario = tmp_path / "uac_wait_bye.xml"
    scenario.write_text(UAC_WAITS_FOR_BYE.replace("RTP_PORT", str(media.getsockname()[1])))
    try:
        async with running_pipeline(embedded_bus, settings, stages), sip_agent(embedded_bus, threaded) as agent:
            host, port = agent.address
            phone = asyncio.create_task(Sipp(tmp_path / "sipp").run(str(scenario), f"{host}:{port}", "-s", "sales",
                                                                    limit_s=40))
            for _ in range(100):
                if agent.calls:
                    break
                await asyncio.sleep(0.05)
            call_id = next(iter(agent.calls.values())).call_id
            receiving = asyncio.create_task(receive_rtp(media, time.monotonic() + 30))
            await embedded_bus.publish_event(topics.TRANSCRIPTS, ev.TranscriptFinal(
                call_id=call_id, turn=1, stage="asr", text="别再给我打电话了"))
            run = await phone
            bye_at = time.monotonic()  # sipp exits right after answering the BYE: an upper bound
            media.close()  # ends the receiver
            arrivals = await receiving
    finally:
        media.close()
    assert run.returncode == 0, run.stderr[-2000:]
    events = [e for e in log_events(embedded_bus, topics.CONTROL) + log_events(embedded_bus, topics.REPLIES)
              if e.call_id == call_id]
    goodbye = next(e for e in events if isinstance(e, ev.BotReply))
    assert goodbye.ends_call and goodbye.action == "exit_do_not_call"
    frames = [e for e in log_events(embedded_bus, topics.AUDIO_OUT) if isinstance(e, ev.AudioFrame)
              and e.reply_event_id == goodbye.event_id]
    assert len(arrivals) == len(frames) > 50  # the whole goodbye (seconds of speech) reached the phone
    assert bye_at - arrivals[-1] <= 2.0, f"BYE {bye_at - arrivals[-1]:.2f} s after the last RTP packet"
    played = [e for e in events if isinstance(e, ev.ReplyPlayed)]
    ended = [e for e in events if isinstance(e, ev.CallEnded)]
    assert [(p.reply_event_id, p.interrupted) for p in played] == [(goodbye.event_id, False)]
    # one end, by the agent, on the goodbye; the connector did not announce a second one
    assert [(e.stage, e.reason, e.reply_event_id) for e in ended] == [("hangup", "bot_ended", goodbye.event_id)]
    print(f"BYE after last RTP: {(bye_at - arrivals[-1]) * 1000:.0f} ms (upper bound), goodbye {len(frames) * 20} ms")


async def test_a_reply_to_a_turn_the_caller_went_on_from_never_reaches_the_phone(embedded_bus):
    """The caller paused, the agent answered the first half, the caller went on before that
    answer played: the connector drops it (queued or still arriving) and reports it interrupted,
    so a goodbye among it would not end the call; the answer to the new turn plays."""
    from connectors.bridge import BusBridge
    from connectors.pacer import FramePacer

    sent: list[bytes] = []
    pacer = FramePacer(sent.append)
    pacer.start()

    class PacedSink:
        enqueue, flush, mark = pacer.enqueue, pacer.flush, pacer.mark

        async def hangup(self, reason: str) -> None:
            return None

    bridge = BusBridge(embedded_bus, "sip")
    played = embedded_bus.consumer("t", [topics.CONTROL], start="latest")
    await played.start()
    await bridge.call_started("c1", PacedSink(), direction="inbound")
    old, new = ev.new_event_id(), ev.new_event_id()

    def frames(reply: str, turn: int, n: int, start: int = 0) -> list:
        return [ev.AudioFrame(call_id="c1", stage="tts", turn=turn, codec="pcmu8k", frame_index=i,
                              reply_event_id=reply, payload=bytes([turn]) * 160) for i in range(start, start + n)]

    for f in frames(old, 2, 20):
        await bridge.deliver(f)  # queued, 0.4 s of audio: nearly none of it has played yet
    await bridge.deliver(ev.BargeIn(call_id="c1", stage="vad", turn=3, reply_event_id=None))
    for f in frames(old, 2, 20, start=20):  # the rest of the old answer still arrives
        await bridge.deliver(f)
    await bridge.deliver(ev.ReplyAudioEnd(call_id="c1", turn=2, reply_event_id=old, frames=40))
    for f in frames(new, 3, 10):
        await bridge.deliver(f)
    await bridge.deliver(ev.ReplyAudioEnd(call_id="c1", turn=3, reply_event_id=new, frames=10))
    reports: dict[str, ev.ReplyPlayed] = {}
    deadline = time.monotonic() + 5
    while len(reports) < 2 and time.monotonic() < deadline:
        for rec in await played.getmany(timeout_ms=100):
            e = ev.decode(rec.value)
            if isinstance(e, ev.ReplyPlayed):
                reports[e.reply_event_id] = e
    await played.stop()
    await pacer.stop()
    assert reports[old].interrupted and not reports[new].interrupted
    assert sent.count(bytes([3]) * 160) == 10  # the new answer, whole
    assert sent.count(bytes([2]) * 160) <= 2  # of the old one at most what left before the caller went on
