"""A phone network's awkward INVITEs, from sipp: the same INVITE arriving twice by two paths
(482 Loop Detected, one call), a retransmitted INVITE (answered again, not handled again), and
a caller who puts the agent on hold and takes it off again (re-INVITE: the agent answers with
the matching direction and its audio stops while the caller holds)."""

from __future__ import annotations

import asyncio
import re
import struct
import time
from pathlib import Path

import pytest

from agent import events as ev
from agent import topics
from connectors.sip.agent import SipAgent, SipAgentConfig
from connectors.sip.peers import Sipp, free_udp_port, have
from tests.test_sip_calls import log_events

needs_sipp = pytest.mark.skipif(not have("sipp"), reason="sipp (sip-tester) not installed")

_SDP = """v=0
o=phone 53655765 {version} IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {rtp} RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a={direction}
"""


def _invite(branch: str, rtp: int, cseq: int = 1, to_tag: bool = False, direction: str = "sendrecv", version: int = 1) -> str:
    to = "To: <sip:[service]@[remote_ip]:[remote_port]>" + ("[peer_tag_param]" if to_tag else "")
    return f"""<send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
{to}
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{_SDP.format(rtp=rtp, direction=direction, version=version)}
]]></send>
"""


def _in_dialog(method: str, cseq: int, retrans: bool = False) -> str:
    return f"""<send{' retrans="500"' if retrans else ''}><![CDATA[
{method} sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} {method}
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0

]]></send>
"""


def _scenario(body: str) -> str:
    return f'<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="dianxiao">\n{body}\n</scenario>\n'


@needs_sipp
async def test_the_same_invite_by_two_paths_is_one_call_and_the_copy_gets_482(embedded_bus, tmp_path):
    """A forking proxy delivers the caller's INVITE twice (new Via branch, same Call-ID, From tag
    and CSeq) while the agent is still ringing; the caller also retransmits the first copy."""
    rtp = free_udp_port()
    scenario = tmp_path / "merged.xml"
    scenario.write_text(_scenario(
        _invite("z9hG4bK-first-[call_number]", rtp)
        + '<recv response="100" optional="true"/>\n<recv response="180"/>\n'
        + _invite("z9hG4bK-second-[call_number]", rtp).replace(' retrans="500"', "")  # the merged copy
        + '<recv response="482"/>\n'
        + _invite("z9hG4bK-first-[call_number]", rtp).replace(' retrans="500"', "")  # a retransmission
        + '<recv response="180"/>\n'  # ... answered with the last response, not a second call
        + '<recv response="200" rrs="true"/>\n'
        + _in_dialog("ACK", 1) + '<pause milliseconds="300"/>\n'
        + _in_dialog("BYE", 2, retrans=True) + '<recv response="200"/>\n'
    ), encoding="utf-8")
    async with SipAgent(embedded_bus, SipAgentConfig(port=0, answer_delay_s=1.0)) as agent:
        host, port = agent.address
        run = await Sipp(tmp_path / "sipp").run(str(scenario), f"{host}:{port}", "-s", "sales", limit_s=20)
        assert run.returncode == 0, run.stderr[-2000:]
        await asyncio.sleep(0.2)
        assert agent.uas.merged_refused == 1 and agent.uas.retransmissions_absorbed == 1
    control = log_events(embedded_bus, topics.CONTROL)
    started = [e for e in control if isinstance(e, ev.CallStarted)]
    ended = [e for e in control if isinstance(e, ev.CallEnded)]
    assert len(started) == 1, "one caller, one call"
    assert [(e.call_id, e.reason) for e in ended] == [(started[0].call_id, "caller_hangup")]


