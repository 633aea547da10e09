"""A job's chain: the one live message that carries it to its next slot.

Every path that extends the chain (a worker posting the next slot) or replaces it (seed, resume, set, the
watchdog's reseed) holds the job's chain lock, re-reads the epoch under it, and publishes with confirms before
letting go. So a delay queue never holds two live messages: per-message TTL only expires at the head of a
queue, and a second message would wait behind the first. Replacing holds it for a transaction; extending, the
hot path, holds it on the session for two round trips (take + read, then record + release).
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg
from aio_pika.abc import AbstractChannel

from shared import connection_watch, schedule, topology
from shared.dependencies import SESSION_LOST
from shared.locks import chain_lock, chain_lock_key, enter_chain, unlock
from shared.messages import JobMessage, chain_message
from shared.publisher import Publisher
from shared.store import jobs as jobs_store
from shared.store import runs
from shared.store.jobs import JobRow
from shared.store.pool import spoil
from shared.store.runs_batch import PostedSlot

if TYPE_CHECKING:
    from shared.lead_batch import Hold


@dataclass(frozen=True, slots=True)
class Slot:
    scheduled_for: datetime  # the nominal slot: the run's identity
    fire_at: datetime  # slot plus the job's deterministic jitter: when the message should arrive


@dataclass(frozen=True, slots=True)
class Posted:
    """What `extend` did: the slot it posted, and when the run that posted it started (if it started it)."""

    slot: Slot
    run_started_at: datetime | None


def next_slot(job: JobRow, after: datetime) -> Slot | None:
    """The job's first slot strictly after `after` (None for a job without a schedule)."""
    plan = job.schedule
    if plan is None:
        return None
    slot = schedule.next_slot(plan, after)
    return Slot(slot, slot + schedule.slot_jitter(job.job_id, slot, job.jitter_sec))


def slot_message(job: JobRow, epoch: int, slot: Slot, now: datetime) -> JobMessage:
    return chain_message(job.scope, job.job_id, epoch, slot.scheduled_for, now)


async def extend(
    conn: asyncpg.Connection,
    publisher: Publisher,
    job: JobRow,
    epoch: int,
    after: datetime,
    now: datetime,
    run_id: uuid.UUID | None = None,
    start_worker: str | None = None,
    fire_at: datetime | None = None,
    run_slot: datetime | None = None,
    entered: tuple[int, bool] | None = None,
) -> Posted | None:
    """Post the slot after `after` if the chain is still at `epoch` and enabled. Returns what was posted, or
    None when the chain moved on (stale: someone reseeded, paused or re-timed the job meanwhile). With `run_id`
    the run that posted it is recorded as having done so; with `start_worker` too, that run is also marked
    running in the same statement, its lateness counted from `fire_at`. `run_slot` is that run's scheduled_for
    (its partition key), if known. `entered`: the chain lock is held already on this session, and this is the
    (epoch, enabled) read under it (`runs.claim_and_enter_chain`); extending gives it back either way."""
    slot = next_slot(job, after)
    key = chain_lock_key(job.scope, job.job_id)
    if slot is None:
        if entered is not None:
            await unlock(conn, key)
        return None
    released = False
    try:
        if entered is None:
            entered = await enter_chain(conn, job.scope, job.job_id)
        if entered != (epoch, True):
            return None
        await publisher.to_delay(slot_message(job, epoch, slot, now), slot.fire_at, now)
        started = await runs.record_posted(
            conn, job.scope, job.job_id, slot.fire_at, run_id, slot.scheduled_for, key, start_worker, fire_at,
            run_slot,
        )  # fmt: skip
        released = True
    finally:
        if not released:
            spoil(conn)  # until the unlock below is known to have worked, the pool resets the connection in full
            # a connection that is gone took the lock with it
            with contextlib.suppress(*SESSION_LOST):
                await unlock(conn, key)
    return Posted(slot, started)


