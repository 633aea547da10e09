"""Pure arithmetic over run records: lateness percentiles, runs in a window, duplicates."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# A run as every system under test reports it: (job_id, intended slot, handler start, attempt), unix seconds.
Run = tuple[str, float, float, int]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between closest ranks; NaN for no values."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class Lateness:
    """Start minus intended slot, in milliseconds."""

    count: int
    p50: float
    p99: float
    max: float
    mean: float

    def as_dict(self) -> dict[str, float]:
        return {"count": self.count, "p50": self.p50, "p99": self.p99, "max": self.max, "mean": self.mean}


def lateness(runs: Iterable[Run]) -> tuple[Lateness, list[float]]:
    """Summary and the sorted samples (ms) of the given runs."""
    samples = sorted((started - slot) * 1000 for _, slot, started, _ in runs)
    if not samples:
        return Lateness(0, math.nan, math.nan, math.nan, math.nan), samples
    summary = Lateness(
        count=len(samples),
        p50=round(percentile(samples, 0.5), 2),
        p99=round(percentile(samples, 0.99), 2),
        max=round(samples[-1], 2),
        mean=round(sum(samples) / len(samples), 2),
    )
    return summary, samples


def in_window(runs: Iterable[Run], start: float, end: float) -> list[Run]:
    """First attempts whose intended slot lies in [start, end)."""
    return [run for run in runs if start <= run[1] < end and run[3] == 1]


def duplicates(runs: Iterable[Run]) -> int:
    """How many extra executions there were of (job, slot, attempt) triples executed more than once."""
    seen = Counter((job, round(slot, 3), attempt) for job, slot, _, attempt in runs)
    return sum(n - 1 for n in seen.values() if n > 1)


def distinct_slots(runs: Iterable[Run]) -> int:
    return len({(job, round(slot, 3)) for job, slot, _, _ in runs})