class Phone(asyncio.DatagramProtocol):
    """The caller's RTP end, on the port its SDP announces: sends 20 ms PCMU packets (when
    told to) and records when each of the agent's packets arrives."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.sending = False
        self.agent_rtp: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[no-untyped-def]
        self.arrivals.append(time.monotonic())

    async def run(self) -> None:
        seq, ts = 0, 0
        while True:
            await asyncio.sleep(0.02)
            if self.sending and self.agent_rtp is not None and self.transport is not None:
                header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, 0x1234)
                self.transport.sendto(header + b"\xff" * 160, self.agent_rtp)
                seq, ts = seq + 1, ts + 160


async def _hold_call(embedded_bus, tmp_path: Path, hold: str) -> dict:
    rtp = free_udp_port()
    messages = tmp_path / "messages.log"
    scenario = tmp_path / "hold.xml"
    scenario.write_text(_scenario(
        _invite("[branch]", rtp) + '<recv response="100" optional="true"/>\n<recv response="200" rrs="true"/>\n'
        + _in_dialog("ACK", 1) + '<pause milliseconds="1000"/>\n'
        + _invite("[branch]", rtp, cseq=2, to_tag=True, direction=hold, version=2)
        + '<recv response="100" optional="true"/>\n<recv response="200"/>\n'
        + _in_dialog("ACK", 2) + '<pause milliseconds="3000"/>\n'
        + _invite("[branch]", rtp, cseq=3, to_tag=True, direction="sendrecv", version=3)
        + '<recv response="100" optional="true"/>\n<recv response="200"/>\n'
        + _in_dialog("ACK", 3) + '<pause milliseconds="2500"/>\n'
        + _in_dialog("BYE", 4, retrans=True) + '<recv response="200"/>\n'
    ), encoding="utf-8")
    _, phone = await asyncio.get_running_loop().create_datagram_endpoint(Phone, local_addr=("127.0.0.1", rtp))
    phone_task = asyncio.create_task(phone.run())
    transitions: list[tuple[float, bool]] = []
    # rtp_timeout 1.5 s: shorter than the hold, so a watchdog that counted a held caller's
    # silence would hang up the call
    async with SipAgent(embedded_bus, SipAgentConfig(port=0, rtp_timeout_s=1.5)) as agent:
        host, port = agent.address
        sipp = Sipp(tmp_path / "sipp")
        run_task = asyncio.create_task(sipp.run(str(scenario), f"{host}:{port}", "-s", "sales", "-trace_msg",
                                                "-message_file", str(messages), limit_s=30))
        while not agent.calls and not run_task.done():
            await asyncio.sleep(0.01)
        call = next(iter(agent.calls.values()))
        t0 = time.monotonic()
        phone.agent_rtp = ("127.0.0.1", call.media.local_port)
        phone.sending = True
        for _ in range(100):  # 2 s of the bot's speech, queued at once as TTS does
            call.media.enqueue(b"\x7f" * 160)
        last = call.media.sending
        while not run_task.done():
            now = time.monotonic()
            # a phone sends nothing while it holds with a=inactive (sendonly: music on hold)
            if hold == "inactive":
                phone.sending = not (t0 + 0.9 < now < t0 + 4.1)
            if call.media.sending != last:
                last = call.media.sending
                transitions.append((now, last))
            await asyncio.sleep(0.005)
        run = run_task.result()
        await asyncio.sleep(0.2)
    phone_task.cancel()
    phone.transport.close()
    assert run.returncode == 0, run.stderr[-2000:]
    answers = re.findall(r"SIP/2\.0 200 OK.*?CSeq: (\d+) INVITE.*?a=(sendrecv|sendonly|recvonly|inactive)",
                         messages.read_text(errors="replace"), re.S)
    return {"answers": sorted(set(answers)), "transitions": transitions, "arrivals": phone.arrivals,
            "control": log_events(embedded_bus, topics.CONTROL)}


@needs_sipp
@pytest.mark.parametrize("hold,answer", [("sendonly", "recvonly"), ("inactive", "inactive")])
async def test_a_caller_who_holds_gets_the_matching_direction_and_silence_then_the_rest(embedded_bus, tmp_path, hold, answer):
    got = await _hold_call(embedded_bus, tmp_path, hold)
    assert got["answers"] == [("1", "sendrecv"), ("2", answer), ("3", "sendrecv")]
    (held_at, off), (resumed_at, on) = got["transitions"]
    assert (off, on) == (False, True)
    arrivals = got["arrivals"]
    before = [t for t in arrivals if t < held_at]
    # (the switch moments are sampled every 5 ms on a busy loop: 50 ms of slack either side)
    during = [t for t in arrivals if held_at + 0.05 < t < resumed_at - 0.05]
    after = [t for t in arrivals if t >= resumed_at]
    assert len(before) >= 30, "the bot was speaking before the hold"
    assert during == [], f"RTP reached a caller who held the call, {[round(t - held_at, 3) for t in during]} s after"
    # the reply goes on where the hold stopped it: every queued frame reached the caller once
    assert after and len(arrivals) == 100
    ended = [e for e in got["control"] if isinstance(e, ev.CallEnded)]
    assert [e.reason for e in ended] == ["caller_hangup"], "the held call was not hung up for RTP silence"
