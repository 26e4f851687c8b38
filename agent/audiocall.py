"""An audio-mode caller over the real topics, like agent/textcall.py but with a voice.

It plays caller recordings as 20 ms 8 kHz mu-law frames on audio.in, paced like a phone line
(real time, or `speed` times faster), streaming silence between utterances as a line does; and
it plays the bot: frames from audio.out go into a playout queue drained at 20 ms per frame, so
the reply WAV it writes is what the caller would have heard.  A BargeIn on call.control drops
the rest of that reply from the queue - the same job a SIP/RTP connector does - and the time
from the BargeIn to the last frame of that reply actually played is recorded.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import wave
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent import events as ev
from agent import topics
from agent.bus.base import Bus
from agent.reply_gate import ReplyGate
from agent.speech.codec import PHONE_RATE, ulaw_decode
from agent.speech.frames import pcm_to_ulaw_frames

CALLER = "caller-audio"
SILENCE_ULAW = b"\xff" * ev.FRAME_BYTES["pcmu8k"]


@dataclass
class Utterance:
    """What the caller says: a 16-bit mono WAV (any rate) or samples, and when to say it:
    after the bot's reply to the previous utterance has finished (`barge_in_after_ms` None), or
    that many ms after that reply started playing (speaking over the bot)."""

    audio: Path | np.ndarray
    rate: int = 16000
    barge_in_after_ms: int | None = None


@dataclass
class AudioCall:
    call_id: str
    transcripts: list[ev.TranscriptFinal] = field(default_factory=list)
    partials: list[ev.TranscriptPartial] = field(default_factory=list)
    replies: list[ev.BotReply] = field(default_factory=list)
    barge_ins: list[ev.BargeIn] = field(default_factory=list)
    #: per barged-in reply: ms from the BargeIn event to the last frame of that reply played
    stop_latency_ms: dict[str, float] = field(default_factory=dict)
    #: mu-law 8 kHz payloads as heard by the caller, one per 20 ms tick (silence when quiet)
    bot_track: list[bytes] = field(default_factory=list)
    caller_track: list[bytes] = field(default_factory=list)
    bot_frames_played: dict[str, int] = field(default_factory=dict)

    def bot_audio_ms(self) -> int:
        return sum(self.bot_frames_played.values()) * ev.FRAME_MS

    def write_wav(self, path: Path, stereo: bool = False) -> Path:
        """The bot's side as heard (mono), or caller left + bot right (stereo), 8 kHz PCM16."""
        bot = ulaw_decode(b"".join(self.bot_track))
        with wave.open(str(path), "wb") as w:
            w.setnchannels(2 if stereo else 1)
            w.setsampwidth(2)
            w.setframerate(PHONE_RATE)
            if stereo:
                caller = ulaw_decode(b"".join(self.caller_track))
                n = max(len(bot), len(caller))
                both = np.zeros((n, 2), dtype=np.int16)
                both[: len(caller), 0] = caller
                both[: len(bot), 1] = bot
                w.writeframes(both.tobytes())
            else:
                w.writeframes(bot.astype("<i2").tobytes())
        return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * w.getsampwidth()}-bit WAV; 16-bit PCM expected")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
        if w.getnchannels() > 1:
            pcm = pcm.reshape(-1, w.getnchannels())[:, 0].copy()
        return pcm, w.getframerate()


def _utterance_frames(u: Utterance) -> list[bytes]:
    if isinstance(u.audio, np.ndarray):
        pcm, rate = u.audio, u.rate
    else:
        pcm, rate = read_wav(Path(u.audio))
    return pcm_to_ulaw_frames(pcm, rate)


