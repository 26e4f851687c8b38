"""Malformed SIP never breaks the agent.  The fuzz goes through the path production uses: each
input is handed to the live agent's own UDP protocol handler (size cap -> aiosipua's parser ->
Via stamping -> the UAS and its handlers -> our INVITE guard, call answering and re-INVITE
code), with a call up so in-dialog requests (BYE, re-INVITE, CANCEL, ACK) reach a real dialog.

A failure is what production would suffer: an exception escaping a handler (aiosipua catches it
and logs "Error in message callback": the peer gets no answer), or an exception in a task the
agent spawned (answering, re-INVITE, ending a call).  A datagram the parser refuses is fine (it
is logged as a warning and dropped).  Afterwards the same agent must still answer a real call.

Inputs are generated from a fixed seed: a failure names the seed and input number to replay."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time

from connectors.sip.agent import SipAgent, SipAgentConfig
from tests.test_sip_calls import RawPeer

SEED = int(os.environ.get("DIANXIAO_FUZZ_SEED", "16"))
INPUTS = int(os.environ.get("DIANXIAO_FUZZ_INPUTS", "3000"))

SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n")


def request(method: str, call_id: str, from_tag: str, to_tag: str | None, cseq: int, body: str = "",
            branch: str = "z9hG4bK776asdhds") -> bytes:
    to = "<sip:sales@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} sip:sales@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\nTo: {to}\r\nFrom: \"客户\" <sip:c@127.0.0.1:5070>;tag={from_tag}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:c@127.0.0.1:5070>\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
    ).encode()


_INSERTS = [b"\r\n", b":", b";", b"<", b">", b"\x00", b"Content-Length: -1\r\n", b"Content-Length: 99999\r\n",
            b"Via: \r\n", b"CSeq: x\r\n", b"CSeq: 4294967296 INVITE\r\n", b"\xff\xfe", b"%%%", b"tag=",
            b"To: <sip:a@b>;tag=\r\n", b"m=audio 0 RTP/AVP 0\r\n", b"c=IN IP4 0.0.0.0\r\n", b"a=inactive\r\n",
            b"a=rtpmap:0\r\n", b"m=video 5 RTP/AVP 96\r\n", b";branch=", b"Via: SIP/2.0/UDP [::1]:x\r\n",
            b"Call-ID: \r\n", b" \t", b"\r\n\r\n"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not out:
            break
        op = rng.choice(["flip", "cut", "dup", "insert"])
        i = rng.randrange(len(out))
        if op == "flip":
            out[i] = rng.randrange(256)
        elif op == "cut":
            del out[i : i + rng.randint(1, 40)]
        elif op == "dup":
            out[i:i] = out[i : i + rng.randint(1, 200)]
        else:
            out[i:i] = rng.choice(_INSERTS)
    return bytes(out)


class Escaped(logging.Handler):
    """Collects what aiosipua logs at ERROR: an exception that escaped a handler."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_fuzzed_sip_through_the_agents_own_handler_breaks_nothing_and_a_real_call_follows(embedded_bus):
    escaped = Escaped()
    # aiosipua's handlers, and asyncio's "Fatal write error" (a transport it then closes)
    watched_logs = [logging.getLogger("aiosipua"), logging.getLogger("asyncio")]
    for lib_log in watched_logs:
        lib_log.addHandler(escaped)
    task_failures: list[str] = []
    rng = random.Random(SEED)
    started = time.monotonic()
    try:
        async with SipAgent(embedded_bus, SipAgentConfig(port=0)) as agent:
            spawn = agent._spawn

            def watched_spawn(coro):  # type: ignore[no-untyped-def]
                spawn(coro)
                newest = max(agent._tasks, key=id) if agent._tasks else None
                for task in list(agent._tasks):
                    task.add_done_callback(lambda t: t.cancelled() or t.exception() is None
                                           or task_failures.append(repr(t.exception())))
                del newest

            agent._spawn = watched_spawn  # type: ignore[method-assign]
            # a live call, so the in-dialog requests below reach a real dialog
            peer = RawPeer()
            peer.invite(agent.address, rtp_port=40020, codecs="0 101")
            ok = await peer.final_response()
            assert ok.startswith("SIP/2.0 200"), ok
            peer.ack(ok, agent.address)
            to_tag = ok.split("\r\nTo:")[1].split("\r\n")[0].split("tag=")[1]
            protocol = agent.transport._udp_transport.get_protocol()  # the socket's own handler
            seeds = [
                request("INVITE", "fuzz@127.0.0.1", "1928301774", None, 314159, SDP.replace("a=sendonly\r\n", "")),
                request("INVITE", peer.call_id, peer.tag, to_tag, 5, SDP),  # re-INVITE (hold) on the live call
                request("BYE", peer.call_id, peer.tag, to_tag, 6),
                request("CANCEL", peer.call_id, peer.tag, None, 1, branch=peer.branch),
                request("ACK", peer.call_id, peer.tag, to_tag, 5),
                request("INFO", peer.call_id, peer.tag, to_tag, 7),
            ]
            kinds = {"random": 0, "mutated": 0}
            for n in range(INPUTS):
                if rng.random() < 0.15:
                    data, kind = rng.randbytes(rng.randint(0, 2048)), "random"
                else:
                    data, kind = mutate(rng, rng.choice(seeds)), "mutated"
                kinds[kind] += 1
                before = len(escaped.records) + len(task_failures)
                protocol.datagram_received(data, ("127.0.0.1", 5070))
                if n % 25 == 0:
                    await asyncio.sleep(0)  # let spawned answers and re-INVITE handling run
                assert len(escaped.records) + len(task_failures) == before, (
                    f"seed {SEED} input {n}: {data[:300]!r} -> "
                    f"{[r.getMessage() + ' ' + repr(r.exc_info[1]) for r in escaped.records] + task_failures}")
            await asyncio.sleep(0.5)
            assert not task_failures and not escaped.records, (task_failures, [r.getMessage() for r in escaped.records])
            elapsed = time.monotonic() - started
            # and the agent still answers a real call, on the wire
            caller = RawPeer()
            caller.invite(agent.address, rtp_port=40030, codecs="0 101")
            answer = await asyncio.wait_for(caller.final_response(), 10)
            assert answer.startswith("SIP/2.0 200"), answer
            assert "m=audio" in answer
            caller.ack(answer, agent.address)
            print(f"fuzz: {INPUTS} inputs ({kinds}) in {elapsed:.1f} s, seed {SEED}, "
                  f"merged refused {agent.uas.merged_refused}, retransmissions absorbed {agent.uas.retransmissions_absorbed}")
    finally:
        for lib_log in watched_logs:
            lib_log.removeHandler(escaped)
