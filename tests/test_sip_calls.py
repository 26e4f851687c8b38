"""Phone calls reach the agent over SIP/RTP: real peers (baresip, sipp) call it on 127.0.0.1.

The speech stages are replaced here by the line-test echo stage (the bot says back what it
heard), so what the peer records must be the caller's own speech, delayed by the round trip."""

from __future__ import annotations

import asyncio
import socket
import struct
import uuid
import wave
from pathlib import Path

import numpy as np
import pytest

from agent import events as ev
from agent import topics
from agent.testing import running_pipeline
from connectors.echo import EchoStage
from connectors.sip.agent import DialError, SipAgent, SipAgentConfig
from connectors.sip.peers import Baresip, Sipp, have, to_caller_wav

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CLIP = SHARED / "data/speech/mandarin/BAC009S0150W0126.wav"  # 3.1 s of Mandarin

needs_baresip = pytest.mark.skipif(not have("baresip") or not have("sox"), reason="baresip/sox not installed")
needs_sipp = pytest.mark.skipif(not have("sipp"), reason="sipp (sip-tester) not installed")


def log_events(bus, topic: str) -> list:
    rows = bus.db.execute("SELECT value FROM log WHERE topic=? ORDER BY ts", (topic,)).fetchall()
    return [ev.decode(bytes(v)) for (v,) in rows]


def wav_stats(path: Path) -> tuple[float, float]:
    """(seconds, RMS of the loudest 100 ms) of a 16-bit mono WAV."""
    with wave.open(str(path)) as w:
        data = w.readframes(w.getnframes())
        rate = w.getframerate()
    samples = np.frombuffer(data, dtype="<i2").astype(np.float64)
    step = rate // 10
    windows = [samples[i : i + step] for i in range(0, max(1, len(samples) - step), step)]
    loudest = max((float(np.sqrt(np.mean(w**2))) for w in windows if len(w)), default=0.0)
    return len(samples) / rate, loudest


@needs_baresip
async def test_a_customer_calls_and_hears_the_agent_for_the_length_of_what_they_said(embedded_bus, tmp_path):
    wav = to_caller_wav(CLIP, tmp_path / "customer.wav")
    said_s, _ = wav_stats(wav)
    async with running_pipeline(embedded_bus, stages=[EchoStage()]):
        async with SipAgent(embedded_bus, SipAgentConfig(port=0)) as agent:
            host, port = agent.address
            phone = Baresip(tmp_path / "baresip", wav)
            run = await phone.dial(f"sip:sales@{host}:{port}", seconds=int(said_s) + 4)
            assert run.returncode in (0, 124), run.stderr[-2000:]
            for _ in range(50):
                if not agent.calls:
                    break
                await asyncio.sleep(0.1)

    heard = phone.heard()
    assert len(heard) == 1, run.stdout[-2000:]
    heard_s, loudest = wav_stats(heard[0])
    # the agent spoke (echo) for about as long as the customer did, and it is speech, not silence
    assert said_s - 0.5 <= heard_s <= said_s + 2.0
    assert loudest > 500

    control = log_events(embedded_bus, topics.CONTROL)
    started = [e for e in control if isinstance(e, ev.CallStarted)]
    ended = [e for e in control if isinstance(e, ev.CallEnded)]
    assert len(started) == 1 and started[0].mode == "audio" and started[0].direction == "inbound"
    assert started[0].metadata["codec"] == "PCMU"
    assert len(ended) == 1 and ended[0].reason == "caller_hangup"
    frames_in = [e for e in log_events(embedded_bus, topics.AUDIO_IN) if e.call_id == started[0].call_id]
    assert len(frames_in) >= int(said_s * 50) - 5
    assert all(f.codec == "pcmu8k" and len(f.payload) == 160 for f in frames_in)
    assert [f.frame_index for f in frames_in] == list(range(len(frames_in)))


