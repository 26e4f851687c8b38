"""Paced playout of 20 ms frames: the phone network expects one frame every 20 ms, not bursts.

TTS writes a reply's frames to the bus faster than real time; the pacer holds them and sends one
per tick on an absolute schedule (so scheduling jitter does not accumulate), restarts the clock
after an idle gap, and drops the whole queue at once on barge-in.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

FRAME_S = 0.020


class FramePacer:
    def __init__(self, send: Callable[[bytes], None], *, frame_s: float = FRAME_S, prebuffer_s: float = 0.04) -> None:
        self._send = send
        self._frame_s = frame_s
        # After silence, wait this long (or for this much audio) before the first frame, so that
        # frames arriving with jitter (a stage's batch, a busy loop) play without a gap.
        self._prebuffer_s = prebuffer_s
        self._queue: collections.deque[bytes] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.flushed = 0
        #: the largest gap between two frames sent back to back from a non-empty queue
        self.max_gap_s = 0.0
        self._last_sent: float | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def enqueue(self, payload: bytes) -> None:
        self._queue.append(payload)
        self._wake.set()

    def flush(self) -> int:
        n = len(self._queue)
        self._queue.clear()
        self.flushed += n
        self._last_sent = None  # silence after a flush is not a playout gap
        return n

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def drain(self, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self._queue and loop.time() < end:
            await asyncio.sleep(self._frame_s)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at: float | None = None
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            now = loop.time()
            if next_at is None or now > next_at + self._frame_s:
                # idle (or late by more than a frame): restart the clock after the prebuffer
                queued_s = len(self._queue) * self._frame_s
                next_at = now + max(0.0, self._prebuffer_s - queued_s + self._frame_s)
                self._last_sent = None
            if next_at > now:
                await asyncio.sleep(next_at - now)
            if not self._queue:  # flushed while we slept
                continue
            payload = self._queue.popleft()
            sent_at = loop.time()
            self._send(payload)
            if self._last_sent is not None:
                self.max_gap_s = max(self.max_gap_s, sent_at - self._last_sent)
            self._last_sent = sent_at if self._queue else None
            self.sent += 1
            next_at += self._frame_s
