"""`python -m tests.bench.worker`: a real worker process for the benchmarks.

Serves the work queues in BENCH_QUEUES (comma list) with a zero-work handler that notes, for every run, the job,
the slot (`ctx.scheduled_for`), the attempt and the wall-clock time the handler started. On SIGUSR1 it appends a
snapshot of its counters (PostgreSQL round trips, RabbitMQ messages, CPU) to BENCH_COUNTERS; when it stops (SIGTERM)
it writes its runs to BENCH_RUNS, one JSON array per line: [job_id, slot, started, attempt, arrived]. It runs on the
event loop SCHEDULER_EVENT_LOOP names, as any worker (the bench passes its own environment on).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from shared.context import RunContext
from shared.settings import Settings
from shared.worker import Worker
from tests.bench import counters

RUNS: list[tuple[str, float, float, int, float]] = []
ARRIVED: contextvars.ContextVar[float] = contextvars.ContextVar("arrived", default=0.0)


class AnyParams(BaseModel):
    model_config = ConfigDict(extra="allow")


async def zero_work(ctx: RunContext, params: AnyParams) -> None:
    """Does nothing but note when it started: the run's cost is the framework's alone."""
    RUNS.append((ctx.job_id, ctx.scheduled_for.timestamp(), time.time(), ctx.attempt, ARRIVED.get()))


def note_arrivals() -> None:
    """When the message reached the worker's consumer callback: splits lateness into the broker's part
    (arrival minus slot) and the framework's part before the handler (start minus arrival)."""
    original = Worker._on_message

    async def on_message(self: Worker, queue: str, message: Any) -> None:
        ARRIVED.set(time.time())
        await original(self, queue, message)

    Worker._on_message = on_message  # type: ignore[method-assign]


def note_loop_stalls(path: str | None, tick_sec: float = 0.005, above_ms: float = 20.0) -> None:
    """With BENCH_LOOP_STALLS=path: every time the worker's event loop answers a 5 ms timer more than `above_ms`
    late, one line `[wall time the stall ended, stall ms]` (a held loop, told apart from a slow server)."""
    if not path:
        return
    original = Worker.serve

    async def watch() -> None:
        loop = asyncio.get_running_loop()
        with Path(path).open("a") as out:  # noqa: ASYNC230 (a few lines, only while stalls happen)
            while True:
                before = loop.time()
                await asyncio.sleep(tick_sec)
                late_ms = (loop.time() - before - tick_sec) * 1000
                if late_ms > above_ms:
                    out.write(json.dumps([time.time(), round(late_ms, 1)]) + "\n")
                    out.flush()

    async def serve(self: Worker, *args: Any, **kwargs: Any) -> None:
        task = asyncio.create_task(watch())
        try:
            await original(self, *args, **kwargs)
        finally:
            task.cancel()

    Worker.serve = serve  # type: ignore[method-assign]


def dump_runs(path: Path) -> None:
    with path.open("w") as out:
        for run in RUNS:
            out.write(json.dumps(run) + "\n")


class WindowProfile:
    """With BENCH_CPROFILE=path: a cProfile of the measured window only (between the first two SIGUSR1),
    timed by this process's CPU clock, so it shows where CPU goes rather than where time passes."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.profile: Any = None
        self.done = False

    def toggle(self) -> None:
        if not self.path or self.done:
            return
        if self.profile is None:
            import cProfile

            self.profile = cProfile.Profile(time.process_time)
            self.profile.enable()
        else:
            self.profile.disable()
            self.profile.dump_stats(self.path)
            self.done = True


def main() -> None:
    counters.install()
    note_arrivals()
    note_loop_stalls(os.environ.get("BENCH_LOOP_STALLS"))
    counters_path = Path(os.environ["BENCH_COUNTERS"])
    profile = WindowProfile(os.environ.get("BENCH_CPROFILE"))

    def on_usr1(*_: object) -> None:
        counters.append_snapshot(counters_path)
        profile.toggle()

    signal.signal(signal.SIGUSR1, on_usr1)
    worker = Worker("bench", Settings())
    for queue in os.environ["BENCH_QUEUES"].split(","):
        worker.register(queue, zero_work, AnyParams)
    try:
        worker.run()
    finally:
        counters.append_snapshot(counters_path)
        dump_runs(Path(os.environ["BENCH_RUNS"]))


if __name__ == "__main__":
    main()
