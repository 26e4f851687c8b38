"""The clock that notices a silent caller: writes CallerSilent on call.control.

A stage's `handle` may not read the clock (its state is rebuilt by replaying the log), so the
waiting happens here, in a worker beside the stages, and what to do about it is the hangup
stage's decision (a polite goodbye, then the end).  Silence is counted from the latest of: the
call's start, caller speech (speech.started, any transcript), a key press, and the bot's last
reply being delivered.  While an audio call's reply is still playing (BotReply seen, its
ReplyPlayed not yet) the clock is paused: a long answer is not the caller's silence.

It tails the topics from their end ("latest"), so a call already live when the worker starts is
not watched; one CallerSilent per call at most, with an id derived from the event the silence
followed, so two watchers (or a restarted one) produce the same event and stages drop the copy.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog

from agent import events as ev
from agent import topics
from agent.bus.base import Bus

log = structlog.get_logger("dianxiao.silence")
STAGE = "silence"
CALLER_ACTIVITY = (ev.SpeechStarted, ev.TranscriptPartial, ev.TranscriptFinal, ev.CallDtmf)


@dataclass
class _Watched:
    mode: str
    last: float
    last_event: str
    turn: int = 0
    playing: set[str] = field(default_factory=set)
    fired: bool = False


class SilenceWatch:
    def __init__(self, bus: Bus, after_s: float, *, tick_s: float = 0.2, group: str | None = None) -> None:
        self.bus = bus
        self.after_s = after_s
        self.tick_s = tick_s
        self.group = group or f"{STAGE}-{uuid.uuid4().hex[:8]}"
        self.calls: dict[str, _Watched] = {}
        self.fired = 0
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        consumer = self.bus.consumer(self.group, [topics.CONTROL, topics.TRANSCRIPTS, topics.SPEECH, topics.REPLIES],
                                     start="latest")
        await consumer.start()
        self.ready.set()
        try:
            while not self._stop.is_set():
                for rec in await consumer.getmany(timeout_ms=int(self.tick_s * 1000), max_records=500):
                    if rec.topic == topics.SPEECH and b"speech.started" not in rec.value[:400]:
                        continue  # utterance audio: the speech.started before it already counted
                    try:
                        self.observe(ev.decode(rec.value), time.monotonic())
                    except ev.EventError:
                        continue
                for silent in self.due(time.monotonic()):
                    await self.bus.publish_event(topics.CONTROL, silent)
        finally:
            await consumer.stop()

    def observe(self, event: Any, now: float) -> None:
        if isinstance(event, ev.CallStarted):
            self.calls[event.call_id] = _Watched(event.mode, now, event.event_id)
            return
        w = self.calls.get(event.call_id)
        if w is None:
            return
        if isinstance(event, ev.CallEnded):
            del self.calls[event.call_id]
            return
        if isinstance(event, CALLER_ACTIVITY):
            w.turn = max(w.turn, event.turn)
        elif isinstance(event, ev.BotReply):
            if w.mode == "audio" and event.text.strip():
                w.playing.add(event.event_id)
        elif isinstance(event, ev.ReplyPlayed):
            w.playing.discard(event.reply_event_id)
        else:
            return
        w.last, w.last_event = now, event.event_id

    def due(self, now: float) -> list[ev.CallerSilent]:
        out = []
        for call_id, w in self.calls.items():
            if w.fired or w.playing or now - w.last < self.after_s:
                continue
            w.fired = True
            self.fired += 1
            silent_ms = int((now - w.last) * 1000)
            log.info("caller silent", call_id=call_id, silent_ms=silent_ms)
            out.append(ev.CallerSilent(event_id=ev.derived_event_id(w.last_event, STAGE, 0), call_id=call_id,
                                       turn=w.turn, stage=STAGE, caused_by=w.last_event, silent_ms=silent_ms))
        return out
