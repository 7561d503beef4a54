"""Medians, percentiles and ratios: the only arithmetic the benchmark does on its samples."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """A figure over several runs: the median is what counts, min and max show the spread."""
    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            raise ValueError("no samples to summarise")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def to_json(self, digits: int = 3) -> dict[str, float | int]:
        return {"median": round(self.median, digits), "min": round(self.low, digits),
                "max": round(self.high, digits), "runs": self.runs}


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: an observed value, never an interpolated one."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))  # 1-based
    return ordered[min(rank, len(ordered)) - 1]


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Run-by-run ratios of paired samples, so slow and fast moments of the machine cancel out."""
    if len(numerators) != len(denominators):
        raise ValueError("paired samples must have the same length")
    return [a / b for a, b in zip(numerators, denominators, strict=True)]
