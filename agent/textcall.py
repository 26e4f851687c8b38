"""A text-mode caller over the real topics: it starts a call, writes each caller turn as a final
transcript, and waits for the bot's reply to that turn before saying the next thing.

Used by the demo, the tests and the dialogue simulator; a connector for real calls does the
same thing with audio."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agent import events as ev
from agent import topics
from agent.bus.base import Bus

CALLER = "caller"


@dataclass
class TextCall:
    call_id: str
    replies: list[ev.BotReply] = field(default_factory=list)
    ended_by_bot: bool = False
    #: the CallEnded the agent wrote after its goodbye (None: not seen within the wait)
    agent_ended: ev.CallEnded | None = None


class ReplyWaiter:
    """Tails bot.replies and call.control (from the end of the log) and hands each reply, and
    the agent's end of a call, to whoever waits for it."""

    def __init__(self, bus: Bus, name: str | None = None) -> None:
        self.bus = bus
        self.group = name or f"textcall-{uuid.uuid4().hex[:8]}"
        self._waiting: dict[tuple[str, int], asyncio.Future[ev.BotReply]] = {}
        self._early: dict[tuple[str, int], ev.BotReply] = {}
        self._ended: dict[str, ev.CallEnded] = {}
        self._end_waiting: dict[str, asyncio.Future[ev.CallEnded]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()

    async def __aenter__(self) -> "ReplyWaiter":
        self._task = asyncio.create_task(self._pump())
        await self._ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task:
            await self._task

    async def _pump(self) -> None:
        consumer = self.bus.consumer(self.group, [topics.REPLIES, topics.CONTROL], start="latest")
        await consumer.start()
        self._ready.set()
        try:
            while not self._stop.is_set():
                for rec in await consumer.getmany(timeout_ms=100):
                    try:
                        reply = ev.decode(rec.value)
                    except ev.EventError:
                        continue
                    if isinstance(reply, ev.CallEnded) and reply.stage != CALLER:
                        end = self._end_waiting.pop(reply.call_id, None)
                        if end is not None and not end.done():
                            end.set_result(reply)
                        else:
                            self._ended[reply.call_id] = reply
                        continue
                    if not isinstance(reply, ev.BotReply):
                        continue
                    key = (reply.call_id, reply.turn)
                    fut = self._waiting.pop(key, None)
                    if fut is not None and not fut.done():
                        fut.set_result(reply)
                    else:
                        self._early[key] = reply
        finally:
            await consumer.stop()

    async def wait(self, call_id: str, turn: int, timeout: float) -> ev.BotReply:
        key = (call_id, turn)
        if key in self._early:
            return self._early.pop(key)
        fut: asyncio.Future[ev.BotReply] = asyncio.get_running_loop().create_future()
        self._waiting[key] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting.pop(key, None)


    async def wait_ended(self, call_id: str, timeout: float) -> ev.CallEnded | None:
        """The agent's CallEnded for this call, or None when it does not come within `timeout`."""
        if call_id in self._ended:
            return self._ended.pop(call_id)
        fut: asyncio.Future[ev.CallEnded] = asyncio.get_running_loop().create_future()
        self._end_waiting[call_id] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            self._end_waiting.pop(call_id, None)


async def start_call(bus: Bus, call_id: str, **fields: object) -> ev.CallStarted:
    started = ev.CallStarted(call_id=call_id, stage=CALLER, mode="text", **fields)  # type: ignore[arg-type]
    await bus.publish_event(topics.CONTROL, started)
    return started


async def say(bus: Bus, call_id: str, turn: int, text: str, cause: str | None = None) -> ev.TranscriptFinal:
    final = ev.TranscriptFinal(call_id=call_id, turn=turn, seq=turn, stage=CALLER, text=text, caused_by=cause)
    await bus.publish_event(topics.TRANSCRIPTS, final)
    return final


async def end_call(bus: Bus, call_id: str, turn: int, reason: str = "hangup", outcome: str | None = None) -> None:
    await bus.publish_event(
        topics.CONTROL, ev.CallEnded(call_id=call_id, turn=turn, stage=CALLER, reason=reason, outcome=outcome)
    )


async def run_text_call(
    bus: Bus,
    turns: Sequence[str] | Callable[[int, list[ev.BotReply]], str | None],
    *,
    call_id: str | None = None,
    waiter: ReplyWaiter | None = None,
    timeout: float = 10.0,
    hang_up: bool = True,
    end_wait_s: float = 2.0,
    **call_fields: object,
) -> TextCall:
    """Play a caller: `turns` is a script, or a function (turn number, replies so far) -> the
    next thing to say (None ends the script; the caller hangs up unless `hang_up` is false).
    Returns the bot's replies in order.  When the bot says goodbye (ends_call) the caller does
    not hang up: the agent ends the call (hangup stage), and `agent_ended` is its CallEnded,
    waited for up to `end_wait_s`."""
    call = TextCall(call_id=call_id or f"call-{uuid.uuid4().hex[:12]}")
    own = waiter is None
    w = waiter or ReplyWaiter(bus)
    if own:
        await w.__aenter__()
    try:
        started = await start_call(bus, call.call_id, **call_fields)
        cause: str | None = started.event_id
        turn = 0
        while True:
            text = turns(turn + 1, call.replies) if callable(turns) else (turns[turn] if turn < len(turns) else None)
            if text is None:
                break
            turn += 1
            await say(bus, call.call_id, turn, text, cause)
            reply = await w.wait(call.call_id, turn, timeout)
            call.replies.append(reply)
            cause = reply.event_id
            if reply.ends_call:
                call.ended_by_bot = True
                break
        if call.ended_by_bot:
            call.agent_ended = await w.wait_ended(call.call_id, end_wait_s)
        elif hang_up:
            await end_call(bus, call.call_id, turn, reason="hangup")
    finally:
        if own:
            await w.__aexit__(None, None, None)
    return call
