"""The bus side every media connector shares (SIP/RTP, provider websockets).

A connector turns a phone call into events: it announces the call on call.control, writes the
caller's 20 ms frames to audio.in, and plays back what arrives on audio.out for its calls.  The
bridge does the bus half of that so each connector only speaks its own wire protocol:

* one consumer in its own group, started at "latest", tails audio.out and call.control (the
  same pattern as agent.textcall.ReplyWaiter), so it works on the embedded bus and Kafka alike;
* bot frames are handed to the call's `MediaSink` (a paced sender), a barge-in flushes the sink
  and drops later frames of the interrupted reply, and a CallEnded written by the agent (the bot
  hung up) asks the sink to hang up;
* where a reply's audio ends (ReplyAudioEnd from TTS) a mark goes into the sink; when the sink
  has sent the frame before it, the bridge writes ReplyPlayed on call.control.  That is the
  agent's cue to end the call after a goodbye: the connector reports, the agent decides;
* key presses (DTMF) the connector decodes become CallDtmf on call.control.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from agent import events as ev
from agent import topics
from agent.bus.base import Bus
from agent.reply_gate import ReplyGate

log = structlog.get_logger("dianxiao.connectors")


class MediaSink(Protocol):
    """Where a call's bot audio goes (an RTP sender, a provider websocket)."""

    def enqueue(self, payload_pcmu: bytes) -> None: ...

    def flush(self) -> int:
        """Drop every queued frame at once (barge-in); returns how many were dropped."""
        ...

    async def hangup(self, reason: str) -> None: ...

    def mark(self, on_reached: Callable[[bool], None]) -> None:
        """Call `on_reached(dropped)` once every frame enqueued so far has been sent (or flushed).
        May be called on another thread (the media loop): it must only schedule work."""
        ...


@dataclass
class CallTap:
    """What the bridge knows about one live call."""

    call_id: str
    sink: MediaSink
    gate: ReplyGate = field(default_factory=ReplyGate)  # which replies may still play (agent/reply_gate.py)
    agent_ended: bool = False  # the agent ended the call: do not announce the end again
    frames_out: int = 0
    frames_in: int = 0
    barge_ins: int = 0