async def extend_held(
    hold: Hold,
    publisher: Publisher,
    job: JobRow,
    epoch: int,
    after: datetime,
    now: datetime,
    run_id: uuid.UUID,
    run_slot: datetime,
    entered: tuple[int, bool] | None,
) -> Posted | None:
    """`extend` for a slot claimed in a batch (shared.lead_batch): the chain lock is held on the batch's session
    (`hold`), `entered` is the (epoch, enabled) read under it. The post is recorded, and the lock given back, in
    the batch's record statement; a chain that moved on, or a post that failed, only gives the lock back."""
    slot = next_slot(job, after)
    recorded = False
    try:
        if slot is None or entered != (epoch, True):
            return None
        await publisher.to_delay(slot_message(job, epoch, slot, now), slot.fire_at, now)
        recorded = True  # from here the lock goes back with the record, whether that statement works or not
        await hold.record(
            PostedSlot(hold.key, job.job_id, slot.fire_at, run_id, slot.scheduled_for, run_slot),
        )
    finally:
        if not recorded:
            await hold.give_back()
    return Posted(slot, None)


async def rearm(conn: asyncpg.Connection, publisher: Publisher, scope: str, msg: JobMessage, now: datetime) -> bool:
    """Post a re-arm hop again (`decisions.rearm`), under the chain lock, if its chain is still at the message's
    epoch and enabled: the delay queue then holds this one message, as with `extend`. False when it is stale."""
    assert msg.rearm_at is not None
    key = chain_lock_key(scope, msg.job_id)
    done = False
    try:
        posted = False
        if await enter_chain(conn, scope, msg.job_id) == (msg.epoch, True):
            await publisher.to_delay(msg.model_copy(update={"published_at": now}), msg.rearm_at, now)
            posted = True
        done = True
    finally:
        if not done:
            spoil(conn)
        with contextlib.suppress(*SESSION_LOST):
            await unlock(conn, key)
    return posted


async def purge_delay_queue(channel: AbstractChannel, scope: str, job_id: str) -> None:
    """Empty the job's delay queue. Called under the chain lock, so bounded (shared.connection_watch): a purge a
    quorum queue never answers would otherwise hold the lock, and every worker's claims of the job, for 30 s."""
    name = topology.delay_queue_name(scope, job_id)
    queue = await channel.get_queue(name, ensure=False)
    await connection_watch.bounded(channel, f"queue.purge {name}", queue.purge)


async def replace(
    conn: asyncpg.Connection, channel: AbstractChannel, publisher: Publisher, job: JobRow, now: datetime
) -> tuple[int, Slot | None]:
    """Start the chain afresh: new epoch, empty delay queue, first message (if enabled and scheduled).

    Everything older becomes stale: a message of the old epoch still in flight is dropped where it lands.
    Returns the new epoch and the first slot posted (None when paused or unscheduled).
    """
    replaced = await _replace(conn, channel, publisher, job, now, None)
    assert replaced is not None  # unconditional
    return replaced


async def replace_after(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    job: JobRow,
    now: datetime,
    after: datetime,
) -> tuple[int, Slot | None]:
    """`replace`, starting from the first slot after `after` instead of after now (a past slot is posted due at
    once): a chain whose waiting message was taken away goes on where its record says it was."""
    replaced = await _replace(conn, channel, publisher, job, now, None, after)
    assert replaced is not None  # unconditional
    return replaced


async def replace_if_overdue(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    job: JobRow,
    now: datetime,
    overdue_before: datetime,
) -> tuple[int, Slot | None] | None:
    """`replace`, only if the chain is still lost: the job's next_due_at, as committed when the row is updated
    (after any extension that held the chain lock a moment ago), is before `overdue_before`, or is unset on a row
    last written before it.
    None when the chain moved on meanwhile: reseeding it then would put a second message for a slot the
    live chain is already carrying, and the copy that lost would end the chain."""
    return await _replace(conn, channel, publisher, job, now, overdue_before)


async def _replace(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    job: JobRow,
    now: datetime,
    overdue_before: datetime | None,
    after: datetime | None = None,
) -> tuple[int, Slot | None] | None:
    async with conn.transaction():
        await chain_lock(conn, job.scope, job.job_id)
        current = await jobs_store.bump_epoch_row(conn, job.scope, job.job_id, overdue_before)
        if current is None:
            return None
        epoch = current.epoch
        await purge_delay_queue(channel, job.scope, job.job_id)
        slot = next_slot(current, now if after is None else after) if current.enabled and current.has_chain else None
        if slot is not None:
            await publisher.to_delay(slot_message(current, epoch, slot, now), slot.fire_at, now)
        await jobs_store.set_next_due(conn, job.scope, job.job_id, None if slot is None else slot.fire_at)
    return epoch, slot
