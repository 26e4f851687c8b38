"""The one percentile the project reports (latency p50/p95 in evaluations and benchmarks)."""

from __future__ import annotations

from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank `q` quantile (0 <= q <= 1) of `values`: the value at rank
    round(q * (n - 1)) of the sorted values, so p95 of 20 samples is the 19th and max is q=1.
    A measured value, never an interpolation between two; None when there are no values."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be within 0..1, got {q}")
    v = sorted(values)
    if not v:
        return None
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]
