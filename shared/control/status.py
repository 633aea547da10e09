"""Every job of a scope at a glance: enabled, schedule, next slots, last run, failures in a row, runs going
on now, lateness of the last start."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from shared import schedule
from shared.control.dst_outlook import outlook
from shared.control.results import JobStatus
from shared.events.decide import subscriptions_of
from shared.store import history, triggers
from shared.store import jobs as jobs_store
from shared.store.jobs import JobRow
from shared.vocabulary import RunStatus

NEXT_SLOTS = 3
BY_HAND = "on event or by hand"


def describe_schedule(row: JobRow) -> str:
    """The job's cadence in words, or how it runs when it has no chain."""
    plan = row.schedule
    return BY_HAND if plan is None or not row.has_chain else schedule.describe(plan)


def job_status(
    row: JobRow,
    running: int,
    now: datetime,
    triggers_on: list[str] | None = None,
    trigger_counts: dict[str, int] | None = None,
) -> JobStatus:
    plan = row.schedule
    upcoming = schedule.next_slots(plan, now, NEXT_SLOTS) if plan is not None and row.has_chain and row.enabled else []
    return JobStatus(
        job_id=row.job_id,
        queue=row.queue,
        enabled=row.enabled,
        pause_note=row.pause_note,
        schedule=describe_schedule(row),
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
        triggers_on=list(row.triggers_on) if triggers_on is None else triggers_on,
        trigger_counts=trigger_counts or {},
        paused_until=row.paused_until,
        catchup=row.catchup,
        labels=dict(row.labels),
        dst=outlook(row, now),
    )


async def statuses(conn: asyncpg.Connection, scope: str, now: datetime) -> list[JobStatus]:
    """Every job of the scope, by job_id."""
    running = await history.counts_in(conn, scope, RunStatus.RUNNING)
    rows = await jobs_store.list_jobs(conn, scope)
    counted = await triggers.counts(conn, scope)
    patterns = subscriptions_of(rows)
    return [
        job_status(row, running.get(row.job_id, 0), now, patterns[row.job_id], counted.get(row.job_id, {}))
        for row in rows
    ]
