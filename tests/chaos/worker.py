"""`python -m tests.chaos.worker JOBS_FILE`: a worker serving every queue of the soak's jobs file.

Its handler sleeps and fails at random like the mock executor, and also writes its own record of every
execution (a start line and an end line, appended with one write each to `$CHAOS_EXEC_DIR/exec-<pid>.jsonl`).
That record does not come from the framework: it is how the checker sees a slot that really ran twice, even
if the framework's own rows said otherwise. A process killed with -9 leaves a start line without an end line.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.context import RunContext
from shared.errors import ConfigError
from shared.jobsfile import load_jobs_file
from shared.settings import Settings
from shared.worker import Worker


class ChaosParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    sleep_sec: float = Field(default=0.05, ge=0, le=600)
    sleep_spread_sec: float = Field(default=0.0, ge=0, le=600)  # sleep is uniform in [sleep, sleep + spread]
    fail_rate: float = Field(default=0.0, ge=0, le=1)


class ChaosFailure(RuntimeError):
    """The failure drawn at random."""


class ExecutionLog:
    """Append-only JSON lines, one os.write per line (O_APPEND: lines of concurrent runs never interleave)."""

    def __init__(self, directory: str | None) -> None:
        self.fd: int | None = None
        if directory:
            Path(directory).mkdir(parents=True, exist_ok=True)
            path = Path(directory) / f"exec-{os.getpid()}.jsonl"
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, **fields: Any) -> None:
        if self.fd is not None:
            os.write(self.fd, (json.dumps(fields, default=str) + "\n").encode())


LOG = ExecutionLog(os.environ.get("CHAOS_EXEC_DIR"))
# A worker of the HA soak may run with its clock skewed (libfaketime, FAKETIME="+2s"): its own record is written in
# true time (its clock minus the skew it was given), so the checker compares executions on one time line.
SKEW_SEC = float(os.environ.get("CHAOS_CLOCK_SKEW_SEC", "0"))


def true_time() -> float:
    return time.time() - SKEW_SEC


async def chaos_run(ctx: RunContext, params: ChaosParams) -> None:
    key = {
        "run_id": str(ctx.run_id),
        "job_id": ctx.job_id,
        "scheduled_for": ctx.scheduled_for.isoformat(),
        "attempt": ctx.attempt,
        "trigger_source": ctx.trigger_source,
        "pid": os.getpid(),
        "event_id": None if ctx.event is None else ctx.event.id,
    }
    LOG.write(event="start", at=true_time(), **key)
    outcome = "cancelled"
    try:
        await asyncio.sleep(params.sleep_sec + random.random() * params.sleep_spread_sec)
        if random.random() < params.fail_rate:
            outcome = "failed"
            raise ChaosFailure(f"chaos failure (fail_rate={params.fail_rate})")
        outcome = "succeeded"
    finally:
        LOG.write(event="end", at=true_time(), outcome=outcome, **key)


def build(settings: Settings, jobs_file: str) -> Worker:
    worker = Worker("chaos_worker", settings)
    for queue in sorted({d.queue_name for d in load_jobs_file(jobs_file)}):
        worker.register(queue, chaos_run, ChaosParams)
    return worker


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python -m tests.chaos.worker JOBS_FILE", file=sys.stderr)
        sys.exit(2)
    try:
        worker = build(Settings(), sys.argv[1])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    worker.run()


if __name__ == "__main__":
    main()
