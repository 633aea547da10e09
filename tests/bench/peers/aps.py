"""`python -m tests.bench.peers.aps`: APScheduler 3.11's AsyncIOScheduler with J one-second interval jobs.

Every job starts at the same instant (APScheduler's interval grid is `start_date + n * interval`): a herd.
Lateness is measured the same way as for the framework, job function start minus the intended slot: the
executor is handed the run times APScheduler computed for each submission (`_do_submit_job(job, run_times)`),
so the job function pops the exact slot it was submitted for. Nothing is durable and nothing is shared between
processes: this is the in-process baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict, deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from tests.bench.broker import until_stopped

RUNS: list[tuple[str, float, float, int]] = []
SUBMITTED: defaultdict[str, deque[float]] = defaultdict(deque)


class SlotNotingExecutor(AsyncIOExecutor):
    """Remembers the run times of each submission, in order, for the job function to pick up."""

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        SUBMITTED[job.id].extend(t.timestamp() for t in run_times)
        super()._do_submit_job(job, run_times)


async def tick(job_id: str) -> None:
    started = time.time()
    slot = SUBMITTED[job_id].popleft()
    RUNS.append((job_id, slot, started, 1))


async def serve(args: argparse.Namespace) -> None:
    scheduler = AsyncIOScheduler(
        executors={"default": SlotNotingExecutor()},
        job_defaults={"coalesce": False, "max_instances": 1000, "misfire_grace_time": None},
        timezone="UTC",
    )
    start = datetime.fromtimestamp(float(int(time.time()) + 2), UTC)
    for i in range(args.jobs):
        job_id = f"j{i:04d}"
        scheduler.add_job(tick, IntervalTrigger(seconds=1, start_date=start), args=[job_id], id=job_id)
    scheduler.start()
    await asyncio.to_thread(Path(args.ready).write_text, str(start.timestamp()))
    await until_stopped(args.stop_at)
    scheduler.shutdown(wait=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--stop-at", type=float, required=True)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--runs", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args))
    Path(args.runs).write_text("".join(json.dumps(run) + "\n" for run in RUNS))


if __name__ == "__main__":
    main()