@needs_sipp
async def test_an_alaw_caller_with_a_dtmf_key_press_is_understood(embedded_bus, tmp_path):
    """sipp's own uac_pcap: G.711 A-law audio from a capture, then the key '1' (RFC 4733)."""
    scenario = tmp_path / "uac_pcap.xml"
    dump = await asyncio.create_subprocess_exec("timeout", "10", "sipp", "-sd", "uac_pcap",
                                                stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    text = (await dump.communicate())[0].decode()
    scenario.write_text(text.replace("pcap/", "/usr/share/sip-tester/").replace('milliseconds="8000"', 'milliseconds="2500"'))
    from agent.pipeline import build_stage
    from agent.settings import Settings

    keys_understood = [build_stage(n, Settings()) for n in ("dtmf", "dst", "policy")]  # "1" = demo_request
    async with running_pipeline(embedded_bus, stages=[EchoStage(), *keys_understood]):
        async with SipAgent(embedded_bus, SipAgentConfig(port=0)) as agent:
            host, port = agent.address
            run = await Sipp(tmp_path / "sipp").run(str(scenario), f"{host}:{port}", "-s", "sales", limit_s=20)
            assert run.returncode == 0, run.stderr[-2000:]
            await asyncio.sleep(0.3)
    control = log_events(embedded_bus, topics.CONTROL)
    started = [e for e in control if isinstance(e, ev.CallStarted)]
    assert started[0].metadata["codec"] == "PCMA"
    # the key press is an event of the call on call.control (the dtmf stage reads it from there)
    keys = [e for e in control if isinstance(e, ev.CallDtmf)]
    assert [(k.call_id, k.digit, k.source) for k in keys] == [(started[0].call_id, "1", "rtp")]
    assert keys[0].duration_ms > 0
    understood = [e for e in log_events(embedded_bus, topics.NLU) if e.caused_by == keys[0].event_id]
    assert [[i.name for i in u.intents] for u in understood] == [["demo_request"]]
    replies = [e for e in log_events(embedded_bus, topics.REPLIES) if e.call_id == keys[0].call_id]
    assert len(replies) == 1 and replies[0].text  # the bot answered the key as it would the words
    frames = log_events(embedded_bus, topics.AUDIO_IN)
    assert len(frames) >= 100  # 2.5 s of the capture reached audio.in as mu-law


# --- a hand-driven SIP peer for the edge cases (bad SDP, spoofed RTP, silence) -------------


class RawPeer:
    """A UDP socket speaking plain SIP text: enough to send one INVITE and read the replies."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]
        self.call_id = uuid.uuid4().hex
        self.tag = uuid.uuid4().hex[:8]

    def invite(self, target: tuple[str, int], rtp_port: int, codecs: str = "0 101") -> None:
        sdp = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp_port} RTP/AVP {codecs}\r\n"
            + "".join(f"a=rtpmap:{pt} {name}/8000\r\n" for pt, name in (("0", "PCMU"), ("18", "G729"), ("101", "telephone-event")) if pt in codecs.split())
        )
        self.send(
            f"INVITE sip:sales@{target[0]}:{target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={self.branch}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:customer@127.0.0.1:{self.port}>;tag={self.tag}\r\n"
            f"To: <sip:sales@{target[0]}:{target[1]}>\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:customer@127.0.0.1:{self.port}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}",
            target,
        )

    def send(self, text: str, target: tuple[str, int]) -> None:
        self.sock.sendto(text.encode(), target)

    @property
    def branch(self) -> str:
        return "z9hG4bK" + self.call_id[:10]

    async def final_response(self) -> str:
        while True:
            data = await asyncio.to_thread(self.sock.recv, 65535)
            text = data.decode()
            code = int(text.split(" ", 2)[1]) if text.startswith("SIP/2.0") else 0
            if code >= 200:
                return text

    def ack(self, response: str, target: tuple[str, int]) -> None:
        to = next(line for line in response.split("\r\n") if line.lower().startswith("to:"))
        self.send(
            f"ACK sip:sales@{target[0]}:{target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:10]}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:customer@127.0.0.1:{self.port}>;tag={self.tag}\r\n{to}\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            target,
        )

    async def recv_request(self, method: str) -> str:
        while True:
            text = (await asyncio.to_thread(self.sock.recv, 65535)).decode()
            if text.startswith(method):
                return text


def rtp(seq: int, payload: bytes = b"\xff" * 160, ssrc: int = 0x1234) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + payload


async def test_an_offer_with_no_common_codec_is_refused_with_488(embedded_bus):
    async with SipAgent(embedded_bus, SipAgentConfig(port=0)) as agent:
        peer = RawPeer()
        peer.invite(agent.address, rtp_port=40000, codecs="18 101")  # G.729 only
        response = await peer.final_response()
        assert response.startswith("SIP/2.0 488")
        assert not agent.calls
    assert log_events(embedded_bus, topics.CONTROL) == []  # no call was started


async def test_rtp_from_an_unexpected_source_never_reaches_the_agent(embedded_bus):
    media_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media_sock.bind(("127.0.0.1", 0))
    intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    intruder.bind(("127.0.0.1", 0))
    try:
        async with SipAgent(embedded_bus, SipAgentConfig(port=0)) as agent:
            peer = RawPeer()
            peer.invite(agent.address, rtp_port=media_sock.getsockname()[1])
            ok = await peer.final_response()
            assert ok.startswith("SIP/2.0 200")
            peer.ack(ok, agent.address)
            agent_rtp = int(ok.split("m=audio ")[1].split(" ")[0])
            call = next(iter(agent.calls.values()))
            for i in range(20):  # a third party injects 400 ms of audio
                intruder.sendto(rtp(i, b"\x00" * 160, ssrc=0xBAD), ("127.0.0.1", agent_rtp))
            for i in range(20):  # the real caller's media
                media_sock.sendto(rtp(i), ("127.0.0.1", agent_rtp))
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            assert call.media.session.dropped_foreign == 20
            peer.send(
                f"BYE sip:sales@127.0.0.1:{agent.address[1]} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bK{uuid.uuid4().hex[:10]}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:customer@127.0.0.1:{peer.port}>;tag={peer.tag}\r\n"
                + next(line for line in ok.split("\r\n") if line.lower().startswith("to:"))
                + f"\r\nCall-ID: {peer.call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
                agent.address,
            )
            assert (await peer.final_response()).startswith("SIP/2.0 200")
            await asyncio.sleep(0.2)
    finally:
        media_sock.close()
        intruder.close()
    frames = log_events(embedded_bus, topics.AUDIO_IN)
    # only the caller's frames (0xff = mu-law silence) made it; the intruder's 0x00 never did
    assert frames and all(f.payload == b"\xff" * 160 for f in frames)
    ended = [e for e in log_events(embedded_bus, topics.CONTROL) if isinstance(e, ev.CallEnded)]
    assert [e.reason for e in ended] == ["caller_hangup"]


async def test_a_caller_who_goes_silent_is_hung_up_after_the_rtp_timeout(embedded_bus):
    async with SipAgent(embedded_bus, SipAgentConfig(port=0, rtp_timeout_s=1.0)) as agent:
        peer = RawPeer()
        peer.invite(agent.address, rtp_port=40002)
        ok = await peer.final_response()
        peer.ack(ok, agent.address)
        bye = await asyncio.wait_for(peer.recv_request("BYE"), 5)
        assert peer.call_id in bye
    ended = [e for e in log_events(embedded_bus, topics.CONTROL) if isinstance(e, ev.CallEnded)]
    assert [e.reason for e in ended] == ["rtp_timeout"]


async def test_a_caller_who_hangs_up_while_ringing_gets_487_and_no_call_starts(embedded_bus):
    async with SipAgent(embedded_bus, SipAgentConfig(port=0, answer_delay_s=1.0)) as agent:
        peer = RawPeer()
        peer.invite(agent.address, rtp_port=40004)
        await asyncio.sleep(0.2)  # the agent is ringing
        peer.send(
            f"CANCEL sip:sales@127.0.0.1:{agent.address[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{peer.port};branch={peer.branch}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:customer@127.0.0.1:{peer.port}>;tag={peer.tag}\r\n"
            f"To: <sip:sales@127.0.0.1:{agent.address[1]}>\r\n"
            f"Call-ID: {peer.call_id}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
            agent.address,
        )
        codes = {(await peer.final_response()).split(" ")[1] for _ in range(2)}
        assert codes == {"200", "487"}  # 200 for the CANCEL, 487 for the INVITE
        await asyncio.sleep(1.2)  # past the moment the agent would have answered
        assert not agent.calls
    assert log_events(embedded_bus, topics.CONTROL) == []


# --- outbound -------------------------------------------------------------------------------

UAS_WITH_AUTH = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="registrar-like UAS that challenges the INVITE">
  <recv request="INVITE" />
  <send><![CDATA[
SIP/2.0 401 Unauthorized
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
WWW-Authenticate: Digest realm="dianxiao.test", nonce="[pid]n[call_number]", algorithm=MD5, qop="auth"
Content-Length: 0
]]></send>
  <recv request="ACK" />
  <recv request="INVITE">
    <action>
      <verifyauth assign_to="authvalid" username="agent" password="s3cret" />
    </action>
  </recv>
  <nop hide="true" test="authvalid" next="goodauth" />
  <send><![CDATA[
SIP/2.0 403 Forbidden
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <recv request="ACK" next="end" />
  <label id="goodauth" />
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv request="ACK" />
  <recv request="BYE" />
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <label id="end" />
</scenario>
"""


@needs_sipp
@pytest.mark.parametrize("password,expect", [("s3cret", "answered"), ("wrong", 403)])
async def test_the_agent_dials_out_through_a_registrar_that_demands_digest_auth(embedded_bus, tmp_path, password, expect):
    scenario = tmp_path / "uas_auth.xml"
    scenario.write_text(UAS_WITH_AUTH)
    sipp = Sipp(tmp_path / "sipp")
    proc = sipp.start(str(scenario), None, "-rtp_echo", limit_s=20)
    try:
        await asyncio.sleep(0.5)  # sipp binds its port
        async with running_pipeline(embedded_bus, stages=[EchoStage()]):
            async with SipAgent(embedded_bus, SipAgentConfig(port=0, user="agent")) as agent:
                target = f"sip:13800000000@127.0.0.1:{sipp.port}"
                if expect == "answered":
                    call = await agent.dial(target, ("127.0.0.1", sipp.port), auth=("agent", password), ring_timeout_s=5)
                    for i in range(25):  # the agent says 0.5 s; sipp echoes it back as the "customer"
                        call.media.enqueue(bytes([0x80 + (i % 16)]) * 160)
                    await asyncio.sleep(1.2)
                    await agent.hangup(call.call_id)
                    assert call.media.stats.frames_out >= 25  # ours, plus the echo stage replaying the echo
                    assert call.media.stats.frames_in >= 15  # the echo came back as caller audio
                else:
                    with pytest.raises(DialError) as err:
                        await agent.dial(target, ("127.0.0.1", sipp.port), auth=("agent", password), ring_timeout_s=5)
                    assert err.value.status == expect
        rc = await asyncio.to_thread(proc.wait, 10)
        assert rc == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else rc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    started = [e for e in log_events(embedded_bus, topics.CONTROL) if isinstance(e, ev.CallStarted)]
    assert len(started) == (1 if expect == "answered" else 0)
    if started:
        assert started[0].direction == "outbound"


REGISTRAR = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="registrar that challenges">
  <recv request="REGISTER" />
  <send><![CDATA[
SIP/2.0 401 Unauthorized
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
WWW-Authenticate: Digest realm="dianxiao.test", nonce="[pid]r[call_number]", algorithm=MD5
Content-Length: 0
]]></send>
  <recv request="REGISTER">
    <action><verifyauth assign_to="authvalid" username="agent" password="s3cret" /></action>
  </recv>
  <nop hide="true" test="authvalid" next="ok" />
  <send next="end"><![CDATA[
SIP/2.0 403 Forbidden
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <label id="ok" />
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Contact:];expires=120
Expires: 120
Content-Length: 0
]]></send>
  <label id="end" />
