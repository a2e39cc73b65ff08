"""Summaries of timing samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile: a value that was measured, never an interpolation."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Timing:
    count: int
    p50: float
    p99: float
    per_second: float  # one client, one request at a time: 1 / mean

    @classmethod
    def of(cls, samples: Sequence[float]) -> Timing:
        total = sum(samples)
        return cls(len(samples), percentile(samples, 50), percentile(samples, 99), len(samples) / total if total else 0)