class BusBridge:
    def __init__(self, bus: Bus, stage: str, *, group: str | None = None) -> None:
        self.bus = bus
        self.stage = stage
        self.group = group or f"{stage}-{uuid.uuid4().hex[:8]}"
        self.calls: dict[str, CallTap] = {}
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        #: called (call_id) when the agent itself ends a call, after the sink hung up
        self.on_agent_hangup: Callable[[str], Awaitable[None]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reports: set[asyncio.Task[None]] = set()

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.create_task(self._pump())
            await self._ready.wait()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        await asyncio.gather(*self._reports, return_exceptions=True)

    # --- caller -> bus -----------------------------------------------------------------

    async def call_started(self, call_id: str, sink: MediaSink, *, direction: str, caller: str | None = None,
                           campaign: str | None = None, metadata: dict[str, Any] | None = None) -> ev.CallStarted:
        self.calls[call_id] = CallTap(call_id, sink)
        started = ev.CallStarted(
            call_id=call_id, stage=self.stage, mode="audio", direction=direction,  # type: ignore[arg-type]
            caller=caller, campaign=campaign, metadata=metadata or {},
        )
        await self.bus.publish_event(topics.CONTROL, started)
        return started

    async def caller_audio(self, call_id: str, frames: list[tuple[int, bytes]]) -> None:
        """Publish caller frames (frame_index, 160 bytes of mu-law) in one bus write."""
        tap = self.calls.get(call_id)
        if tap is None or not frames:
            return
        tap.frames_in += len(frames)
        items = []
        for index, payload in frames:
            frame = ev.AudioFrame(call_id=call_id, stage=self.stage, codec="pcmu8k", frame_index=index,
                                  seq=index, payload=payload)
            items.append((topics.AUDIO_IN, call_id, ev.encode(frame)))
        await self.bus.publish_many(items)

    async def dtmf(self, call_id: str, digit: str, duration_ms: int, source: str) -> ev.CallDtmf | None:
        """A key the caller pressed, as CallDtmf on call.control (a non-key is logged and dropped)."""
        if call_id not in self.calls:
            return None
        try:
            event = ev.CallDtmf(call_id=call_id, stage=self.stage, digit=digit, duration_ms=max(0, duration_ms),
                                source=source)
        except ValueError:
            log.warning("DTMF event that is not a phone key dropped", call_id=call_id, digit=repr(digit)[:20])
            return None
        await self.bus.publish_event(topics.CONTROL, event)
        return event

    async def call_ended(self, call_id: str, reason: str, outcome: str | None = None) -> None:
        tap = self.calls.pop(call_id, None)
        if tap is None or tap.agent_ended:
            return
        await self.bus.publish_event(
            topics.CONTROL, ev.CallEnded(call_id=call_id, stage=self.stage, reason=reason, outcome=outcome)
        )

    # --- bus -> caller -----------------------------------------------------------------

    async def _pump(self) -> None:
        consumer = self.bus.consumer(self.group, [topics.AUDIO_OUT, topics.CONTROL], start="latest")
        await consumer.start()
        self._ready.set()
        try:
            while not self._stop.is_set():
                records = await consumer.getmany(timeout_ms=50, max_records=500)
                # Two topics arrive as two streams: put them back in production order, so that
                # a reply's last frames are queued before the agent's hang-up is acted on.
                records.sort(key=lambda r: r.timestamp)
                for rec in records:
                    if rec.key not in self.calls:
                        continue  # another connector's call (or an ended one)
                    try:
                        event = ev.decode(rec.value)
                    except ev.EventError as exc:
                        log.warning("undecodable record on the connector's topics", topic=rec.topic, reason=str(exc))
                        continue
                    await self.deliver(event)
        finally:
            await consumer.stop()

    async def deliver(self, event: Any) -> None:
        """Act on one agent event for a live call (public so the pure flow is testable)."""
        tap = self.calls.get(event.call_id)
        if tap is None:
            return
        if isinstance(event, ev.AudioFrame):
            if event.codec != "pcmu8k" or not tap.gate.passes(event):
                return
            tap.frames_out += 1
            tap.sink.enqueue(event.payload)
        elif isinstance(event, ev.ReplyAudioEnd):
            self._mark_end(tap, event)
        elif isinstance(event, ev.BargeIn):
            tap.barge_ins += 1
            # the reply named, or (no id: the caller went on before the reply to their last turn)
            # every reply to an earlier turn; what is queued goes either way
            tap.gate.on_barge_in(event)
            dropped = tap.sink.flush()
            log.info("barge-in: bot audio stopped", call_id=event.call_id, dropped_frames=dropped)
        elif isinstance(event, ev.CallEnded) and event.stage != self.stage:
            # The agent ended the call (e.g. the bot said goodbye); the sink plays out what is
            # queued, then hangs up.  Frames still arriving for the goodbye keep being queued.
            tap.agent_ended = True
            await tap.sink.hangup(event.reason)
            if self.on_agent_hangup is not None:
                await self.on_agent_hangup(event.call_id)

    def _mark_end(self, tap: CallTap, end: ev.ReplyAudioEnd) -> None:
        rid = end.reply_event_id
        open_ = tap.gate.passes(end)
        loop = self._loop or asyncio.get_running_loop()

        def reached(dropped: bool) -> None:  # on the media loop when the connector is threaded
            loop.call_soon_threadsafe(self._report_played, tap, end, dropped or tap.gate.is_cancelled(rid))

        if not open_:
            reached(True)  # barged in before its end arrived: nothing more of it will play
        else:
            tap.sink.mark(reached)

    def _report_played(self, tap: CallTap, end: ev.ReplyAudioEnd, interrupted: bool) -> None:
        if self.calls.get(tap.call_id) is not tap:
            return  # the call is over: nobody waits for this reply any more
        played = ev.ReplyPlayed(call_id=tap.call_id, stage=self.stage, turn=end.turn, caused_by=end.event_id,
                                reply_event_id=end.reply_event_id, frames=end.frames, interrupted=interrupted)
        task = asyncio.create_task(self.bus.publish_event(topics.CONTROL, played))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)
