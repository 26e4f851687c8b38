"""Fixed-size 20 ms frames and per-call sample buffers.

`FrameAssembler` turns arbitrary byte chunks (an RTP packet, a websocket message, a file
read) into exact 20 ms frames; `SampleRing` keeps the last N seconds of a call's audio with
absolute sample positions, so a VAD can cut a segment [start, end) without copying the call.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from agent import events as ev
from agent.speech.codec import PHONE_RATE, PIPELINE_RATE, float_to_int16, resample, ulaw_encode

SAMPLES_PER_FRAME = {"pcmu8k": PHONE_RATE * ev.FRAME_MS // 1000, "pcm16k": PIPELINE_RATE * ev.FRAME_MS // 1000}


class FrameAssembler:
    """Accumulates bytes and yields complete frames of `frame_bytes`; the remainder waits for
    the next chunk (or is returned, zero-padded, by `flush`)."""

    def __init__(self, frame_bytes: int) -> None:
        self.frame_bytes = frame_bytes
        self._buf = bytearray()

    def push(self, data: bytes) -> Iterator[bytes]:
        self._buf.extend(data)
        n = len(self._buf) // self.frame_bytes
        for i in range(n):
            yield bytes(self._buf[i * self.frame_bytes : (i + 1) * self.frame_bytes])
        del self._buf[: n * self.frame_bytes]

    def flush(self, pad: int = 0) -> bytes | None:
        if not self._buf:
            return None
        out = bytes(self._buf) + bytes([pad]) * (self.frame_bytes - len(self._buf))
        self._buf.clear()
        return out


def pcm_to_ulaw_frames(pcm: np.ndarray, rate: int) -> list[bytes]:
    """A whole signal (int16 or float32 at `rate`) -> 20 ms 8 kHz mu-law payloads (last one
    padded with mu-law silence, 0xFF)."""
    x = np.asarray(pcm)
    if x.dtype != np.int16:
        x = float_to_int16(x)
    narrow = resample(x, rate, PHONE_RATE)
    asm = FrameAssembler(ev.FRAME_BYTES["pcmu8k"])
    frames = list(asm.push(ulaw_encode(narrow)))
    tail = asm.flush(pad=0xFF)
    if tail:
        frames.append(tail)
    return frames


@dataclass
class SampleRing:
    """Ring buffer of int16 samples addressed by absolute sample index since call start."""

    capacity: int
    _buf: np.ndarray = field(init=False)
    total: int = 0  # samples written since the call started

    def __post_init__(self) -> None:
        self._buf = np.zeros(self.capacity, dtype=np.int16)

    def append(self, pcm: np.ndarray) -> None:
        x = np.asarray(pcm, dtype=np.int16)
        if len(x) >= self.capacity:
            x = x[-self.capacity :]
            self.total += len(pcm) - len(x)
        start = self.total % self.capacity
        first = min(len(x), self.capacity - start)
        self._buf[start : start + first] = x[:first]
        self._buf[: len(x) - first] = x[first:]
        self.total += len(x)

    @property
    def oldest(self) -> int:
        return max(0, self.total - self.capacity)

    def slice(self, start: int, end: int | None = None) -> np.ndarray:
        """Samples [start, end) by absolute index; clipped to what the ring still holds."""
        end = self.total if end is None else min(end, self.total)
        start = max(start, self.oldest)
        if end <= start:
            return np.zeros(0, dtype=np.int16)
        idx = np.arange(start, end) % self.capacity
        return self._buf[idx]
