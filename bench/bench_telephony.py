"""Telephony figures, one JSON object per line.

    .venv/bin/python bench/bench_telephony.py                  # all three parts
    .venv/bin/python bench/bench_telephony.py --only row       # 20 baresip calls in a row
    .venv/bin/python bench/bench_telephony.py --only concurrent --calls 10
    .venv/bin/python bench/bench_telephony.py --only fuzz --fuzz-s 60
    ... --pipeline echo                                        # line test instead of the speech stages

row:        a real SIP phone (baresip) calls the agent N times in a row, each time playing a
            recorded Mandarin customer; a lost turn is a caller turn (final transcript) with no
            bot reply, or a call with no bot audio at all (echo: a call whose audio never came back).
concurrent: N callers at once (Python RTP peers: INVITE, then 20 ms RTP of the recording in real
            time); the agent's output audio is timed where it lands, at the callers' sockets.
            Gap = time between two consecutive bot packets of one reply (a silence of 1 s or more
            between packets starts a new reply).  Also reported: the pacer's own worst gap.
fuzz:       random and mutated SIP datagrams into the parser for N seconds; any exception other
            than SipParseError is a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent import events as ev  # noqa: E402
from agent import topics  # noqa: E402
from agent.bus import EmbeddedBus  # noqa: E402
from agent.observability import configure_logging  # noqa: E402
from agent.pipeline import AUDIO_STAGES, build_stage  # noqa: E402
from agent.settings import Settings  # noqa: E402
from agent.testing import running_pipeline  # noqa: E402
from connectors.echo import EchoStage  # noqa: E402
from connectors.sip.agent import SipAgent, SipAgentConfig  # noqa: E402
from connectors.sip.message import SipParseError, parse_sip  # noqa: E402
from connectors.sip.peers import Baresip, to_caller_wav, to_headerless_ulaw  # noqa: E402
from connectors.threaded import ThreadedConnector  # noqa: E402

CLIP = REPO.parent / "shared/data/speech/mandarin/BAC009S0252W0325.wav"  # 业务方面我们要求并不高


def emit(**fields: object) -> None:
    print(json.dumps(fields, ensure_ascii=False), flush=True)


def stages_for(pipeline: str, settings: Settings) -> list:
    if pipeline == "echo":
        return [EchoStage()]
    return [build_stage(n, settings) for n in AUDIO_STAGES]


def rows(bus: EmbeddedBus, topic: str) -> list:
    return [ev.decode(bytes(v)) for (v,) in bus.db.execute("SELECT value FROM log WHERE topic=? ORDER BY ts", (topic,))]


# --- 20 calls in a row -------------------------------------------------------------------------


async def calls_in_a_row(n: int, pipeline: str, workdir: Path) -> None:
    said = to_caller_wav(CLIP, workdir / "said.wav")
    caller = workdir / "customer.wav"
    subprocess.run(["sox", str(said), str(caller), "pad", "0.3", "7" if pipeline == "audio" else "1"], check=True)
    bus = EmbeddedBus(workdir / "row.sqlite")
    await bus.start()
    settings = Settings(data_dir=workdir, models_dir=REPO / ".dianxiao" / "models")
    started = time.perf_counter()
    completed = 0
    async with running_pipeline(bus, settings, stages_for(pipeline, settings)):
        async with SipAgent(bus, SipAgentConfig(port=0)) as agent:
            host, port = agent.address
            for i in range(n):
                phone = Baresip(workdir / f"phone{i}", caller)
                run = await phone.dial(f"sip:sales@{host}:{port}", seconds=15)
                for _ in range(50):
                    if not agent.calls:
                        break
                    await asyncio.sleep(0.1)
                completed += int(run.returncode in (0, 124) and len(phone.heard()) == 1)
            await asyncio.sleep(1.0)
    control = rows(bus, topics.CONTROL)
    calls = [e.call_id for e in control if isinstance(e, ev.CallStarted)]
    ended = {e.call_id for e in control if isinstance(e, ev.CallEnded)}
    out_calls = {e.call_id for e in rows(bus, topics.AUDIO_OUT)}
    if pipeline == "echo":
        turns = len(calls)
        lost = sum(1 for c in calls if c not in out_calls)
    else:
        finals = [(e.call_id, e.turn) for e in rows(bus, topics.TRANSCRIPTS) if isinstance(e, ev.TranscriptFinal)]
        replies = {(e.call_id, e.turn) for e in rows(bus, topics.REPLIES)}
        turns = len(finals)
        lost = sum(1 for t in finals if t not in replies) + sum(1 for c in calls if c not in out_calls)
    await bus.close()
    emit(metric="sip_calls_in_a_row", value=completed, unit="calls", attempted=n, started=len(calls),
         ended=len(ended), caller_turns=turns, lost_turns=lost, pipeline=pipeline, peer="baresip 1.0.0",
         seconds=round(time.perf_counter() - started, 1))


# --- concurrent calls: output audio gaps ---------------------------------------------------------


class RtpCaller:
    """A minimal phone: INVITE over UDP, then 20 ms RTP frames of `ulaw` in real time, recording
    when each of the agent's RTP packets arrives."""

    def __init__(self, agent_addr: tuple[str, int], ulaw: bytes) -> None:
        self.agent = agent_addr
        self.ulaw = ulaw
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.setblocking(False)
        self.call_id = uuid.uuid4().hex
        self.tag = uuid.uuid4().hex[:8]
        self.arrivals: list[float] = []
        self.to_header = ""

    def _send(self, text: str) -> None:
        self.sip.sendto(text.encode(), self.agent)

    def _headers(self, method: str, cseq: int) -> str:
        sport = self.sip.getsockname()[1]
        return (f"Via: SIP/2.0/UDP 127.0.0.1:{sport};branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\nMax-Forwards: 70\r\n"
                f"From: <sip:customer@127.0.0.1:{sport}>;tag={self.tag}\r\n{self.to_header or f'To: <sip:sales@127.0.0.1:{self.agent[1]}>'}\r\n"
                f"Call-ID: {self.call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:customer@127.0.0.1:{sport}>\r\n")

    async def call(self, listen_s: float) -> None:
        loop = asyncio.get_running_loop()
        rport = self.rtp.getsockname()[1]
        sdp = (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=audio {rport} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        self._send(f"INVITE sip:sales@127.0.0.1:{self.agent[1]} SIP/2.0\r\n" + self._headers("INVITE", 1)
                   + f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")
        self.sip.setblocking(False)
        while True:
            text = (await loop.sock_recv(self.sip, 65535)).decode()
            if text.startswith("SIP/2.0 2"):
                break
            if text.startswith("SIP/2.0 ") and int(text.split()[1]) >= 300:
                raise RuntimeError(text.splitlines()[0])
        self.to_header = next(line for line in text.split("\r\n") if line.lower().startswith("to:"))
        agent_rtp = int(text.split("m=audio ")[1].split()[0])
        self._send(f"ACK sip:sales@127.0.0.1:{self.agent[1]} SIP/2.0\r\n" + self._headers("ACK", 1) + "Content-Length: 0\r\n\r\n")
        receiver = asyncio.create_task(self._receive())
        t0 = loop.time()
        silence = b"\xff" * 160
        frames = [self.ulaw[i : i + 160] for i in range(0, len(self.ulaw) - 159, 160)]
        total = len(frames) + int(listen_s * 50)
        for seq in range(total):  # speak, then keep the line open (silence) while listening
            payload = frames[seq] if seq < len(frames) else silence
            self.rtp.sendto(struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, 0x5EED) + payload, ("127.0.0.1", agent_rtp))
            await asyncio.sleep(max(0.0, t0 + (seq + 1) * 0.02 - loop.time()))
        self._send(f"BYE sip:sales@127.0.0.1:{self.agent[1]} SIP/2.0\r\n" + self._headers("BYE", 2) + "Content-Length: 0\r\n\r\n")
        receiver.cancel()

    async def _receive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await loop.sock_recv(self.rtp, 2048)
            self.arrivals.append(time.perf_counter())




async def run_callers(agent: tuple[str, int], ulaw_path: Path, n: int, listen_s: float) -> None:
    """The callers' side, run in a process of its own so that their clocks are not the agent's.
    Real phones do not share the agent's CPU: where allowed, this process runs round-robin
    real-time so that a busy box does not delay the arrival timestamps it measures."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(20))
    except (AttributeError, PermissionError, OSError):
        pass
    ulaw = ulaw_path.read_bytes()
    callers = [RtpCaller(agent, ulaw) for _ in range(n)]
    await asyncio.gather(*(c.call(listen_s=listen_s) for c in callers))
    print(json.dumps({"arrivals": [c.arrivals for c in callers]}), flush=True)


async def concurrent_calls(n: int, pipeline: str, workdir: Path) -> None:
    ulaw_path = to_headerless_ulaw(CLIP, workdir / "said.ulaw")
    bus = EmbeddedBus(workdir / "concurrent.sqlite")
    await bus.start()
    settings = Settings(data_dir=workdir, models_dir=REPO / ".dianxiao" / "models")
    listen_s = 40 if pipeline == "audio" else 1.5  # a loaded 2-core box needs long for 10 Whisper decodes

    async def callers_process(count: int) -> list[list[float]]:
        proc = await asyncio.create_subprocess_exec(
            "timeout", "120", sys.executable, __file__, "--callers", str(count), "--agent", "%s:%d" % agent.address,
            "--ulaw", str(ulaw_path), "--listen-s", str(listen_s), stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return json.loads(out.decode().strip().splitlines()[-1])["arrivals"]

    async with running_pipeline(bus, settings, stages_for(pipeline, settings)):
        async with ThreadedConnector(bus, "sip", lambda bridge: SipAgent(bus, SipAgentConfig(port=0), bridge=bridge)) as media:
            agent = media.connector
            scheduling = media.scheduling
            pacer_gaps: list[float] = []
            # one call first, not measured: the first call pays for lazy imports and cold caches
            await callers_process(1)
            original_end = agent._end

            async def keep_pacer_gap(call, reason, **kw):  # read the pacer's own figure before it goes
                pacer_gaps.append(call.media.pacer.max_gap_s * 1000)
                await original_end(call, reason, **kw)

            agent._end = keep_pacer_gap  # type: ignore[method-assign]
            started = time.perf_counter()
            arrivals = await callers_process(n)
            await asyncio.sleep(1.0)
    await bus.close()
    gaps = sorted((y - x) * 1000 for a in arrivals for x, y in zip(a, a[1:]) if y - x < 1.0)
    late = [round(x - a[0], 2) for a in arrivals for x, y in zip(a, a[1:]) if 0.06 < y - x < 1.0]
    p99 = gaps[int(0.99 * (len(gaps) - 1))] if gaps else None
    emit(metric="concurrent_calls_max_output_gap_ms", value=round(gaps[-1], 1) if gaps else None, unit="ms",
         calls=n, calls_with_bot_audio=sum(1 for a in arrivals if a), bot_packets=sum(len(a) for a in arrivals),
         p99_gap_ms=round(p99, 1) if p99 is not None else None,
         pacer_max_gap_ms=round(max(pacer_gaps), 1) if pacer_gaps else None, target_ms=60, pipeline=pipeline,
         gaps_over_60ms=len(late), late_at_s=late[:10], media_thread=scheduling,
         seconds=round(time.perf_counter() - started, 1))


# --- fuzzing the SIP parser -----------------------------------------------------------------------

SEED = (
    b"INVITE sip:sales@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds\r\n"
    b"Max-Forwards: 70\r\nTo: <sip:sales@127.0.0.1>\r\nFrom: <sip:c@127.0.0.1>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@127.0.0.1\r\nCSeq: 314159 INVITE\r\nContact: <sip:c@127.0.0.1:5070>\r\n"
    b"Content-Type: application/sdp\r\nContent-Length: 53\r\n\r\nv=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n"
)
TOKENS = [b"\r\n", b":", b";", b",", b"<", b">", b"\"", b"\x00", b"\xff", b"Via: ", b"CSeq: ", b"Content-Length: ",
          b"-1", b"99999999999999999999", b"SIP/2.0", b"sip:", b"=", b"%", b" " * 100]


def fuzz(seconds: float, seed: int = 5) -> None:
    rng = random.Random(seed)
    inputs = crashes = parsed = 0
    first_crash = None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if rng.random() < 0.2:
            data = rng.randbytes(rng.randint(0, 1500))
        else:
            buf = bytearray(SEED)
            for _ in range(rng.randint(1, 12)):
                i = rng.randrange(len(buf) or 1)
                op = rng.randrange(4)
                if op == 0 and buf:
                    buf[i % len(buf)] = rng.randrange(256)
                elif op == 1:
                    del buf[i : i + rng.randint(1, 30)]
                elif op == 2:
                    buf[i:i] = buf[i : i + rng.randint(1, 300)]
                else:
                    buf[i:i] = rng.choice(TOKENS)
            data = bytes(buf)
        inputs += 1
        try:
            parse_sip(data)
            parsed += 1
        except SipParseError:
            pass
        except Exception as exc:  # noqa: BLE001 - that is exactly what we count
            crashes += 1
            first_crash = first_crash or f"{type(exc).__name__}: {exc} on {data[:80]!r}"
    emit(metric="sip_parser_fuzz_crashes", value=crashes, unit="crashes", seconds=seconds, inputs=inputs,
         parsed_ok=parsed, first_crash=first_crash)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["row", "concurrent", "fuzz"])
    ap.add_argument("--row-calls", type=int, default=20)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--fuzz-s", type=float, default=60.0)
    ap.add_argument("--pipeline", choices=["audio", "echo"], default="audio")
    ap.add_argument("--callers", type=int, help=argparse.SUPPRESS)  # internal: the callers' process
    ap.add_argument("--agent", help=argparse.SUPPRESS)
    ap.add_argument("--ulaw", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--listen-s", type=float, default=1.5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    configure_logging("WARNING")
    if args.callers:
        host, port = args.agent.rsplit(":", 1)
        await run_callers((host, int(port)), args.ulaw, args.callers, args.listen_s)
        return
    # the media thread gets the GIL back within 1 ms of asking (CPython's default is 5 ms)
    sys.setswitchinterval(0.001)
    with tempfile.TemporaryDirectory(prefix="bench-telephony-") as tmp:
        work = Path(tmp)
        if args.only in (None, "fuzz"):
            fuzz(args.fuzz_s)
        if args.only in (None, "concurrent"):
            await concurrent_calls(args.calls, args.pipeline, work)
        if args.only in (None, "row"):
            await calls_in_a_row(args.row_calls, args.pipeline, work)


if __name__ == "__main__":
    asyncio.run(main())
