"""Following runs in `scheduler.job_runs`: which runs are going on now, and waiting for one run's outcome."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from scheduler_seed import render
from scheduler_seed.errors import CliError
from shared.store import runs as runs_store
from shared.store.jobs import JobRow
from shared.vocabulary import RunStatus

POLL_SEC = 0.2
RETRIED = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ABANDONED})
NOT_RETRIED_PREFIX = "params invalid"  # the worker does not retry a run whose params do not validate

Finder = Callable[[asyncpg.Connection, int], Awaitable[asyncpg.Record | None]]
"""attempt number -> that attempt's run row, if there is one yet."""
_COLUMNS = "run_id, status, attempt, duration_ms, error, worker"


@dataclass(frozen=True, slots=True)
class LiveRun:
    run_id: uuid.UUID
    job_id: str
    worker: str | None
    status: str
    since: datetime


async def lock_peers(conn: asyncpg.Connection, job: JobRow) -> list[str]:
    """The jobs whose runs exclude this job's: its lock group, or the job alone."""
    if job.lock_group is None:
        return [job.job_id]
    records = await conn.fetch(
        "SELECT job_id FROM scheduler.jobs WHERE scope = $1 AND lock_group = $2", job.scope, job.lock_group
    )
    return [r["job_id"] for r in records]


async def live_runs(conn: asyncpg.Connection, scope: str, job_ids: list[str]) -> list[LiveRun]:
    """Claimed or running rows of these jobs whose worker still holds its liveness lock."""
    records = await conn.fetch(
        "SELECT run_id, job_id, worker, status, coalesce(started_at, claimed_at) AS since FROM scheduler.job_runs"
        " WHERE scope = $1 AND job_id = ANY($2::text[]) AND status IN ('claimed', 'running')",
        scope,
        job_ids,
    )
    return [
        LiveRun(r["run_id"], r["job_id"], r["worker"], r["status"], r["since"])
        for r in records
        if await runs_store.worker_alive(conn, r["worker"])
    ]


async def wait_until_idle(conn: asyncpg.Connection, scope: str, job_ids: list[str], deadline: float) -> None:
    """Wait while any of the jobs runs (so a message published next does not find the lock taken)."""
    while await live_runs(conn, scope, job_ids):
        if time.monotonic() >= deadline:
            raise CliError(f"still running after the wait: {', '.join(job_ids)}; try again later")
        await asyncio.sleep(POLL_SEC)


def by_run_id(first: uuid.UUID) -> Finder:
    """A manual run and its retries: attempt n + 1 is uuid5(run_id of attempt n, 'attempt-<n + 1>') (the
    derivation of execution.retry_run_id)."""

    async def find(conn: asyncpg.Connection, attempt: int) -> asyncpg.Record | None:
        run_id = first
        for n in range(2, attempt + 1):
            run_id = uuid.uuid5(run_id, f"attempt-{n}")
        return await conn.fetchrow(f"SELECT {_COLUMNS} FROM scheduler.job_runs WHERE run_id = $1", run_id)

    return find


def by_slot(scope: str, job_id: str, slot: datetime) -> Finder:
    """A slot's run in any epoch (the claim is unique per slot and attempt), and its retries."""

    async def find(conn: asyncpg.Connection, attempt: int) -> asyncpg.Record | None:
        return await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM scheduler.job_runs WHERE scope = $1 AND job_id = $2 AND scheduled_for = $3"
            " AND attempt = $4 AND epoch IS NOT NULL",
            scope,
            job_id,
            slot,
            attempt,
        )

    return find


async def wait_for_outcome(
    conn: asyncpg.Connection, find: Finder, job: JobRow, deadline: float, say: Callable[[str], None]
) -> asyncpg.Record:
    """Poll until the run is final. A failed attempt with attempts left is followed to its retry."""
    attempt = 1
    while True:
        record = await find(conn, attempt)
        if record is not None and RunStatus(record["status"]).terminal:
            if not retry_follows(record, job):
                return record
            say(describe_outcome(record) + "; a retry follows")
            attempt += 1
            continue
        if time.monotonic() >= deadline:
            state = "not started yet" if record is None else f"still {record['status']}"
            raise CliError(f"no outcome in time: attempt {attempt} is {state}; `runs JOB` shows it later")
        await asyncio.sleep(POLL_SEC)


def retry_follows(record: asyncpg.Record, job: JobRow) -> bool:
    """Whether the worker posts another attempt (execution.retry_if_due); a paused job's retries are dropped
    where they land, so there is nothing to wait for then."""
    return (
        job.enabled
        and RunStatus(record["status"]) in RETRIED
        and record["attempt"] < job.max_attempts
        and not (record["error"] or "").startswith(NOT_RETRIED_PREFIX)
    )


def describe_outcome(record: asyncpg.Record) -> str:
    line = f"run {record['run_id']} {record['status']} (attempt {record['attempt']}"
    line += f", took {render.millis(record['duration_ms'])})" if record["duration_ms"] is not None else ")"
    if record["error"]:
        line += f": {render.shorten(record['error'], 300)}"
    return line


def patience(job: JobRow) -> float:
    """How long a run of the job can take: every attempt timing out and backing off, plus a margin."""
    return job.max_attempts * (job.timeout_sec + job.retry_backoff_max_sec) + 30.0
