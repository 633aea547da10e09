"""What every scenario measures the same way: a window [t0, t1) on the wall clock, the CPU of the processes
under test over it (from the OS), and the runs whose intended slot falls inside it."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench import stats
from tests.bench.procs import Proc


@dataclass
class Window:
    start: float = 0.0
    end: float = 0.0
    cpu_sec: float = 0.0
    user_sec: float = 0.0
    system_sec: float = 0.0

    @staticmethod
    def open(procs: Sequence[Proc]) -> Window:
        for proc in procs:
            proc.mark()
        return Window(start=time.time())

    def close(self, procs: Sequence[Proc], duration: float) -> None:
        """At `start + duration` exactly (slots are counted in that half-open interval), mark the CPU."""
        self.end = self.start + duration
        time.sleep(max(0.0, self.end - time.time()))
        for proc in procs:
            proc.mark()
        self.user_sec = sum(proc.marks[-1][0] - proc.marks[-2][0] for proc in procs)
        self.system_sec = sum(proc.marks[-1][1] - proc.marks[-2][1] for proc in procs)
        self.cpu_sec = self.user_sec + self.system_sec

    @property
    def seconds(self) -> float:
        return self.end - self.start


def read_runs(paths: Sequence[Path]) -> list[stats.Run]:
    runs: list[stats.Run] = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            if line.strip():
                job, slot, started, attempt = json.loads(line)[:4]
                if slot is not None:
                    runs.append((job, float(slot), float(started), int(attempt)))
    return runs


@dataclass
class Outcome:
    """One system in one scenario: what ran, how late, at what cost."""

    system: str
    jobs: int
    workers: int
    mode: str  # spread (phases from the job id) or herd (every job at one instant)
    window: Window
    runs: list[stats.Run]
    expected: int
    extra: dict[str, Any] = field(default_factory=dict)
    samples: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        inside = stats.in_window(self.runs, self.window.start, self.window.end)
        late, self.samples = stats.lateness(inside)
        done = stats.distinct_slots(inside)
        return {
            "system": self.system,
            "jobs": self.jobs,
            "workers": self.workers,
            "mode": self.mode,
            "window_sec": round(self.window.seconds, 2),
            "expected": self.expected,
            "done": done,
            "duplicates": stats.duplicates(inside),
            "runs_per_sec": round(len(inside) / self.window.seconds, 1) if self.window.seconds else None,
            "lateness_ms": late.as_dict(),
            "cpu_sec": round(self.window.cpu_sec, 3),
            "cpu_system_share": round(self.window.system_sec / self.window.cpu_sec, 2) if self.window.cpu_sec else None,
            "cpu_sec_per_1000_runs": round(self.window.cpu_sec / len(inside) * 1000, 3) if inside else None,
            **self.extra,
        }


def expected_slots(jobs: int, window: Window, interval: float = 1.0) -> int:
    """Slots of `jobs` jobs on a fixed grid of `interval` seconds inside a window of whole seconds."""
    return round(jobs * window.seconds / interval)


def split_lateness(paths: Sequence[Path], start: float, end: float) -> dict[str, Any]:
    """For workers that note arrivals: lateness split into the broker's part (arrival at the consumer minus slot)
    and the worker's part before the handler (handler start minus arrival), p50/p99 in ms."""
    broker, worker = [], []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            fields = json.loads(line) if line.strip() else []
            if len(fields) >= 5 and fields[4] and start <= fields[1] < end and fields[3] == 1:
                broker.append((fields[4] - fields[1]) * 1000)
                worker.append((fields[2] - fields[4]) * 1000)
    out: dict[str, Any] = {}
    for name, values in (("arrival_lateness_ms", broker), ("before_handler_ms", worker)):
        values.sort()
        out[name] = {"p50": round(stats.percentile(values, 0.5), 2), "p99": round(stats.percentile(values, 0.99), 2)}
    return out
