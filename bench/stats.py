"""Percentiles (nearest rank) of latencies, in milliseconds."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank `q` quantile (0 < q <= 1) of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """n, mean, p50, p95, p99 and max of durations given in seconds, in ms (3 decimals)."""
    values = sorted(seconds)
    if not values:
        return {"n": 0}

    def ms(value: float) -> float:
        return round(value * 1000, 3)

    return {
        "n": len(values),
        "mean": ms(sum(values) / len(values)),
        "p50": ms(percentile(values, 0.50)),
        "p95": ms(percentile(values, 0.95)),
        "p99": ms(percentile(values, 0.99)),
        "max": ms(values[-1]),
    }
