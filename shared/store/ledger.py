"""Repository functions of the slot ledger: gap rows (slots of the schedule that got no run) in
`scheduler.job_runs`, reading them back, and the pause state a timed pause and the `paused` rows rest on.

A gap row is an ordinary run row of the chain (epoch set, attempt 1, run_id derived from the slot), so the
chain-slot index keeps one row per slot whatever writes first: a run that claimed the slot wins over a gap row
(ON CONFLICT DO NOTHING), and a gap row is revived like any skipped slot when a catch-up or backfill runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from shared import schedule
from shared.store.jobs import JobRow
from shared.vocabulary import GAPS, RunStatus, TriggerSource, sources

_INSERT_GAPS = """
    INSERT INTO scheduler.job_runs (run_id, scope, job_id, epoch, trigger_source, scheduled_for, attempt, status,
        worker, error, finished_at)
    SELECT g.run_id, $1, $2, $3, $4, g.slot, 1, $5, $6, $7, now()
    FROM unnest($8::uuid[], $9::timestamptz[]) AS g(run_id, slot)
    ON CONFLICT DO NOTHING
    RETURNING scheduled_for
"""


async def insert_gaps(
    conn: asyncpg.Connection,
    scope: str,
    job_id: str,
    epoch: int,
    slots: Sequence[datetime],
    status: RunStatus,
    cause: str,
    worker: str | None,
) -> list[datetime]:
    """One statement: a row in `status` (a gap status) for each slot that has none yet; returns the slots it
    wrote (a slot that has a run, in any epoch, keeps it)."""
    if not slots:
        return []
    assert status in GAPS, status
    run_ids = [schedule.derive_run_id(scope, job_id, epoch, slot, 1) for slot in slots]
    records = await conn.fetch(
        _INSERT_GAPS,
        scope,
        job_id,
        epoch,
        TriggerSource.SCHEDULER.value,
        status.value,
        worker,
        cause[:500],
        run_ids,
        list(slots),
    )
    return sorted(r["scheduled_for"] for r in records)


async def gaps(conn: asyncpg.Connection | asyncpg.Pool, scope: str, job_id: str, limit: int) -> list[asyncpg.Record]:
    """The job's gap rows (slots of the schedule that got no run), newest slot first."""
    records: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM scheduler.job_runs WHERE scope = $1 AND job_id = $2 AND status = ANY($3::text[])"
        " AND epoch IS NOT NULL ORDER BY scheduled_for DESC LIMIT $4",
        scope,
        job_id,
        sources(GAPS | {RunStatus.SKIPPED_LOCKED}),
        limit,
    )
    return records


async def mark_paused(
    conn: asyncpg.Connection, scope: str, job_id: str, until: datetime | None, paused_from: datetime | None
) -> None:
    """After `set_enabled(False)`: when the pause ends by itself (None: on `resume` only) and the first slot it
    keeps from running (None keeps the stored one: a second pause changes the end, not the start)."""
    await conn.execute(
        "UPDATE scheduler.jobs SET paused_until = $3, paused_from = coalesce($4, paused_from)"
        " WHERE scope = $1 AND job_id = $2",
        scope,
        job_id,
        until,
        paused_from,
    )


async def due_resumes(conn: asyncpg.Connection | asyncpg.Pool, scope: str, now: datetime) -> list[JobRow]:
    """Paused jobs whose timed pause has ended."""
    records = await conn.fetch(
        "SELECT * FROM scheduler.jobs WHERE scope = $1 AND paused_until IS NOT NULL AND paused_until <= $2"
        " AND NOT enabled ORDER BY paused_until, job_id",
        scope,
        now,
    )
    return [JobRow.from_record(r) for r in records]


async def clear_pause(conn: asyncpg.Connection, scope: str, job_id: str) -> None:
    """The job is enabled again (by a jobs file): its pause is over."""
    await conn.execute(
        "UPDATE scheduler.jobs SET paused_until = NULL, paused_from = NULL WHERE scope = $1 AND job_id = $2",
        scope,
        job_id,
    )
