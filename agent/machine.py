"""What machine a figure was measured on: CPU model, cores and the vector units the int8
kernels use.  Whisper's and Smart Turn's int8 maths give different results and speeds on an
AVX2-only CPU than on one with AVX-512/VNNI (docs/speech.md), so a benchmark line without the
CPU cannot be compared with another."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

# the vector extensions that change int8 results or speed, in the order they appeared
_SIMD = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


@lru_cache(maxsize=4)  # the CPU does not change under a running process; benches ask per JSON line
def machine(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, object]:
    """{"cpu": model name, "cores": usable cores, "simd": [extensions present]}; on a system
    without /proc/cpuinfo the model is platform.processor() and simd is empty.  Cached: treat
    the dict as read-only."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and value.strip():
                model = value.strip()
            elif key == "flags":
                flags = set(value.split())
                break  # the first CPU's flags stand for all
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cores": cores, "simd": [f for f in _SIMD if f in flags]}
