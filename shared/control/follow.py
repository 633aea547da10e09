"""Following runs in `scheduler.job_runs`: which runs are going on now, waiting until a job is idle, and
waiting for one run (and the retries the retry policy says follow it) to reach its outcome."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg

from shared.control.errors import ActionFailed
from shared.control.results import LiveRun, RunOutcome
from shared.retry_policy import run_id_of_attempt, will_retry
from shared.store import history
from shared.store import runs as runs_store
from shared.store.jobs import JobRow
from shared.vocabulary import RunStatus

POLL_SEC = 0.2

Finder = Callable[[asyncpg.Connection, int], Awaitable[asyncpg.Record | None]]
"""attempt number -> that attempt's run row, if there is one yet."""


async def live_runs(conn: asyncpg.Connection, scope: str, job_ids: list[str]) -> list[LiveRun]:
    """Claimed or running rows of these jobs whose worker still holds its liveness lock."""
    return [
        LiveRun(r["run_id"], r["job_id"], r["worker"], r["status"], r["since"])
        for r in await history.owned(conn, scope, job_ids)
        if await runs_store.worker_alive(conn, r["worker"])
    ]


async def wait_until_idle(conn: asyncpg.Connection, scope: str, job_ids: list[str], deadline: float) -> None:
    """Wait while any of the jobs runs (so a message published next does not find the lock taken)."""
    while await live_runs(conn, scope, job_ids):
        if time.monotonic() >= deadline:
            raise ActionFailed(f"still running after the wait: {', '.join(job_ids)}; try again later")
        await asyncio.sleep(POLL_SEC)


def by_run_id(job: JobRow, first: uuid.UUID, scheduled_for: datetime) -> Finder:
    """A manual run (no epoch) and its retries, whose run ids the retry policy derives from the first."""

    async def find(conn: asyncpg.Connection, attempt: int) -> asyncpg.Record | None:
        run_id = run_id_of_attempt(job.scope, job.job_id, None, scheduled_for, first, attempt)
        return await history.attempt_by_id(conn, run_id)

    return find


def by_slot(scope: str, job_id: str, slot: datetime) -> Finder:
    """A slot's run in any epoch (the claim is unique per slot and attempt), and its retries."""

    async def find(conn: asyncpg.Connection, attempt: int) -> asyncpg.Record | None:
        return await history.attempt_of_slot(conn, scope, job_id, slot, attempt)

    return find


def outcome_of(record: asyncpg.Record) -> RunOutcome:
    return RunOutcome(
        record["run_id"], record["status"], record["attempt"], record["duration_ms"], record["error"], record["worker"]
    )


async def wait_for_outcome(
    conn: asyncpg.Connection,
    find: Finder,
    job: JobRow,
    deadline: float,
    on_retry: Callable[[RunOutcome], None] | None = None,
) -> RunOutcome:
    """Poll until the run is final. A failed attempt the retry policy retries is followed to its retry
    (`on_retry` hears of each such attempt); ActionFailed when the deadline passes first."""
    attempt = 1
    while True:
        record = await find(conn, attempt)
        if record is not None and RunStatus(record["status"]).terminal:
            outcome = outcome_of(record)
            if not retry_follows(outcome, job):
                return outcome
            if on_retry is not None:
                on_retry(outcome)
            attempt += 1
            continue
        if time.monotonic() >= deadline:
            state = "not started yet" if record is None else f"still {record['status']}"
            raise ActionFailed(f"no outcome in time: attempt {attempt} is {state}; `runs JOB` shows it later")
        await asyncio.sleep(POLL_SEC)


def retry_follows(outcome: RunOutcome, job: JobRow) -> bool:
    """Whether the worker posts another attempt; a paused job's retries are dropped where they land, so
    there is nothing to wait for then."""
    return job.enabled and will_retry(RunStatus(outcome.status), outcome.attempt, job.max_attempts, outcome.error)


def patience(job: JobRow) -> float:
    """How long a run of the job can take: every attempt timing out and backing off, plus a margin."""
    return job.max_attempts * (job.timeout_sec + job.retry_backoff_max_sec) + 30.0
