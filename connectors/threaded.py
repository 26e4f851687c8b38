"""Run a media connector on its own event loop, in its own thread.

The speech stages do CPU work inside their handlers (Whisper decoding, VAD, TTS synthesis); run
in the same event loop as RTP, every decode would stall the 20 ms playout clock of every call.
A connector started through `ThreadedConnector` keeps signalling, RTP receive and paced sending
on a loop of its own (CTranslate2 and ONNX Runtime release the GIL while they compute), and
only the bus work crosses threads:

    media loop (SIP, RTP, pacers)  --call_started / caller_audio / call_ended-->  bus loop
    bus loop (BusBridge consumer)  --enqueue / flush / hangup-->                   media loop
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import Any

from agent.bus.base import Bus
from connectors.bridge import BusBridge


class _SinkOnMediaLoop:
    """Handed to the bus-side bridge: forwards to the real sink on the media loop."""

    def __init__(self, sink: Any, media_loop: asyncio.AbstractEventLoop) -> None:
        self.sink, self.loop = sink, media_loop

    def enqueue(self, payload_pcmu: bytes) -> None:
        self.loop.call_soon_threadsafe(self.sink.enqueue, payload_pcmu)

    def flush(self) -> int:
        # Never block the bus loop on the media loop: the flush runs there next; the count of
        # dropped frames is not known here (-1).
        self.loop.call_soon_threadsafe(self.sink.flush)
        return -1

    async def hangup(self, reason: str) -> None:
        asyncio.run_coroutine_threadsafe(self.sink.hangup(reason), self.loop)

    def mark(self, on_reached: Callable[[bool], None]) -> None:
        # in order with the frames enqueued before it; `on_reached` hops back to the bus loop itself
        self.loop.call_soon_threadsafe(self.sink.mark, on_reached)


class _BridgeOnBusLoop:
    """Handed to the connector (on the media loop): runs the bridge's calls on the bus loop."""

    def __init__(self, real: BusBridge, bus_loop: asyncio.AbstractEventLoop) -> None:
        self.real, self.bus_loop = real, bus_loop

    @property
    def calls(self) -> dict[str, Any]:
        return self.real.calls

    async def _on_bus(self, coro: Any) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.bus_loop))

    async def start(self) -> None:  # the real bridge is started by ThreadedConnector
        return None

    async def stop(self) -> None:
        return None

    async def call_started(self, call_id: str, sink: Any, **kw: Any) -> Any:
        proxy = _SinkOnMediaLoop(sink, asyncio.get_running_loop())
        return await self._on_bus(self.real.call_started(call_id, proxy, **kw))

    async def caller_audio(self, call_id: str, frames: list[tuple[int, bytes]]) -> None:
        await self._on_bus(self.real.caller_audio(call_id, frames))

    async def call_ended(self, call_id: str, reason: str, outcome: str | None = None) -> None:
        await self._on_bus(self.real.call_ended(call_id, reason, outcome))

    async def dtmf(self, call_id: str, digit: str, duration_ms: int, source: str) -> Any:
        return await self._on_bus(self.real.dtmf(call_id, digit, duration_ms, source))


def media_priority(policy: int, priority: int, highest: int) -> int:
    """The real-time priority for the media thread: 10, or one above the process's own when it
    already runs real-time (started under chrt, or by a parent that was): a thread that only ties
    the speech workers' priority waits behind a whole decode."""
    if policy in (os.SCHED_RR, os.SCHED_FIFO):
        return min(highest, max(10, priority + 1))
    return 10


class ThreadedConnector:
    """`async with ThreadedConnector(bus, "sip", lambda bridge: SipAgent(bus, cfg, bridge=bridge)) as c:`
    `c.connector` is the connector (use it from the media loop only: `await c.call(fn)`)."""

    def __init__(self, bus: Bus, stage: str, make: Callable[[Any], Any], *, realtime: bool = True) -> None:
        self.bus, self.make = bus, make
        self.realtime = realtime
        self.scheduling = "normal"
        self.bridge = BusBridge(bus, stage)
        self.connector: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    async def __aenter__(self) -> "ThreadedConnector":
        bus_loop = asyncio.get_running_loop()
        await self.bridge.start()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="media-loop", daemon=True)
        self._thread.start()
        await asyncio.to_thread(ready.wait)
        self.connector = self.make(_BridgeOnBusLoop(self.bridge, bus_loop))
        await self.call(self.connector.start)
        return self

    def _raise_priority(self) -> None:
        # The 20 ms clock must win the CPU from the speech stages' worker threads (Whisper's
        # intra-op threads run at the same priority as this one).  Round-robin real-time
        # scheduling needs CAP_SYS_NICE; without it, fall back to a better nice value, else stay.
        tid = threading.get_native_id()
        try:
            priority = media_priority(os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority,
                                      os.sched_get_priority_max(os.SCHED_RR))
            os.sched_setscheduler(tid, os.SCHED_RR, os.sched_param(priority))
            self.scheduling = f"SCHED_RR {priority}"
            return
        except (AttributeError, PermissionError, OSError):
            pass
        try:
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) - 5)
            self.scheduling = "nice-5"
        except (AttributeError, PermissionError, OSError):
            self.scheduling = "normal"

    def _run(self, ready: threading.Event) -> None:
        assert self.loop is not None
        if self.realtime:
            self._raise_priority()
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()
        self.loop.close()

    async def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run `await fn(*args, **kw)` on the media loop and return its result here."""
        assert self.loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(fn(*args, **kw), self.loop))

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.connector is not None:
                await self.call(self.connector.stop)
        finally:
            await self.bridge.stop()
            if self.loop is not None:
                self.loop.call_soon_threadsafe(self.loop.stop)
            if self._thread is not None:
                await asyncio.to_thread(self._thread.join, 5)
