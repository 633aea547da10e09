"""`status`: every job of the scope at a glance (or as JSON): enabled, schedule, next slots, last run,
failures in a row, runs going on now, lateness of the last start."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from scheduler_seed import render
from scheduler_seed.session import Session
from shared import schedule
from shared.store import jobs as jobs_store
from shared.store.jobs import JobRow

NEXT_SLOTS = 3


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("status", parents=[common], help="every job: schedule, next slots, last run, failures")
    p.add_argument("--json", action="store_true", help="one JSON object per job, in a list")
    p.set_defaults(execute=execute)


@dataclass(frozen=True, slots=True)
class JobStatus:
    job_id: str
    queue: str
    enabled: bool
    pause_note: str | None
    schedule: str
    timezone: str
    next_slots: list[datetime]
    next_due_at: datetime | None  # what the chain's waiting message is due at
    epoch: int
    last_run_at: datetime | None
    last_status: str | None
    last_error: str | None
    last_duration_ms: int | None
    consecutive_failures: int
    running: int
    last_lateness_ms: int | None


def job_status(row: JobRow, running: int, now: datetime) -> JobStatus:
    plan = row.schedule
    words = "on event or by hand" if plan is None or not row.has_chain else schedule.describe(plan)
    upcoming = schedule.next_slots(plan, now, NEXT_SLOTS) if plan is not None and row.has_chain and row.enabled else []
    return JobStatus(
        job_id=row.job_id,
        queue=row.queue,
        enabled=row.enabled,
        pause_note=row.pause_note,
        schedule=words,
        timezone=row.timezone,
        next_slots=upcoming,
        next_due_at=row.next_due_at,
        epoch=row.epoch,
        last_run_at=row.last_run_at,
        last_status=row.last_status,
        last_error=row.last_error,
        last_duration_ms=row.last_duration_ms,
        consecutive_failures=row.consecutive_failures,
        running=running,
        last_lateness_ms=row.last_lateness_ms,
    )


def as_json(statuses: list[JobStatus]) -> str:
    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return render.iso(value)
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return json.dumps([{k: plain(v) for k, v in asdict(s).items()} for s in statuses], indent=2)


def as_table(statuses: list[JobStatus], now: datetime) -> str:
    rows = [
        [
            s.job_id,
            "yes" if s.enabled else "paused",
            s.schedule,
            render.upcoming(s.next_slots, now),
            render.ago(s.last_run_at, now),
            s.last_status,
            s.consecutive_failures,
            s.running,
            render.millis(s.last_lateness_ms),
        ]
        for s in statuses
    ]
    headers = ["JOB", "ENABLED", "SCHEDULE", f"NEXT {NEXT_SLOTS}", "LAST RUN", "STATUS", "FAILS", "RUNNING", "LATE"]
    return render.table(headers, rows)


async def running_counts(conn: asyncpg.Connection, scope: str) -> dict[str, int]:
    records = await conn.fetch(
        "SELECT job_id, count(*) AS n FROM scheduler.job_runs WHERE scope = $1 AND status = 'running' GROUP BY job_id",
        scope,
    )
    return {r["job_id"]: r["n"] for r in records}


async def execute(args: argparse.Namespace, session: Session) -> int:
    conn = await session.db()
    now = datetime.now(UTC)
    running = await running_counts(conn, session.scope)
    rows = await jobs_store.list_jobs(conn, session.scope)
    statuses = [job_status(row, running.get(row.job_id, 0), now) for row in rows]
    if args.json:
        print(as_json(statuses))
    elif not statuses:
        print(f"no jobs in scope {session.scope!r}: `seed` loads deploy/jobs/{session.scope}.toml")
    else:
        print(as_table(statuses, now))
    return 0
