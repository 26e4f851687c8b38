"""Paced playout of 20 ms frames: the phone network expects one frame every 20 ms, not bursts.

TTS writes a reply's frames to the bus faster than real time; the pacer holds them and sends one
per tick on an absolute schedule (so scheduling jitter does not accumulate), restarts the clock
after an idle gap, and drops the whole queue at once on barge-in.  A mark in the queue calls
back when every frame before it has been sent (or dropped): how a connector learns that the
last frame of a reply has left, which is when the agent may hang up after a goodbye.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Union

#: called once with `dropped` = True when a flush removed it, False when the frames before it were sent
Mark = Callable[[bool], None]

FRAME_S = 0.020


class FramePacer:
    def __init__(self, send: Callable[[bytes], None], *, frame_s: float = FRAME_S, prebuffer_s: float = 0.04) -> None:
        self._send = send
        self._frame_s = frame_s
        # After silence, wait this long (or for this much audio) before the first frame, so that
        # frames arriving with jitter (a stage's batch, a busy loop) play without a gap.
        self._prebuffer_s = prebuffer_s
        self._queue: collections.deque[Union[bytes, Mark]] = collections.deque()
        self._frames = 0  # frames in the queue (marks are not frames)
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
        self._frames += 1
        self._wake.set()

    def mark(self, on_reached: Mark) -> None:
        """Call `on_reached(False)` once every frame queued so far has been sent (now, if none is)."""
        if not self._frames:
            on_reached(False)
            return
        self._queue.append(on_reached)

    def flush(self) -> int:
        n = self._frames
        marks = [m for m in self._queue if not isinstance(m, bytes)]
        self._queue.clear()
        self._frames = 0
        self.flushed += n
        self._last_sent = None  # silence after a flush is not a playout gap
        for m in marks:
            m(True)
        return n

    @property
    def pending(self) -> int:
        return self._frames

    def _pass_marks(self) -> None:
        while self._queue and not isinstance(self._queue[0], bytes):
            mark = self._queue.popleft()
            mark(False)  # type: ignore[operator]

    async def drain(self, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self._frames and loop.time() < end:
            await asyncio.sleep(self._frame_s)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at: float | None = None
        while True:
            self._pass_marks()
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            now = loop.time()
            if next_at is None or now > next_at + self._frame_s:
                # idle (or late by more than a frame): restart the clock after the prebuffer
                queued_s = self._frames * self._frame_s
                next_at = now + max(0.0, self._prebuffer_s - queued_s + self._frame_s)
                self._last_sent = None
            if next_at > now:
                await asyncio.sleep(next_at - now)
            self._pass_marks()
            if not self._queue:  # flushed while we slept
                continue
            payload = self._queue.popleft()
            self._frames -= 1
            sent_at = loop.time()
            self._send(payload)  # type: ignore[arg-type]
            self._pass_marks()  # a reply's end right behind its last frame: reached now
            if self._last_sent is not None:
                self.max_gap_s = max(self.max_gap_s, sent_at - self._last_sent)
            self._last_sent = sent_at if self._queue else None
            self.sent += 1
            next_at += self._frame_s
