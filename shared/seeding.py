"""Seeding as a library: upsert a job, (re)start its chain, pause, resume, change its schedule.

The seeder CLI, the watchdog and tests call these. Each one that touches a chain goes through `chain.replace`,
which holds the job's chain lock while it bumps the epoch, purges the delay queue and posts the first message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from aio_pika.abc import AbstractChannel

from shared import chain, topology
from shared.definitions import JobDefinition, load_definition
from shared.errors import UnknownJob
from shared.publisher import Publisher
from shared.store import jobs as jobs_store
from shared.store.jobs import JobRow


@dataclass(frozen=True, slots=True)
class SeedResult:
    job_id: str
    changed: bool  # the definition differed from the stored one
    epoch: int
    first_slot: datetime | None  # None: paused, or no schedule


async def declare_for(channel: AbstractChannel, job: JobRow) -> None:
    """Exchange, parking, work, delay and retry queues for one job (idempotent)."""
    await topology.declare_scope(channel, job.scope)
    await topology.declare_job(channel, job.scope, job.job_id, job.queue, job.queue_type)  # type: ignore[arg-type]


async def seed_job(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    definition: JobDefinition,
    now: datetime,
) -> SeedResult:
    """Upsert the definition, declare its topology and replace its chain: seeding twice leaves one chain."""
    row, changed = await jobs_store.upsert_job(conn, scope, definition)
    await declare_for(channel, row)
    epoch, slot = await chain.replace(conn, channel, publisher, row, now)
    return SeedResult(row.job_id, changed, epoch, None if slot is None else slot.scheduled_for)


async def _existing(conn: asyncpg.Connection, scope: str, job_id: str) -> JobRow:
    row = await jobs_store.get_job(conn, scope, job_id)
    if row is None:
        raise UnknownJob(scope, job_id)
    return row


async def pause_job(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    job_id: str,
    now: datetime,
    note: str | None = None,
) -> SeedResult:
    """Disable the job and end its chain now (the waiting message is purged; any in flight is stale)."""
    row = await _existing(conn, scope, job_id)
    await jobs_store.set_enabled(conn, scope, job_id, False, note)
    epoch, _ = await chain.replace(conn, channel, publisher, row, now)
    return SeedResult(job_id, row.enabled, epoch, None)


async def resume_job(
    conn: asyncpg.Connection, channel: AbstractChannel, publisher: Publisher, scope: str, job_id: str, now: datetime
) -> SeedResult:
    """Enable the job and start a fresh chain from now."""
    row = await _existing(conn, scope, job_id)
    await jobs_store.set_enabled(conn, scope, job_id, True, None)
    await declare_for(channel, row)
    epoch, slot = await chain.replace(conn, channel, publisher, row, now)
    return SeedResult(job_id, not row.enabled, epoch, None if slot is None else slot.scheduled_for)


async def change_job(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    job_id: str,
    changes: dict[str, Any],
    now: datetime,
) -> SeedResult:
    """Apply `changes` to the stored definition (validated as a whole) and restart the chain: takes effect now.

    Setting `cron_expr` clears `interval_seconds` and the other way round, so a job can switch kinds.
    """
    row = await _existing(conn, scope, job_id)
    data = row.definition().model_dump()
    if changes.get("cron_expr") is not None:
        data["interval_seconds"] = None
    if changes.get("interval_seconds") is not None:
        data["cron_expr"] = None
    data.update(changes)
    definition = load_definition(data, source=f"set {job_id}")
    return await seed_job(conn, channel, publisher, scope, definition, now)