class _Line:
    """Both directions of the simulated phone line for one call."""

    def __init__(self, bus: Bus, call: AudioCall, speed: float) -> None:
        self.bus = bus
        self.call = call
        self.tick_s = ev.FRAME_MS / 1000 / speed
        self.queue: deque[ev.AudioFrame | ev.ReplyAudioEnd] = deque()
        self.played_out: list[ev.ReplyPlayed] = []  # reports waiting to go on call.control
        self.frame_index = 0
        self.stop = asyncio.Event()
        self.reply_started: dict[str, float] = {}  # reply id -> monotonic time playback began
        self.gate = ReplyGate()  # which replies may still play: the same rule as the phone bridge
        self.last_played: dict[str, float] = {}
        self.ready = asyncio.Event()
        self.started = time.monotonic()

    @property
    def bot_playing(self) -> bool:
        return bool(self.queue)

    async def listen(self) -> None:
        consumer = self.bus.consumer(
            f"audiocall-{uuid.uuid4().hex[:8]}", [topics.AUDIO_OUT, topics.TRANSCRIPTS, topics.REPLIES, topics.CONTROL],
            start="latest",
        )
        await consumer.start()
        self.ready.set()
        try:
            while not self.stop.is_set():
                for rec in await consumer.getmany(timeout_ms=50):
                    if rec.key != self.call.call_id:
                        continue
                    try:
                        event = ev.decode(rec.value)
                    except ev.EventError:
                        continue
                    self._on_event(event)
        finally:
            await consumer.stop()

    def _on_event(self, event: object) -> None:
        c = self.call
        if isinstance(event, ev.AudioFrame) and event.reply_event_id:
            if self.gate.passes(event):
                self.queue.append(event)
        elif isinstance(event, ev.ReplyAudioEnd):
            if self.gate.passes(event):
                self.queue.append(event)  # reached when the frames before it have played
            else:
                self._played(event, interrupted=True)
        elif isinstance(event, ev.TranscriptFinal):
            c.transcripts.append(event)
        elif isinstance(event, ev.TranscriptPartial):
            c.partials.append(event)
        elif isinstance(event, ev.BotReply):
            c.replies.append(event)
        elif isinstance(event, ev.BargeIn):
            c.barge_ins.append(event)
            self.gate.on_barge_in(event)
            # what is queued of a reply the gate now closes goes; its end is reported interrupted
            keep: deque[ev.AudioFrame | ev.ReplyAudioEnd] = deque()
            stale = []
            for f in self.queue:
                (keep if self.gate.passes(f) else stale).append(f)
            self.queue = keep
            for f in stale:
                if isinstance(f, ev.ReplyAudioEnd):
                    self._played(f, interrupted=True)
            if event.reply_event_id:
                played = self.last_played.get(event.reply_event_id)
                c.stop_latency_ms[event.reply_event_id] = max(0.0, ((played or event.ts_wall) - event.ts_wall) * 1000)

    def _played(self, end: ev.ReplyAudioEnd, interrupted: bool = False) -> None:
        # what a phone connector reports (connectors/bridge.py): the agent hangs up after it
        self.played_out.append(ev.ReplyPlayed(call_id=self.call.call_id, stage=CALLER, turn=end.turn,
                                              caused_by=end.event_id, reply_event_id=end.reply_event_id,
                                              frames=end.frames, interrupted=interrupted))

    def _pass_ends(self) -> None:
        while self.queue and isinstance(self.queue[0], ev.ReplyAudioEnd):
            self._played(self.queue.popleft())  # type: ignore[arg-type]

    def _play_tick(self) -> None:
        """One 20 ms tick of the bot's side: play the next queued frame, or silence."""
        self._pass_ends()
        if self.queue:
            frame = self.queue.popleft()
            assert isinstance(frame, ev.AudioFrame)
            rid = frame.reply_event_id or ""
            self.reply_started.setdefault(rid, time.monotonic())
            self.call.bot_track.append(frame.payload)
            self.call.bot_frames_played[rid] = self.call.bot_frames_played.get(rid, 0) + 1
            self.last_played[rid] = time.time()
            self._pass_ends()
        else:
            self.call.bot_track.append(SILENCE_ULAW)

    async def send(self, payload: bytes) -> None:
        """Send one caller frame and play one bot frame, on the line's clock."""
        frame = ev.AudioFrame(call_id=self.call.call_id, stage=CALLER, codec="pcmu8k",
                              frame_index=self.frame_index, turn=0, seq=self.frame_index, payload=payload)
        await self.bus.publish_event(topics.AUDIO_IN, frame)
        self.call.caller_track.append(payload)
        self._play_tick()
        while self.played_out:
            await self.bus.publish_event(topics.CONTROL, self.played_out.pop(0))
        self.frame_index += 1
        # Absolute schedule: after a stall (a decode in the same process) the line catches up.
        delay = self.started + self.frame_index * self.tick_s - time.monotonic()
        await asyncio.sleep(max(0.0, delay))