</scenario>
"""


@needs_sipp
@pytest.mark.parametrize("password,registered", [("s3cret", True), ("wrong", False)])
async def test_the_agent_registers_with_a_registrar_using_digest_auth(embedded_bus, tmp_path, password, registered):
    scenario = tmp_path / "registrar.xml"
    scenario.write_text(REGISTRAR)
    sipp = Sipp(tmp_path / "sipp")
    proc = sipp.start(str(scenario), None, limit_s=15)
    try:
        await asyncio.sleep(0.5)
        async with SipAgent(embedded_bus, SipAgentConfig(port=0, user="agent")) as agent:
            aor = f"sip:agent@127.0.0.1:{sipp.port}"
            if registered:
                reg = await agent.register(("127.0.0.1", sipp.port), aor, auth=("agent", password))
                assert reg.granted_expires == 120
                agent.registrations.clear()  # this registrar scenario does not take the unREGISTER
            else:
                with pytest.raises(DialError) as err:
                    await agent.register(("127.0.0.1", sipp.port), aor, auth=("agent", password))
                assert err.value.status == 403
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_reordered_rtp_reaches_the_agent_in_order_through_the_jitter_buffer(embedded_bus):
    media_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media_sock.bind(("127.0.0.1", 0))
    try:
        async with SipAgent(embedded_bus, SipAgentConfig(port=0)) as agent:
            peer = RawPeer()
            peer.invite(agent.address, rtp_port=media_sock.getsockname()[1])
            ok = await peer.final_response()
            peer.ack(ok, agent.address)
            agent_rtp = ("127.0.0.1", int(ok.split("m=audio ")[1].split(" ")[0]))
            order = [0, 1]
            for i in range(2, 40, 2):  # after the first two, every pair arrives swapped: 3, 2, 5, 4, ...
                order += [i + 1, i]
            for seq in order:
                media_sock.sendto(rtp(seq, bytes([0x20 + seq]) * 160), agent_rtp)
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
    finally:
        media_sock.close()
    frames = log_events(embedded_bus, topics.AUDIO_IN)
    firsts = [f.payload[0] - 0x20 for f in frames]
    assert firsts[:36] == list(range(36))  # in sequence order, none lost (the last few wait in the buffer)


def test_the_media_thread_outranks_speech_workers_that_already_run_real_time():
    """Started under chrt (or by a parent running real-time), every thread of the agent is
    real-time at that priority; a media thread that only tied it would wait behind a decode."""
    import os

    from connectors.threaded import media_priority

    assert media_priority(os.SCHED_OTHER, 0, 99) == 10
    assert media_priority(os.SCHED_RR, 20, 99) == 21
    assert media_priority(os.SCHED_FIFO, 99, 99) == 99
    assert media_priority(os.SCHED_RR, 1, 99) == 10
