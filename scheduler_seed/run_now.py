"""`run-now JOB`: one manual message to the job's work queue, and with --wait its outcome.

A job that is running now (a claimed or running row whose worker is alive) is refused with exit code 3
unless --queue: the 409 of `000_655093b4cfd23bb8.txt`. The message carries an explicit run_id, so --wait
can follow exactly this run (and its retries) in `scheduler.job_runs`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from scheduler_seed import render
from scheduler_seed.errors import CliError, RunningNow
from scheduler_seed.inputs import argtype, json_object, seconds
from scheduler_seed.jobref import existing_job
from scheduler_seed.session import Session
from shared import topology
from shared.messages import manual_message
from shared.seeding import declare_for
from shared.store import runs as runs_store
from shared.store import workers
from shared.store.jobs import JobRow
from shared.store.runs import RunStatus

POLL_SEC = 0.2
RETRIED = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ABANDONED})
NOT_RETRIED_PREFIX = "params invalid"  # execution refuses to retry a run whose params do not validate


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run-now",
        parents=[common],
        help="run a job once, now",
        description="Publish one manual message to the job's work queue. Exit code 3 if the job is running now "
        "(unless --queue); with --wait, 0 when the run succeeded and 1 otherwise.",
    )
    p.add_argument("job", metavar="JOB")
    p.add_argument("--params", type=argtype(json_object), default={}, help="JSON object over the default_params")
    p.add_argument("--wait", action="store_true", help="wait for the run (and its retries) and print the outcome")
    p.add_argument("--queue", action="store_true", help="queue the run even if the job is running now")
    p.add_argument("--timeout", type=argtype(seconds), metavar="SEC", help="with --wait: give up after SEC")
    p.set_defaults(execute=execute)


@dataclass(frozen=True, slots=True)
class LiveRun:
    run_id: uuid.UUID
    worker: str | None
    status: str
    since: datetime


async def live_runs(conn: asyncpg.Connection, scope: str, job_id: str) -> list[LiveRun]:
    """Claimed or running rows of the job whose worker still holds its liveness lock."""
    records = await conn.fetch(
        "SELECT run_id, worker, status, coalesce(started_at, claimed_at) AS since FROM scheduler.job_runs"
        " WHERE scope = $1 AND job_id = $2 AND status IN ('claimed', 'running')",
        scope,
        job_id,
    )
    return [
        LiveRun(r["run_id"], r["worker"], r["status"], r["since"])
        for r in records
        if await runs_store.worker_alive(conn, r["worker"])
    ]


def default_wait(job: JobRow) -> float:
    """Long enough for every attempt to time out and back off, plus a margin for a busy worker."""
    return job.max_attempts * (job.timeout_sec + job.retry_backoff_max_sec) + 30.0


async def execute(args: argparse.Namespace, session: Session) -> int:
    conn = await session.db()
    job = await existing_job(conn, session.scope, args.job)
    if not args.queue:
        live = await live_runs(conn, session.scope, job.job_id)
        if live:
            run = live[0]
            raise RunningNow(
                f"job {job.job_id!r} is running now (run {run.run_id}, {run.status} on {run.worker} for "
                f"{render.span((datetime.now(UTC) - run.since).total_seconds())}); "
                "nothing queued: add --queue to queue a run anyway"
            )
    now = datetime.now(UTC)
    message = manual_message(job.job_id, args.params, now).model_copy(update={"scope": session.scope})
    await declare_for(await session.channel(), job)  # so the message has a queue even before any worker started
    await (await session.publisher()).to_work(job.queue, message)
    print(f"queued run {message.run_id} of {job.job_id!r} on {topology.work_queue_name(session.scope, job.queue)}")
    if job.queue not in await workers.live_queues(conn, session.scope):
        print(f"note: no live worker consumes queue {job.queue!r} now; the run starts when one does")
    if not args.wait:
        return 0
    timeout = args.timeout if args.timeout is not None else default_wait(job)
    outcome = await wait_for_outcome(conn, message.run_id, job.max_attempts, time.monotonic() + timeout)
    print(describe_outcome(outcome))
    return 0 if outcome["status"] == RunStatus.SUCCEEDED else 1


async def wait_for_outcome(
    conn: asyncpg.Connection, run_id: uuid.UUID, max_attempts: int, deadline: float
) -> asyncpg.Record:
    """Poll the run row until it is final; a failed attempt with attempts left is followed to its retry
    (whose run_id the worker derives from the previous attempt's: uuid5(run_id, 'attempt-N'))."""
    while True:
        record = await conn.fetchrow(
            "SELECT run_id, status, attempt, duration_ms, error, worker FROM scheduler.job_runs WHERE run_id = $1",
            run_id,
        )
        if record is not None and RunStatus(record["status"]).terminal:
            if not retry_follows(record, max_attempts):
                return record
            print(describe_outcome(record) + "; a retry follows")
            run_id = uuid.uuid5(run_id, f"attempt-{record['attempt'] + 1}")
            continue
        if time.monotonic() >= deadline:
            state = "not picked up by any worker" if record is None else f"still {record['status']}"
            raise CliError(f"no outcome in time: run {run_id} is {state}; `runs JOB` shows it later")
        await asyncio.sleep(POLL_SEC)


def retry_follows(record: asyncpg.Record, max_attempts: int) -> bool:
    return (
        RunStatus(record["status"]) in RETRIED
        and record["attempt"] < max_attempts
        and not (record["error"] or "").startswith(NOT_RETRIED_PREFIX)
    )


def describe_outcome(record: asyncpg.Record) -> str:
    took = render.millis(record["duration_ms"])
    line = f"run {record['run_id']} {record['status']} (attempt {record['attempt']}, took {took})"
    if record["error"]:
        line += f": {render.shorten(record['error'], 300)}"
    return line
