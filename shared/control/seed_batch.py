"""Seeding a jobs file in batches: what `jobs.seed_planned` does for one job, done for a batch of jobs with a
fixed number of round trips, so 10,000 jobs seed in seconds rather than minutes.

Per batch: the definitions upserted in one pipeline and read back in one statement; the scope's exchanges declared
once and every job's queues declared over a few channels at once (a channel answers one declaration at a time);
then, in one transaction under the chain locks of the jobs whose chain starts afresh (taken in key order), the
epochs bumped in one statement, their delay queues purged, every first message published with the confirms awaited
together, and next_due_at written in one pipeline. Same outcome per job as `seed_planned`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractConnection

from shared import chain, topology
from shared.control import drift
from shared.control.results import ChainAction, JobChange
from shared.locks import chain_lock_key
from shared.publisher import Publisher
from shared.store import jobs as jobs_store
from shared.store import jobs_batch
from shared.store.jobs import JobRow

if TYPE_CHECKING:
    from shared.control.jobs import PlannedSeed

BATCH = 500
"""Jobs per batch: each batch starts its chains from its own `now` (a long file's last jobs must not get a first
slot already past), and holds their chain locks for one transaction."""
CHANNELS = 16
"""Declaration channels used at once."""


async def seed_batch(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    plans: Sequence[PlannedSeed],
) -> tuple[list[tuple[JobChange, ChainAction]], datetime]:
    """`seed_planned` for every plan; returns the outcome of each (in order) and the `now` the chains started
    from."""
    ids = [p.definition.job_id for p in plans]
    await jobs_batch.upsert_jobs(conn, scope, [p.target for p in plans])
    rows = await jobs_batch.get_jobs(conn, scope, ids)
    seeded = [(p.definition.job_id, jobs_store.declared(p.definition)) for p in plans]
    await jobs_batch.set_seeded_definitions(conn, scope, seeded)
    for job_id in ids:
        row = rows[job_id]
        if row.enabled and row.pause_note is not None:  # enabled again (reset): the pause note goes
            await jobs_store.set_enabled(conn, scope, job_id, True, None)
    await declare_all(channel, scope, [rows[i] for i in ids])
    fresh = [p.definition.job_id for p in plans if _chain_starts(p)]
    now = datetime.now(UTC)
    started = await replace_all(conn, channel, publisher, scope, fresh, now)
    results = []
    for plan in plans:
        job_id = plan.definition.job_id
        row = rows[job_id]
        changed = plan.row is None or row.updated_at != plan.row.updated_at
        if job_id in started:
            epoch, slot = started[job_id]
            change = JobChange(job_id, changed, epoch, None if slot is None else slot.scheduled_for)
            results.append((change, ChainAction.STARTED))
        else:
            upcoming = row.next_due_at if row.enabled and row.has_chain else None
            results.append((JobChange(job_id, changed, row.epoch, upcoming), ChainAction.KEPT))
    return results, now


def _chain_starts(plan: PlannedSeed) -> bool:
    if plan.row is None:
        return True
    return drift.chain_affected(jobs_store.declared(plan.row.definition()), jobs_store.declared(plan.target))


async def declare_all(channel: AbstractChannel, scope: str, rows: Sequence[JobRow]) -> None:
    """The scope's exchanges once, then each job's queues (`topology.declare_job`) over `CHANNELS` channels."""
    await topology.declare_scope(channel, scope)
    await _spread(channel, [_declarer(row) for row in rows])


def _declarer(row: JobRow) -> Callable[[AbstractChannel], Awaitable[None]]:
    async def declare(ch: AbstractChannel) -> None:
        await topology.declare_job(ch, row.scope, row.job_id, row.queue, row.queue_type)  # type: ignore[arg-type]

    return declare


def _purger(scope: str, job_id: str) -> Callable[[AbstractChannel], Awaitable[None]]:
    async def purge(ch: AbstractChannel) -> None:
        await chain.purge_delay_queue(ch, scope, job_id)

    return purge


async def replace_all(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    job_ids: Sequence[str],
    now: datetime,
) -> dict[str, tuple[int, chain.Slot | None]]:
    """`chain.replace` for each job, in one transaction: new epoch, empty delay queue, first message (if enabled
    and scheduled). Returns each job's new epoch and first slot."""
    if not job_ids:
        return {}
    async with conn.transaction():
        await jobs_batch.chain_locks(conn, [chain_lock_key(scope, j) for j in job_ids])
        rows = await jobs_batch.bump_epochs(conn, scope, job_ids)
        await _spread(channel, [_purger(scope, j) for j in job_ids])
        slots = {j: chain.next_slot(row, now) if row.enabled and row.has_chain else None for j, row in rows.items()}
        await asyncio.gather(
            *(
                publisher.to_delay(chain.slot_message(rows[j], rows[j].epoch, slot, now), slot.fire_at, now)
                for j, slot in slots.items()
                if slot is not None
            )
        )
        due = [(j, None if slot is None else slot.fire_at) for j, slot in slots.items()]
        await jobs_batch.set_next_dues(conn, scope, due)
    return {j: (rows[j].epoch, slots[j]) for j in job_ids}


async def _spread(channel: AbstractChannel, calls: Sequence[Callable[[AbstractChannel], Awaitable[None]]]) -> None:
    """Run `calls` over up to `CHANNELS` channels of `channel`'s connection, each channel one call at a time."""
    if len(calls) <= 1:
        for call in calls:
            await call(channel)
        return
    connection: AbstractConnection = channel._connection  # type: ignore[attr-defined]
    todo = list(reversed(calls))

    async def lane() -> None:
        lane_channel = await connection.channel(publisher_confirms=False)
        try:
            while todo:
                await todo.pop()(lane_channel)
        finally:
            await lane_channel.close()

    await asyncio.gather(*(lane() for _ in range(min(CHANNELS, len(calls)))))
