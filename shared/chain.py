"""A job's chain: the one live message that carries it to its next slot.

Every path that extends the chain (a worker posting the next slot) or replaces it (seed, resume, set, the
watchdog's reseed) holds the job's chain lock for a short transaction, re-reads the epoch under it, and
publishes with confirms before committing. So a delay queue never holds two live messages: per-message TTL
only expires at the head of a queue, and a second message would wait behind the first.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from aio_pika.abc import AbstractChannel

from shared import schedule, topology
from shared.locks import chain_lock
from shared.messages import JobMessage, TriggerSource
from shared.publisher import Publisher
from shared.store import jobs as jobs_store
from shared.store import runs
from shared.store.jobs import JobRow


@dataclass(frozen=True, slots=True)
class Slot:
    scheduled_for: datetime  # the nominal slot: the run's identity
    fire_at: datetime  # slot plus the job's deterministic jitter: when the message should arrive


def next_slot(job: JobRow, after: datetime) -> Slot | None:
    """The job's first slot strictly after `after` (None for a job without a schedule)."""
    plan = job.schedule
    if plan is None:
        return None
    slot = schedule.next_slot(plan, after)
    return Slot(slot, slot + schedule.slot_jitter(job.job_id, slot, job.jitter_sec))


def chain_message(job: JobRow, epoch: int, slot: Slot, now: datetime) -> JobMessage:
    return JobMessage(
        job_id=job.job_id,
        trigger_source=TriggerSource.SCHEDULER,
        scope=job.scope,
        epoch=epoch,
        scheduled_for=slot.scheduled_for,
        run_id=schedule.derive_run_id(job.scope, job.job_id, epoch, slot.scheduled_for, 1),
        published_at=now,
    )


async def extend(
    conn: asyncpg.Connection,
    publisher: Publisher,
    job: JobRow,
    epoch: int,
    after: datetime,
    now: datetime,
    run_id: uuid.UUID | None = None,
) -> Slot | None:
    """Post the slot after `after` if the chain is still at `epoch` and enabled. Returns the slot, or None
    when the chain moved on (stale: someone reseeded, paused or re-timed the job meanwhile)."""
    slot = next_slot(job, after)
    if slot is None:
        return None
    async with conn.transaction():
        await chain_lock(conn, job.scope, job.job_id)
        state = await jobs_store.chain_state(conn, job.scope, job.job_id)
        if state is None or state != (epoch, True):
            return None
        await publisher.to_delay(chain_message(job, epoch, slot, now), slot.fire_at, now)
        await jobs_store.set_next_due(conn, job.scope, job.job_id, slot.fire_at)
        if run_id is not None:
            await runs.set_next_posted(conn, run_id, slot.scheduled_for)
    return slot


async def purge_delay_queue(channel: AbstractChannel, scope: str, job_id: str) -> None:
    queue = await channel.get_queue(topology.delay_queue_name(scope, job_id), ensure=False)
    await queue.purge()


async def replace(
    conn: asyncpg.Connection, channel: AbstractChannel, publisher: Publisher, job: JobRow, now: datetime
) -> tuple[int, Slot | None]:
    """Start the chain afresh: new epoch, empty delay queue, first message (if enabled and scheduled).

    Everything older becomes stale: a message of the old epoch still in flight is dropped where it lands.
    Returns the new epoch and the first slot posted (None when paused or unscheduled).
    """
    async with conn.transaction():
        await chain_lock(conn, job.scope, job.job_id)
        epoch = await jobs_store.bump_epoch(conn, job.scope, job.job_id)
        await purge_delay_queue(channel, job.scope, job.job_id)
        current = await jobs_store.get_job(conn, job.scope, job.job_id)
        slot = next_slot(current, now) if current and current.enabled and current.has_chain else None
        if current is not None and slot is not None:
            await publisher.to_delay(chain_message(current, epoch, slot, now), slot.fire_at, now)
        await jobs_store.set_next_due(conn, job.scope, job.job_id, None if slot is None else slot.fire_at)
    return epoch, slot
