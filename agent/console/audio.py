"""A turn's audio as WAV, rebuilt from the call log.

Caller audio comes from the turn's SpeechSegment(s) (16 kHz PCM16); without one, from the
audio.in frames of that turn.  Bot audio comes from the audio.out frames that carry the turn's
reply id, in frame order.  Phone-side frames are 8 kHz mu-law and are decoded to PCM16 here, so
a browser can play every WAV we serve."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterable
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
