"""A turn's audio as WAV, rebuilt from the call log.

Caller audio comes from the turn's SpeechSegment(s) (16 kHz PCM16); without one, from the
audio.in frames of that turn.  Bot audio comes from the audio.out frames that carry the turn's
reply id, in frame order.  Phone-side frames are 8 kHz mu-law and are decoded to PCM16 here, so
a browser can play every WAV we serve."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent import events as ev
from agent import topics
from agent.calllog import CallLog

_RATE = {"pcmu8k": 8000, "pcm16k": 16000}


def mulaw_to_pcm16(data: bytes) -> bytes:
    """G.711 mu-law decode (the ITU table, computed)."""
    u = ~np.frombuffer(data, dtype=np.uint8)
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((mantissa.astype(np.int32) << 3) + 0x84) << exponent
    sample = np.where(sign != 0, 0x84 - magnitude, magnitude - 0x84)
    return sample.astype("<i2").tobytes()


def wav_bytes(pcm16: bytes, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16)
    return buf.getvalue()


def frames_to_wav(frames: Iterable[ev.AudioFrame]) -> bytes | None:
    ordered = sorted(frames, key=lambda f: (f.frame_index, f.seq))
    if not ordered:
        return None
    codec = ordered[0].codec
    same = [f for f in ordered if f.codec == codec]
    raw = b"".join(f.payload for f in same)
    pcm = mulaw_to_pcm16(raw) if codec == "pcmu8k" else raw
    return wav_bytes(pcm, _RATE[codec])


def caller_wav_from_events(events: list[Any], turn: int) -> bytes | None:
    segments = [e for e in events if isinstance(e, ev.SpeechSegment) and e.turn == turn and e.audio_pcm16]
    if segments:
        segments.sort(key=lambda s: (s.start_ms, s.seq))
        return wav_bytes(b"".join(s.audio_pcm16 for s in segments), 16000)
    frames = [e for e in events if isinstance(e, ev.AudioFrame) and e.turn == turn and e.reply_event_id is None]
    return frames_to_wav(frames)


def bot_wav_from_events(events: list[Any], turn: int) -> bytes | None:
    reply_ids = {e.event_id for e in events if isinstance(e, ev.BotReply) and e.turn == turn}
    frames = [e for e in events if isinstance(e, ev.AudioFrame) and e.reply_event_id in reply_ids]
    return frames_to_wav(frames)


def caller_wav(log: CallLog, call_id: str, turn: int) -> bytes | None:
    events = log.events(call_id, only=(topics.SPEECH,))
    wav = caller_wav_from_events(events, turn)
    if wav is None:
        wav = caller_wav_from_events(log.events(call_id, only=(topics.AUDIO_IN,)), turn)
    return wav


def bot_wav(log: CallLog, call_id: str, turn: int) -> bytes | None:
    return bot_wav_from_events(log.events(call_id, only=(topics.REPLIES, topics.AUDIO_OUT)), turn)


# --- the whole call: both channels in one stereo WAV -------------------------------------------

MIX_RATE = 16000


@dataclass
class Mark:
    turn: int
    who: str  # caller | bot
    start_s: float
    end_s: float


@dataclass
class CallMix:
    """Left channel the caller (audio.in, or the speech segments where no audio.in was kept),
    right channel the bot (audio.out), on one timeline, with each turn's span marked."""

    left: np.ndarray
    right: np.ndarray
    marks: list[Mark]

    @property
    def duration_s(self) -> float:
        return len(self.left) / MIX_RATE

    def wav(self) -> bytes:
        stereo = np.empty(2 * len(self.left), dtype="<i2")
        stereo[0::2], stereo[1::2] = self.left, self.right
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(MIX_RATE)
            w.writeframes(stereo.tobytes())
        return buf.getvalue()

    def peaks(self, buckets: int = 600) -> dict[str, Any]:
        """Per-bucket max |sample| of each channel, 0..1, rounded: a few KB of JSON for a waveform."""
        def one(x: np.ndarray) -> list[float]:
            if not len(x):
                return []
            n = min(buckets, len(x))
            edges = np.linspace(0, len(x), n + 1).astype(int)
            mags = np.maximum.reduceat(np.abs(x.astype(np.int32)), edges[:-1])
            return [round(float(v) / 32768, 3) for v in mags]

        return {
            "duration_s": round(self.duration_s, 3),
            "caller": one(self.left),
            "bot": one(self.right),
            "turns": [m.__dict__ for m in self.marks],
        }


