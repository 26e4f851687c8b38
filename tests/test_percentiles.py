"""Latency figures are measured values: p95 of twenty turns is the 19th slowest, not a blend."""

from __future__ import annotations

import pytest

from agent.percentiles import percentile


def test_p50_p95_and_max_are_values_that_were_measured():
    turns_ms = [float(x) for x in range(1, 21)]  # 1..20 ms, in any order
    assert percentile(reversed(turns_ms), 0.5) == 11.0  # rank round(0.5 * 19) = 10 -> 11 ms
    assert percentile(turns_ms, 0.95) == 19.0
    assert percentile(turns_ms, 1.0) == 20.0 and percentile(turns_ms, 0.0) == 1.0
    assert percentile([7.5], 0.95) == 7.5


def test_no_samples_is_no_figure_and_a_bad_quantile_is_an_error():
    assert percentile([], 0.5) is None
    with pytest.raises(ValueError):
        percentile([1.0], 95)  # a percent where a fraction belongs
