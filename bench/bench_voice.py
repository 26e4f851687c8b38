"""Voice-to-voice latency over real SIP, one JSON object per line (issue 17).

    .venv/bin/python bench/bench_voice.py                       # N = 1, 2, 4, 8, 10 concurrent calls
    .venv/bin/python bench/bench_voice.py --calls 1,10 --turns 4
    .venv/bin/python bench/bench_voice.py --calls 20 --capacity 10   # admission at 2x capacity

The agent is `dianxiao sip serve --pipeline audio` in a process of its own (embedded bus in a
temporary directory).  This process is the callers: each one INVITEs, then sends 20 ms PCMU RTP
in real time for the whole call (silence between turns, as a phone does) and plays the shared
Mandarin clips (../shared/data/speech) as its turns; every other turn has a pause of
`--pause-ms` inserted mid-sentence (at the quietest 20 ms of the middle third) to catch
premature endpoints.  After each turn the caller waits for the bot's reply to finish.

Measured at the caller's socket:
- voice-to-voice: end of the caller's speech (the last 20 ms frame above the clip's speech
  level, sent in real time) -> the first bot RTP packet after it;
- premature endpoint: the bot's audio started while the caller was still speaking that turn;
- reply-audio gaps: time between consecutive bot packets of one reply (> 60 ms counted);
- unanswered: an admitted call with a turn that got no reply within `--reply-timeout-s`;
- refused: INVITEs the agent answered 486/503 (admission control, `DIANXIAO_MAX_CALLS`).
The per-stage breakdown comes from the agent's call log (event wall clocks, same machine):
endpointing (speech end -> VAD's final segment), asr (-> transcript.final), dialogue (nlu +
dst + policy, -> bot.reply), tts (-> first audio.out frame), media (-> first RTP packet).
Every line carries the 1-minute load average: the box is shared, so read figures beside it.
The last line names the knee: the largest N whose p95 stays under `--bar-p95-s`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent import events as ev  # noqa: E402
from agent.machine import machine  # noqa: E402
from agent.percentiles import percentile  # noqa: E402
from agent.speech.codec import ulaw_encode  # noqa: E402

SPEECH = REPO.parent / "shared/data/speech"
FRAME = 160  # 20 ms of 8 kHz mu-law
SILENCE = b"\xff" * FRAME


def emit(**fields: object) -> None:
    fields.setdefault("load_avg_1m", round(os.getloadavg()[0], 2))
    if fields.get("metric") != "turn":
        fields.setdefault("machine", machine())
    print(json.dumps(fields, ensure_ascii=False), flush=True)


def pct(values: list[float], q: float) -> float | None:
    p = percentile(values, q)
    return None if p is None else round(p, 3)


# --- the caller's audio ----------------------------------------------------------------------


def load_8k(path: Path) -> np.ndarray:
    from agent.audiocall import read_wav
    from agent.speech.codec import resample

    audio, rate = read_wav(path)
    return resample(audio.astype(np.int16), rate, 8000) if rate != 8000 else audio.astype(np.int16)


def speech_span(pcm: np.ndarray) -> tuple[int, int]:
    """(first, last+1) 20 ms frame index whose RMS is within 30 dB of the loudest frame."""
    n = len(pcm) // FRAME
    rms = np.sqrt(np.mean(pcm[: n * FRAME].reshape(n, FRAME).astype(np.float64) ** 2, axis=1)) + 1e-9
    loud = np.nonzero(20 * np.log10(rms / rms.max()) > -30)[0]
    return int(loud[0]), int(loud[-1]) + 1


def with_pause(pcm: np.ndarray, pause_ms: int) -> np.ndarray:
    """The clip with `pause_ms` of silence at its quietest 20 ms in the middle third of speech."""
    a, b = speech_span(pcm)
    lo, hi = a + (b - a) // 3, a + 2 * (b - a) // 3
    frames = pcm[lo * FRAME : hi * FRAME].reshape(-1, FRAME).astype(np.float64)
    cut = (lo + int(np.argmin(np.mean(frames**2, axis=1)))) * FRAME
    return np.concatenate([pcm[:cut], np.zeros(pause_ms * 8, dtype=np.int16), pcm[cut:]])


_REFERENCE_VAD = None


def acoustic_end_frame(pcm8k: np.ndarray) -> int:
    """The 20 ms frame after the caller's last speech: the end of the last 32 ms window a fresh
    Silero scores >= 0.5 on the clean clip (the reference; the AISHELL clips end in a low
    fading tail that an energy threshold counts as speech).  The live VAD's own tail, jitter
    buffer and pause come after this point and are part of the measured latency."""
    global _REFERENCE_VAD
    from agent.settings import Settings
    from agent.speech import assets
    from agent.speech.codec import resample
    from agent.speech.models import WINDOW, SileroState, SileroVad

    if _REFERENCE_VAD is None:
        _REFERENCE_VAD = SileroVad(assets.silero_vad_path(Settings().speech_models_dir))
    pcm = resample(pcm8k, 8000, 16000).astype(np.float32) / 32768.0
    state, last = SileroState(), 0
    for i in range(len(pcm) // WINDOW):
        if _REFERENCE_VAD.probability(state, pcm[i * WINDOW : (i + 1) * WINDOW]) >= 0.5:
            last = (i + 1) * WINDOW
    return min(len(pcm8k) // FRAME, -(-last // 2 // FRAME))


class Turn:
    def __init__(self, name: str, pcm: np.ndarray, paused: bool) -> None:
        self.name, self.paused = name, paused
        self.frames = [ulaw_encode(pcm[i : i + FRAME]) for i in range(0, len(pcm) - FRAME + 1, FRAME)]
        self.speech_end_frame = acoustic_end_frame(pcm)


def turns_from_clips(pause_ms: int) -> list[Turn]:
    items = [json.loads(line) for line in (SPEECH / "manifest.jsonl").read_text().splitlines() if line.strip()]
    out = []
    for i, item in enumerate(x for x in items if x["language"] == "zh"):
        pcm = load_8k(SPEECH / item["audio"])
        paused = i % 2 == 1
        out.append(Turn(item["audio"], with_pause(pcm, pause_ms) if paused else pcm, paused))
    return out


# --- one SIP caller ----------------------------------------------------------------------------


class Caller:
    def __init__(self, agent: tuple[str, int], turns: list[Turn], reply_timeout_s: float) -> None:
        self.agent, self.turns, self.reply_timeout_s = agent, turns, reply_timeout_s
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.sip.setblocking(False)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.setblocking(False)
        self.call_id = uuid.uuid4().hex
        self.tag = uuid.uuid4().hex[:8]
        self.to_header = ""
        self.arrivals: list[float] = []
        self.rtp_seqs: list[int] = []  # the agent's RTP sequence number of each arrival
        self.results: list[dict] = []
        self.status = "calling"  # -> answered | refused | failed
        self.refused_with = ""
        self.bye_from_agent = False
        self._seq = 0
        self._outbox: list[bytes] = []

    @property
    def bus_call_id(self) -> str:  # connectors/sip/agent.py bus_call_id
        return "sip-" + hashlib.sha1(self.call_id.encode()).hexdigest()[:20]

    def _send(self, text: str) -> None:
        self.sip.sendto(text.encode(), self.agent)

    def _headers(self, method: str, cseq: int) -> str:
        sport = self.sip.getsockname()[1]
        to = self.to_header or f"To: <sip:sales@127.0.0.1:{self.agent[1]}>"
        return (f"Via: SIP/2.0/UDP 127.0.0.1:{sport};branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\nMax-Forwards: 70\r\n"
                f"From: <sip:customer@127.0.0.1:{sport}>;tag={self.tag}\r\n{to}\r\n"
                f"Call-ID: {self.call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:customer@127.0.0.1:{sport}>\r\n")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        rport = self.rtp.getsockname()[1]
        sdp = (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=audio {rport} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        self._send(f"INVITE sip:sales@127.0.0.1:{self.agent[1]} SIP/2.0\r\n" + self._headers("INVITE", 1)
                   + f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")
        try:
            while True:
                text = (await asyncio.wait_for(loop.sock_recv(self.sip, 65535), 30)).decode()
                if text.startswith("SIP/2.0 2"):
                    break
                if text.startswith("SIP/2.0 ") and int(text.split()[1]) >= 300:
                    self.status, self.refused_with = "refused", text.splitlines()[0]
                    retry = [ln for ln in text.split("\r\n") if ln.lower().startswith("retry-after")]
                    self.refused_with += (" " + retry[0]) if retry else ""
                    self.to_header = next(ln for ln in text.split("\r\n") if ln.lower().startswith("to:"))
                    self._send(f"ACK sip:sales@127.0.0.1:{self.agent[1]} SIP/2.0\r\n" + self._headers("ACK", 1)
                               + "Content-Length: 0\r\n\r\n")
                    return
        except asyncio.TimeoutError:
            self.status = "failed"
            return
        self.status = "answered"
        self.to_header = next(ln for ln in text.split("\r\n") if ln.lower().startswith("to:"))
        agent_rtp = int(text.split("m=audio ")[1].split()[0])
        self._send(f"ACK sip:sales@127.0.0.1:{self.agent[1]} SIP/2.0\r\n" + self._headers("ACK", 1)
                   + "Content-Length: 0\r\n\r\n")
        receiver = asyncio.create_task(self._receive())
        signalling = asyncio.create_task(self._signalling())
        sender = asyncio.create_task(self._send_rtp(agent_rtp))
        try:
            await self._converse()
        finally:
            sender.cancel()
            if not self.bye_from_agent:
                self._send(f"BYE sip:sales@127.0.0.1:{self.agent[1]} SIP/2.0\r\n" + self._headers("BYE", 2)
                           + "Content-Length: 0\r\n\r\n")
            await asyncio.sleep(0.2)
            receiver.cancel()
            signalling.cancel()

    async def _send_rtp(self, port: int) -> None:
        """20 ms RTP for the whole call, on the wall clock: the turn's frames, else silence."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while True:
            payload = self._outbox.pop(0) if self._outbox else SILENCE
            seq = self._seq
            self.rtp.sendto(struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, (seq * FRAME) & 0xFFFFFFFF, 0x5EED) + payload,
                            ("127.0.0.1", port))
            self._seq += 1
            if self._on_frame_sent is not None:
                self._on_frame_sent(seq)
            await asyncio.sleep(max(0.0, t0 + self._seq * 0.02 - loop.time()))

    _on_frame_sent = None

    async def _converse(self) -> None:
        await self._quiet_for(0.8, first_within=2.0)  # a greeting, if the agent has one
        for turn in self.turns:
            if self.bye_from_agent:
                return
            end_at: list[float] = []
            target = len(turn.frames)

            def sent(seq: int, base=self._seq + len(self._outbox), stop=turn.speech_end_frame) -> None:
                if seq == base + stop - 1 and not end_at:
                    end_at.append(time.time() + 0.02)  # the last speech frame has left (its 20 ms)

            started = time.time()
            self._on_frame_sent = sent
            self._outbox.extend(turn.frames)
            while self._outbox:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.04)
            self._on_frame_sent = None
            speech_end = end_at[0] if end_at else started + target * 0.02
            early = [t for t in self.arrivals if started < t < speech_end]
            deadline = time.time() + self.reply_timeout_s
            first = None
            while time.time() < deadline and not self.bye_from_agent:
                after = [t for t in self.arrivals if t >= speech_end]
                if after:
                    first = after[0]
                    break
                await asyncio.sleep(0.01)
            if first is not None:
                await self._quiet_for(0.8)
            reply = [t for t in self.arrivals if first is not None and t >= first]
            gaps = [b - a for a, b in zip(reply, reply[1:]) if b - a < 0.8]
            # where each gap > 60 ms is: when, how long, how many packets came within 5 ms after
            # it (a burst = they were sent on time and read late: the receiving side stalled;
            # none = the sender's clock stopped), and whether RTP sequence numbers were skipped
            at = next((i for i, t in enumerate(self.arrivals) if first is not None and t >= first), len(self.arrivals))
            gap_detail = []
            for i in range(at + 1, len(self.arrivals)):
                g = self.arrivals[i] - self.arrivals[i - 1]
                if 0.06 < g < 0.8:
                    burst = sum(1 for t in self.arrivals[i + 1 : i + 20] if t - self.arrivals[i] < 0.005)
                    gap_detail.append({"at": round(self.arrivals[i - 1], 3), "ms": round(g * 1000, 1), "burst": burst,
                                       "seq_step": (self.rtp_seqs[i] - self.rtp_seqs[i - 1]) & 0xFFFF,
                                       "packet": i - at})
            self.results.append({
                "clip": turn.name, "paused": turn.paused, "speech_end": speech_end,
                "first_packet": first, "latency_s": None if first is None or early else first - speech_end,
                "premature": bool(early), "answered": first is not None,
                "gaps_over_60ms": sum(1 for g in gaps if g > 0.06), "max_gap_ms": round(max(gaps) * 1000, 1) if gaps else None,
                "gap_detail": gap_detail,
            })
            await asyncio.sleep(0.3 + random.random() * 0.4)  # the caller thinks before the next turn

    async def _quiet_for(self, quiet_s: float, first_within: float | None = None) -> None:
        """Until the bot has been silent for `quiet_s` (bounded by the reply timeout)."""
        give_up = time.time() + self.reply_timeout_s
        if first_within is not None:
            until = time.time() + first_within
            n = len(self.arrivals)
            while time.time() < until and len(self.arrivals) == n:
                await asyncio.sleep(0.02)
            if len(self.arrivals) == n:
                return
        while (not self.bye_from_agent and time.time() < give_up
               and (not self.arrivals or time.time() - self.arrivals[-1] < quiet_s)):
            await asyncio.sleep(0.02)

    async def _receive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            packet = await loop.sock_recv(self.rtp, 2048)
            self.arrivals.append(time.time())
            self.rtp_seqs.append(struct.unpack("!H", packet[2:4])[0] if len(packet) >= 4 else -1)

    async def _signalling(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            text = (await loop.sock_recv(self.sip, 65535)).decode(errors="replace")
            if text.startswith("BYE "):
                self.bye_from_agent = True
                head = {ln.split(":", 1)[0].lower(): ln for ln in text.split("\r\n") if ":" in ln}
                self._send("SIP/2.0 200 OK\r\n" + "\r\n".join(head[h] for h in ("via", "from", "to", "call-id", "cseq")
                                                               if h in head) + "\r\nContent-Length: 0\r\n\r\n")


# --- the agent under test -------------------------------------------------------------------------


class Agent:
    def __init__(self, work: Path, sip_port: int, metrics_port: int, env: dict[str, str]) -> None:
        self.work, self.sip_port, self.metrics_port = work, sip_port, metrics_port
        self.env = {**os.environ, "DIANXIAO_METRICS_PORT": str(metrics_port), "DIANXIAO_LOG_LEVEL": "WARNING", **env}
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Agent":
        exe = REPO / ".venv/bin/dianxiao"
        cmd = [str(exe) if exe.exists() else "dianxiao", "sip", "serve", "--port", str(self.sip_port),
               "--pipeline", "audio", "--data-dir", str(self.work)]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=open(self.work / "agent.out", "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: {(self.work / 'agent.out').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("agent not ready in 120 s")

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("dianxiao_") and " " in line:
                    name, _, value = line.rpartition(" ")
                    try:
                        out[name] = float(value)
                    except ValueError:
                        pass
        return out

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def stage_breakdown(db_path: Path, callers: list[Caller]) -> list[dict]:
    """Per answered turn: where the time went, from the agent's call log."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    rows: dict[str, list] = {}
    for key, value in db.execute("SELECT key, value FROM log WHERE topic IN "
                                 "('speech.segments','transcripts','bot.replies','audio.out') ORDER BY ts"):
        try:
            e = ev.decode(bytes(value))
        except ev.EventError:
            continue
        if isinstance(e, ev.AudioFrame) and e.frame_index != 0:
            continue
        if isinstance(e, ev.SpeechSegment) and not e.final:
            continue
        rows.setdefault(key, []).append(e)
    db.close()
    out = []
    for c in callers:
        events = rows.get(c.bus_call_id, [])
        for r in c.results:
            if r["latency_s"] is None:
                continue
            seg = [e for e in events if isinstance(e, ev.SpeechSegment) and r["speech_end"] - 1 < e.ts_wall < r["first_packet"]]
            if not seg:
                continue
            seg = seg[-1]
            tr = next((e for e in events if isinstance(e, ev.TranscriptFinal) and e.turn == seg.turn), None)
            rep = next((e for e in events if isinstance(e, ev.BotReply) and e.turn == seg.turn), None)
            frame = next((e for e in events if isinstance(e, ev.AudioFrame) and rep and e.reply_event_id == rep.event_id), None)
            if not (tr and rep and frame):
                continue
            out.append({"endpoint": seg.ts_wall - r["speech_end"], "asr": tr.ts_wall - seg.ts_wall,
                        "dialogue": rep.ts_wall - tr.ts_wall, "tts": frame.ts_wall - rep.ts_wall,
                        "media": r["first_packet"] - frame.ts_wall, "heard": tr.text, "clip": r["clip"],
                        "segment_ms": seg.end_ms - seg.start_ms, "latency_s": r["latency_s"]})
    return out


async def round_of(n: int, agent_addr: tuple[str, int], turns: list[Turn], per_call: int, reply_timeout_s: float,
                   stagger_s: float) -> list[Caller]:
    callers = []
    for i in range(n):
        picked = [turns[(i * per_call + k) % len(turns)] for k in range(per_call)]
        callers.append(Caller(agent_addr, picked, reply_timeout_s))

    async def start(i: int, c: Caller) -> None:
        await asyncio.sleep(stagger_s * i / max(1, n))
        await c.run()

    await asyncio.gather(*(start(i, c) for i, c in enumerate(callers)))
    return callers


def summarise(n: int, callers: list[Caller], stages: list[dict], metrics: dict[str, float], seconds: float) -> dict:
    answered = [c for c in callers if c.status == "answered"]
    results = [r for c in answered for r in c.results]
    lat = [r["latency_s"] for r in results if r["latency_s"] is not None]
    breakdown = {k: {"p50_ms": round(1000 * pct([s[k] for s in stages], 0.5), 0),
                     "p95_ms": round(1000 * pct([s[k] for s in stages], 0.95), 0)}
                 for k in ("endpoint", "asr", "dialogue", "tts", "media")} if stages else {}
    return dict(
        metric="voice_to_voice", calls=n, admitted=len(answered),
        refused=sum(1 for c in callers if c.status == "refused"), failed=sum(1 for c in callers if c.status == "failed"),
        refusals=sorted({c.refused_with for c in callers if c.refused_with}),
        turns=len(results), p50_s=pct(lat, 0.5), p95_s=pct(lat, 0.95), max_s=pct(lat, 1.0),
        premature=sum(r["premature"] for r in results),
        premature_rate=round(sum(r["premature"] for r in results) / len(results), 3) if results else None,
        premature_paused_turns=sum(r["premature"] for r in results if r["paused"]),
        paused_turns=sum(r["paused"] for r in results),
        unanswered_turns=sum(1 for r in results if not r["answered"]),
        calls_with_unanswered_turn=sum(1 for c in answered if any(not r["answered"] for r in c.results)),
        bye_from_agent=sum(c.bye_from_agent for c in answered),
        reply_gaps_over_60ms=sum(r["gaps_over_60ms"] for r in results),
        reply_max_gap_ms=max((r["max_gap_ms"] for r in results if r["max_gap_ms"]), default=None),
        stages=breakdown,
        vad_lag_s=metrics.get('dianxiao_stage_event_age_seconds{stage="vad"}'),
        seconds=round(seconds, 1),
    )


class _kept:
    """`--keep DIR` in place of the temporary directory: the same context protocol, nothing removed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> str:
        return str(self.path)

    def __exit__(self, *exc: object) -> None:
        return None


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", default="1,2,4,8,10", help="comma-separated concurrent call counts, one round each")
    ap.add_argument("--turns", type=int, default=4, help="caller turns per call")
    ap.add_argument("--pause-ms", type=int, default=600, help="mid-sentence pause inserted in every other turn")
    ap.add_argument("--reply-timeout-s", type=float, default=30.0)
    ap.add_argument("--stagger-s", type=float, default=3.0, help="calls start spread over this many seconds")
    ap.add_argument("--capacity", type=int, default=None, help="DIANXIAO_MAX_CALLS for the agent (admission)")
    ap.add_argument("--bar-p95-s", type=float, default=1.5)
    ap.add_argument("--verbose", action="store_true", help="a line per answered turn")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the agent (repeatable)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="run the agent in this directory and keep it (bus.sqlite call log, agent.out) to diagnose")
    args = ap.parse_args()
    try:  # the callers are phones, not the agent: their clocks should not wait for its CPU.
        # RESET_ON_FORK: the agent we start must run under the policy it gets in production, not
        # inherit ours (inherited, every Whisper/ONNX thread of the agent outranked its own media
        # thread and stalled the playout clock for a whole decode).
        os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(20))
    except (AttributeError, PermissionError, OSError):
        pass
    random.seed(17)
    env = dict(kv.split("=", 1) for kv in args.env)
    if args.capacity is not None:
        env["DIANXIAO_MAX_CALLS"] = str(args.capacity)
    turns = turns_from_clips(args.pause_ms)
    ports = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if not ports else socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
        s.close()
    knee = None
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    with (tempfile.TemporaryDirectory(prefix="bench-voice-") if args.keep is None else _kept(args.keep)) as tmp, \
            Agent(Path(tmp), ports[0], ports[1], env) as agent:
        addr = ("127.0.0.1", ports[0])
        await round_of(1, addr, turns[:2], 2, args.reply_timeout_s, 0)  # warm-up, not measured
        for n in [int(x) for x in args.calls.split(",")]:
            started = time.perf_counter()
            callers = await round_of(n, addr, turns, args.turns, args.reply_timeout_s, args.stagger_s if n > 1 else 0)
            took = time.perf_counter() - started
            await asyncio.sleep(1.0)
            stages = stage_breakdown(Path(tmp) / "bus.sqlite", callers)
            if args.verbose:
                for st in stages:
                    emit(metric="turn", **{k: round(v, 3) if isinstance(v, float) else v for k, v in st.items()})
            if args.keep is not None:  # every caller's turns, for reading beside the call log
                with open(args.keep / f"turns-{n}.jsonl", "w") as f:
                    for c in callers:
                        for r in c.results:
                            f.write(json.dumps({"call_id": c.bus_call_id, **r}, ensure_ascii=False) + "\n")
            line = summarise(n, callers, stages, agent.metrics(), took)
            emit(**line)
            if line["p95_s"] is not None and line["p95_s"] <= args.bar_p95_s and not line["unanswered_turns"]:
                knee = n
            await asyncio.sleep(2.0)
        m = agent.metrics()
        emit(metric="voice_knee", calls_within_bar=knee, bar_p95_s=args.bar_p95_s,
             calls_admitted=m.get('dianxiao_calls_admitted_total{connector="sip"}'),
             calls_refused=m.get('dianxiao_calls_refused_total{connector="sip"}'),
             superseded_partials=m.get('dianxiao_superseded_dropped_total{stage="asr"}'))


if __name__ == "__main__":
    asyncio.run(main())