async def run_audio_call(
    bus: Bus,
    utterances: Sequence[Utterance | Path],
    *,
    call_id: str | None = None,
    speed: float = 1.0,
    reply_timeout_s: float = 20.0,
    lead_in_ms: int = 300,
    **call_fields: object,
) -> AudioCall:
    """Play a caller from recordings.  After each utterance the line carries silence until the
    bot's reply has been played out (or `reply_timeout_s` passes); then the next utterance.
    Returns transcripts, replies, barge-ins and both audio tracks."""
    call = AudioCall(call_id=call_id or f"call-{uuid.uuid4().hex[:12]}")
    line = _Line(bus, call, speed)
    listener = asyncio.create_task(line.listen())
    await line.ready.wait()
    try:
        await bus.publish_event(topics.CONTROL, ev.CallStarted(call_id=call.call_id, stage=CALLER, mode="audio",
                                                               **call_fields))  # type: ignore[arg-type]
        line.started = time.monotonic()
        for _ in range(lead_in_ms // ev.FRAME_MS):
            await line.send(SILENCE_ULAW)
        items = [i if isinstance(i, Utterance) else Utterance(Path(i)) for i in utterances]
        for n, u in enumerate(items):
            replies_before = len(call.replies)
            for payload in _utterance_frames(u):
                await line.send(payload)
            following = items[n + 1] if n + 1 < len(items) else None
            if following is not None and following.barge_in_after_ms is not None:
                await _wait_for_bot(line, following.barge_in_after_ms, reply_timeout_s)
            else:
                await _until_reply_played(line, replies_before, reply_timeout_s)
        await bus.publish_event(topics.CONTROL, ev.CallEnded(call_id=call.call_id, stage=CALLER, reason="hangup"))
    finally:
        line.stop.set()
        await listener
    return call


async def _wait_for_bot(line: _Line, after_ms: int, timeout_s: float) -> None:
    """Stream silence until the bot has been talking for `after_ms`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if line.queue and line.queue[0].reply_event_id in line.reply_started:
            rid = line.queue[0].reply_event_id
            if (time.monotonic() - line.reply_started[rid]) * 1000 >= after_ms:
                return
        await line.send(SILENCE_ULAW)


async def _until_reply_played(line: _Line, replies_before: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    quiet_ticks = 0
    while time.monotonic() < deadline:
        await line.send(SILENCE_ULAW)
        new = line.call.replies[replies_before:]
        spoken = all(r.event_id in line.call.bot_frames_played or not r.text.strip() for r in new)
        if new and spoken and not line.queue:
            quiet_ticks += 1
            if quiet_ticks >= 15:  # 300 ms of nothing after the reply's audio: it is over
                return
        else:
            quiet_ticks = 0


def heard_text(reply: ev.BotReply, heard_ms: int, total_ms: int) -> str:
    """Approximate part of a reply the caller heard before barging in (proportional to time)."""
    if total_ms <= 0:
        return ""
    n = round(len(reply.text) * min(1.0, heard_ms / total_ms))
    return reply.text[:n]



# Two real recorded Mandarin utterances from the shared clips (AISHELL-1, Apache-2.0), used by
# `dianxiao demo --audio` when no caller WAVs are given.  They are read news sentences, not a
# sales caller: the demo shows the audio path working, not a sensible conversation.
DEMO_CLIPS = ("mandarin/BAC009S0764W0121.wav", "mandarin/BAC009S0002W0122.wav")


def default_demo_wavs() -> list[Path]:
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech"
    wavs = [shared / c for c in DEMO_CLIPS]
    missing = [str(w) for w in wavs if not w.exists()]
    if missing:
        raise FileNotFoundError(f"demo caller audio not found ({', '.join(missing)}): pass your own WAV files")
    return wavs


async def run_audio_demo(
    settings: object,
    caller_wavs: Sequence[Path] | None = None,
    *,
    out_wav: Path | None = None,
    speed: float = 1.0,
    verbose: bool = False,
) -> str:
    """The spine's demo on audio: caller WAVs -> VAD -> ASR -> NLU -> DST -> policy -> TTS ->
    reply WAV, on the configured bus, everything in the call log.  Returns the call id; the
    reply WAV (bot side as heard) goes to `out_wav` or DATA/<call_id>-reply.wav."""
    from agent.bus import make_bus
    from agent.pipeline import AUDIO_STAGES
    from agent.testing import running_pipeline

    wavs = list(caller_wavs) if caller_wavs else default_demo_wavs()
    bus = make_bus(settings)  # type: ignore[arg-type]
    await bus.start()
    try:
        async with running_pipeline(bus, settings, AUDIO_STAGES):  # type: ignore[arg-type]
            call = await run_audio_call(bus, wavs, speed=speed, direction="simulated", campaign="demo-audio")
    finally:
        await bus.close()
    target = out_wav or Path(settings.data_dir) / f"{call.call_id}-reply.wav"  # type: ignore[attr-defined]
    target.parent.mkdir(parents=True, exist_ok=True)
    call.write_wav(target)
    if verbose:
        for t in call.transcripts:
            print(f"caller  [{t.turn}] {t.text}")
        for r in call.replies:
            print(f"bot     [{r.turn}] {r.text}")
        print(f"bot audio played: {call.bot_audio_ms() / 1000:.1f} s -> {target}")
    return call.call_id
