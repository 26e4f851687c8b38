"""Telephone audio conversions: G.711 mu-law <-> linear PCM16, and 8 kHz <-> 16 kHz resampling.

mu-law is done with numpy lookup tables (written by hand because the stdlib `audioop` is
deprecated and removed in Python 3.13, and no small maintained package does just G.711); the
algorithm is the ITU-T G.711 one (bias 0x84, clip 32635).  Resampling uses soxr, the libsoxr
binding: `resample_stream` keeps the filter state across 20 ms frames so a call's audio has no
clicks at frame edges.
"""

from __future__ import annotations

import numpy as np
import soxr

PHONE_RATE = 8000
PIPELINE_RATE = 16000

_BIAS = 0x84


def _build_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((mantissa << 3) + _BIAS) << exponent
    pcm = np.where(sign != 0, _BIAS - magnitude, magnitude - _BIAS)
    return pcm.astype(np.int16)


def _build_encode_table() -> np.ndarray:
    """Map every int16 value (offset by 32768) to its mu-law byte: 64 KiB, built once per
    process, then encoding is one fancy-index.  14-bit reference encoder (Sun g711.c, as
    CPython's audioop did), so bytes match what other G.711 stacks produce."""
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), 8159) + 0x21
    seg_end = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    seg = np.searchsorted(seg_end, mag)  # first segment whose end >= mag
    uval = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0x0F))
    return (uval ^ mask).astype(np.uint8)


_DECODE = _build_decode_table()
_ENCODE = _build_encode_table()


def ulaw_decode(data: bytes) -> np.ndarray:
    """mu-law bytes -> int16 samples (same rate)."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """int16 samples -> mu-law bytes."""
    pcm16 = np.asarray(pcm, dtype=np.int16)
    return _ENCODE[pcm16.astype(np.int32) + 32768].tobytes()


def float_to_int16(x: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0) * 32767.0).astype(np.int16)


def int16_to_float(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32) / 32768.0


def resample(pcm: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample a whole signal (int16 or float32 in, same dtype out)."""
    if rate_in == rate_out:
        return np.asarray(pcm)
    x = np.asarray(pcm)
    if x.dtype == np.int16:  # via float32: soxr dithers int16 output (not reproducible)
        return float_to_int16(soxr.resample(int16_to_float(x), rate_in, rate_out, quality="HQ") * (32768.0 / 32767.0))
    return soxr.resample(x, rate_in, rate_out, quality="HQ").astype(x.dtype, copy=False)


def phone_round_trip(pcm16k: np.ndarray) -> np.ndarray:
    """What a phone line does to 16 kHz speech: down to 8 kHz, G.711 mu-law, and back up.
    int16 in, int16 out (same length up to resampler rounding)."""
    narrow = resample(np.asarray(pcm16k, dtype=np.int16), PIPELINE_RATE, PHONE_RATE)
    coded = ulaw_decode(ulaw_encode(narrow))
    return resample(coded, PHONE_RATE, PIPELINE_RATE)


class StreamResampler:
    """Frame-by-frame resampling for one call (keeps soxr's filter state between frames).

    Works in float32: soxr's int16 stream output is dithered (randomly), which would make a
    call's audio - and so its VAD decisions - differ between a live run and a replay."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.rate_in = rate_in
        self.rate_out = rate_out
        self._stream = soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality="HQ")

    def push(self, pcm: np.ndarray, last: bool = False) -> np.ndarray:
        out = self._stream.resample_chunk(int16_to_float(pcm), last=last)
        return float_to_int16(out * (32768.0 / 32767.0))