def _pcm(frame_or_bytes: bytes, codec: str) -> np.ndarray:
    raw = mulaw_to_pcm16(frame_or_bytes) if codec == "pcmu8k" else frame_or_bytes
    x = np.frombuffer(raw, dtype="<i2")
    if codec == "pcmu8k":  # 8 kHz -> 16 kHz, linear: enough to listen to, and one rate per file
        x = np.interp(np.arange(2 * len(x)) / 2, np.arange(len(x)), x).astype(np.int16)
    return x


def _place(track: list[tuple[int, np.ndarray]], start: int, x: np.ndarray) -> None:
    track.append((max(0, start), x))


def _render(track: list[tuple[int, np.ndarray]], n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.int32)
    for start, x in track:
        out[start : start + len(x)] += x[: max(0, n - start)]
    return np.clip(out, -32768, 32767).astype(np.int16)


def call_mix(log: CallLog, call_id: str) -> CallMix | None:
    """Both sides of a call on the caller's audio clock (ms of audio since the call began).

    The bot's replies are not on that clock (TTS writes frames faster than they are played), so
    each reply is placed where the caller could hear it: at the end of the caller's speech it
    answers plus the time the agent took to produce the first frame (its wall-clock delay after
    the speech segment), never over the bot's previous reply; a reply cut by barge-in stops
    where the caller cut in.  A reply before any caller speech starts at its wall-clock offset
    from the call's start."""
    events = log.events(call_id, only=(topics.CONTROL, topics.SPEECH, topics.REPLIES, topics.AUDIO_IN, topics.AUDIO_OUT))
    started = next((e for e in events if isinstance(e, ev.CallStarted)), None)
    frames_in = [e for e in events if isinstance(e, ev.AudioFrame) and e.reply_event_id is None]
    frames_out = [e for e in events if isinstance(e, ev.AudioFrame) and e.reply_event_id is not None]
    segments = [e for e in events if isinstance(e, ev.SpeechSegment) and e.final and e.audio_pcm16]
    if not frames_in and not frames_out and not segments:
        return None
    t0 = started.ts_wall if started else min(e.ts_wall for e in events)
    left: list[tuple[int, np.ndarray]] = []
    right: list[tuple[int, np.ndarray]] = []
    marks: list[Mark] = []
    at = lambda ms: int(ms * MIX_RATE / 1000)  # noqa: E731
    if frames_in:
        for f in sorted(frames_in, key=lambda f: (f.frame_index, f.seq)):
            _place(left, at(f.frame_index * ev.FRAME_MS), _pcm(f.payload, f.codec))
    else:
        for s in segments:
            _place(left, at(s.start_ms), np.frombuffer(s.audio_pcm16, dtype="<i2"))
    speech_end: dict[int, tuple[int, float]] = {}  # turn -> (end ms on the audio clock, wall time)
    for s in segments:
        marks.append(Mark(s.turn, "caller", s.start_ms / 1000, s.end_ms / 1000))
        speech_end[s.turn] = (s.end_ms, s.ts_wall)
    replies = {e.event_id: e for e in events if isinstance(e, ev.BotReply)}
    cut_ms = {e.reply_event_id: e.heard_ms for e in events if isinstance(e, ev.BargeIn) and e.reply_event_id}
    by_reply: dict[str, list[ev.AudioFrame]] = {}
    for f in frames_out:
        by_reply.setdefault(str(f.reply_event_id), []).append(f)
    bot_end = 0
    for rid, fs in sorted(by_reply.items(), key=lambda kv: min(f.ts_wall for f in kv[1])):
        fs.sort(key=lambda f: (f.frame_index, f.seq))
        reply = replies.get(rid)
        turn = reply.turn if reply else fs[0].turn
        first_wall = min(f.ts_wall for f in fs)
        if turn in speech_end:
            end_ms, seg_wall = speech_end[turn]
            start_ms = end_ms + max(0.0, (first_wall - seg_wall) * 1000)
        else:
            start_ms = max(0.0, (first_wall - t0) * 1000)
        x = np.concatenate([_pcm(f.payload, f.codec) for f in fs])
        if rid in cut_ms:
            x = x[: at(cut_ms[rid])]
        start = max(at(start_ms), bot_end)
        _place(right, start, x)
        bot_end = start + len(x)
        marks.append(Mark(turn, "bot", round(start / MIX_RATE, 3), round(bot_end / MIX_RATE, 3)))
    n = max([s + len(x) for s, x in left + right] or [0])
    marks.sort(key=lambda m: (m.start_s, m.who))
    return CallMix(_render(left, n), _render(right, n), marks)
