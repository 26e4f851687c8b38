"""Calls for the console tests, recorded by really running the pipeline on an embedded log:
the demo's text call, and an audio call whose caller speech is a real clip from the shared set
and whose bot speech is mu-law frames tied to the bot's reply (what the speech stages write).
Also one unreadable row and one dead letter, as a broken producer would leave them."""

from __future__ import annotations

import asyncio
import json
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent import events as ev
from agent import topics
from agent.bus import EmbeddedBus
from agent.cli.core import DEMO_SCRIPT
from agent.settings import Settings
from agent.testing import running_pipeline
from agent.textcall import ReplyWaiter, end_call, run_text_call

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech"
CLIPS = ("mandarin/BAC009S0150W0373.wav", "mandarin/BAC009S0150W0454.wav")


@dataclass
class RecordedCalls:
    log_path: Path
    demo_call: str
    audio_call: str
    clip_texts: list[str]
    asr_texts: list[str]


def read_pcm16(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == 16000 and w.getsampwidth() == 2 and w.getnchannels() == 1
        return w.readframes(w.getnframes())


def mulaw_encode(pcm16: np.ndarray) -> bytes:
    """G.711 mu-law encode (the standard segment algorithm)."""
    x = pcm16.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 7
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def bot_voice(seconds: float) -> bytes:
    """An 8 kHz mu-law 'voice' (a warbling tone) standing in for TTS output."""
    t = np.arange(int(8000 * seconds)) / 8000
    wave_ = 6000 * np.sin(2 * np.pi * (220 + 40 * np.sin(2 * np.pi * 3 * t)) * t)
    return mulaw_encode(wave_.astype(np.int16))


async def _audio_call(bus: EmbeddedBus, call_id: str, clip_texts: list[str], asr_texts: list[str]) -> None:
    async with ReplyWaiter(bus) as waiter:
        started = ev.CallStarted(
            call_id=call_id, stage="connector", mode="audio", direction="inbound",
            caller="13987654321", campaign="spring-promo", metadata={"dialect": "mandarin"},
        )
        await bus.publish_event(topics.CONTROL, started)
        cause = started.event_id
        clock_ms = 0
        for turn, (clip, asr_text) in enumerate(zip(CLIPS, asr_texts), start=1):
            pcm = read_pcm16(SPEECH / clip)
            dur = len(pcm) // 32
            s = ev.SpeechStarted(call_id=call_id, turn=turn, stage="vad", start_ms=clock_ms, caused_by=cause)
            await bus.publish_event(topics.SPEECH, s)
            seg = ev.SpeechSegment(
                call_id=call_id, turn=turn, stage="vad", start_ms=clock_ms, end_ms=clock_ms + dur,
                audio_pcm16=pcm, caused_by=s.event_id,
            )
            await bus.publish_event(topics.SPEECH, seg)
            await bus.publish_event(
                topics.TRANSCRIPTS,
                ev.TranscriptPartial(call_id=call_id, turn=turn, stage="asr", text=asr_text[:4], caused_by=s.event_id),
            )
            final = ev.TranscriptFinal(
                call_id=call_id, turn=turn, stage="asr", text=asr_text, confidence=0.71 if turn == 1 else 0.93,
                language="zh", asr_model="whisper-base", audio_ms=dur, caused_by=seg.event_id,
            )
            await bus.publish_event(topics.TRANSCRIPTS, final)
            reply = await waiter.wait(call_id, turn, 10)
            voice = bot_voice(1.2)
            for i in range(len(voice) // 160):
                await bus.publish_event(
                    topics.AUDIO_OUT,
                    ev.AudioFrame(
                        call_id=call_id, turn=turn, stage="tts", codec="pcmu8k", frame_index=i,
                        reply_event_id=reply.event_id, payload=voice[i * 160 : (i + 1) * 160], caused_by=reply.event_id,
                    ),
                )
            if turn == 2:
                await bus.publish_event(
                    topics.CONTROL,
                    ev.BargeIn(call_id=call_id, turn=turn, stage="connector", reply_event_id=reply.event_id, heard_ms=640),
                )
            cause = reply.event_id
            clock_ms += dur + 2000
        await end_call(bus, call_id, 2, reason="hangup", outcome="callback_scheduled")


async def _record(log_path: Path) -> RecordedCalls:
    manifest = {json.loads(l)["audio"]: json.loads(l)["text"] for l in (SPEECH / "manifest.jsonl").read_text().splitlines() if l.strip()}
    clip_texts = [manifest[c] for c in CLIPS]
    # Turn 1's recorded transcript carries an ASR mistake a reviewer will correct.
    asr_texts = [clip_texts[0].replace("具体的", "具体"), clip_texts[1]]
    bus = EmbeddedBus(log_path)
    await bus.start()
    try:
        # the console is under test, not the model of the day: the rules understand the recorded calls
        async with running_pipeline(bus, Settings(data_dir=log_path.parent, nlu_model="rules")):
            demo = await run_text_call(bus, DEMO_SCRIPT, direction="simulated", campaign="demo", caller="13812345678")
            await _audio_call(bus, "call-audio-1", clip_texts, asr_texts)
        await bus.publish_event(
            topics.DEAD_LETTERS,
            ev.DeadLetter(call_id=demo.call_id, turn=2, stage="nlu", source_topic=topics.TRANSCRIPTS,
                          reason="invalid transcript.final: text missing", raw='{"type": "transcript.final"}'),
        )
    finally:
        await bus.close()
    # A row no decoder can read, written as a broken producer would (straight into the log).
    from agent.bus.embedded import open_log_db

    db = open_log_db(log_path)
    (top,) = db.execute("SELECT COALESCE(MAX(offset), -1) FROM log WHERE topic=? AND partition=0", (topics.NLU,)).fetchone()
    row_ts = db.execute("SELECT MAX(ts) FROM log WHERE key=? AND topic=?", (demo.call_id, topics.TRANSCRIPTS)).fetchone()[0]
    db.execute("INSERT INTO log VALUES (?,?,?,?,?,?)", (topics.NLU, 0, top + 1, demo.call_id, b"{not json", row_ts))
    db.close()
    return RecordedCalls(log_path, demo.call_id, "call-audio-1", clip_texts, asr_texts)


def record_review_calls(folder: Path) -> RecordedCalls:
    return asyncio.run(_record(folder / "bus.sqlite"))
