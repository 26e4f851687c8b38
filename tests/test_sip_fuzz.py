"""Malformed SIP never crashes the agent: the parser answers every input with a message or one
clear error, and a live agent keeps answering calls after a burst of garbage."""

from __future__ import annotations

import asyncio
import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.sip.agent import SipAgent, SipAgentConfig
from connectors.sip.message import SipParseError, parse_sip
from tests.test_sip_calls import RawPeer

INVITE = (
    "INVITE sip:sales@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds\r\n"
    "Max-Forwards: 70\r\nTo: <sip:sales@127.0.0.1>\r\nFrom: \"客户\" <sip:c@127.0.0.1>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710@127.0.0.1\r\nCSeq: 314159 INVITE\r\nContact: <sip:c@127.0.0.1:5070>\r\n"
    "Content-Type: application/sdp\r\nContent-Length: 120\r\n\r\n"
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
).encode()


def parse_or_clear_error(data: bytes) -> None:
    try:
        parse_sip(data)
    except SipParseError as exc:
        assert str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_are_parsed_or_refused_with_a_reason(data):
    parse_or_clear_error(data)


@st.composite
def mutated_invites(draw):
    data = bytearray(INVITE)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "cut", "dup", "insert"]))
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i : i + draw(st.integers(1, 40))]
        elif op == "dup":
            data[i:i] = data[i : i + draw(st.integers(1, 200))]
        else:
            data[i:i] = draw(st.sampled_from([b"\r\n", b":", b";", b"<", b">", b"\x00", b"Content-Length: -1\r\n",
                                              b"Via: \r\n", b"CSeq: x\r\n", b"\xff\xfe", b"%%%"]))
        if not data:
            break
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_invites())
def test_mutated_invites_are_parsed_or_refused_with_a_reason(data):
    parse_or_clear_error(data)


async def test_a_live_agent_survives_a_burst_of_garbage_and_still_answers(embedded_bus):
    async with SipAgent(embedded_bus, SipAgentConfig(port=0)) as agent:
        junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for i in range(300):
                cut = (i * 37) % len(INVITE)
                junk.sendto(INVITE[:cut] + bytes([i % 256]) * (i % 7) + INVITE[cut + 3 :], agent.address)
            junk.sendto(b"\x00" * 60_000, agent.address)
        finally:
            junk.close()
        await asyncio.sleep(0.3)
        peer = RawPeer()
        # Like any UAC over UDP, the caller retransmits its INVITE until a final response comes
        # (RFC 3261 Timer A: 0.5 s, doubling): a burst this size can fill the agent's socket
        # buffer, and what the kernel drops there only a retransmission brings back.
        response, wait = "", 0.5
        for _ in range(5):
            peer.sock.settimeout(wait)
            peer.invite(agent.address, rtp_port=40010, codecs="18 101")
            try:
                response = await peer.final_response()
                break
            except TimeoutError:
                wait = min(wait * 2, 4.0)
        assert response.startswith("SIP/2.0 488")
