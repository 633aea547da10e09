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
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Protocol

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractConnection

from shared import chain, lanes, ledger, topology
from shared.control import drift
from shared.control.results import ChainAction, JobChange
from shared.definitions import JobDefinition
from shared.locks import chain_lock_key
from shared.publisher import Publisher
from shared.store import jobs as jobs_store
from shared.store import jobs_batch
from shared.store.jobs import JobRow


class PlannedSeed(Protocol):
    """What `jobs.PlannedSeed` holds that a batch reads: the file's definition, the live row (None for a new job)
    and the definition to store."""

    @property
    def definition(self) -> JobDefinition: ...

    @property
    def row(self) -> JobRow | None: ...

    @property
    def target(self) -> JobDefinition: ...


BATCH = 500
"""Jobs per batch: each batch starts its chains from its own `now` (a long file's last jobs must not get a first
slot already past), and holds their chain locks for one transaction."""
"""Declaration channels used at once."""


async def seed_batch(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    plans: Sequence[PlannedSeed],
    connection: AbstractConnection | None = None,
) -> tuple[list[tuple[JobChange, ChainAction]], datetime]:
    """`seed_planned` for every plan; returns the outcome of each (in order) and the `now` the chains started
    from. `connection` (the one `channel` is of) carries the declarations and purges over several channels."""
    ids = [p.definition.job_id for p in plans]
    await jobs_batch.upsert_jobs(conn, scope, [p.target for p in plans])
    rows = await jobs_batch.get_jobs(conn, scope, ids)
    seeded = [(p.definition.job_id, jobs_store.declared(p.definition)) for p in plans]
    await jobs_batch.set_seeded_definitions(conn, scope, seeded)
    for job_id in ids:
        row = rows[job_id]
        if row.enabled and row.pause_note is not None:  # enabled again (reset): the pause note goes
            await jobs_store.set_enabled(conn, scope, job_id, True, None)
    known = {p.definition.job_id for p in plans if _queues_kept(p.row, rows[p.definition.job_id])}
    waiting = await declare_all(channel, scope, [rows[i] for i in ids], publisher.scope_queue_type, known, connection)
    fresh = [p.definition.job_id for p in plans if _chain_starts(p)]
    # a job that had no row has no chain: its delay queue needs a purge only if something waits there (left over)
    empty = {p.definition.job_id for p in plans if p.row is None and not waiting.get(p.definition.job_id)}
    now = datetime.now(UTC)
    started = await replace_all(conn, channel, publisher, scope, fresh, now, skip_purge=empty, connection=connection)
    for plan in plans:  # the slot ledger, as seed_planned records it (nothing to do for a new job)
        job_id = plan.definition.job_id
        if job_id in started and plan.row is not None:
            await ledger.replaced(conn, publisher, plan.row, rows[job_id].enabled, started[job_id][0], now, worker=None)
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


def _queues_kept(before: JobRow | None, after: JobRow) -> bool:
    """A job seeded before on the same work queue with the same queue type: its delay queue, if it still exists, is
    the one this seed would declare."""
    return before is not None and (before.queue, before.queue_type) == (after.queue, after.queue_type)


def _chain_starts(plan: PlannedSeed) -> bool:
    if plan.row is None:
        return True
    return drift.chain_affected(jobs_store.declared(plan.row.definition()), jobs_store.declared(plan.target))


async def declare_all(
    channel: AbstractChannel,
    scope: str,
    rows: Sequence[JobRow],
    scope_type: topology.QueueType,
    known: Collection[str] = (),
    connection: AbstractConnection | None = None,
) -> dict[str, int]:
    """`topology.declare_job` for every row: the scope's exchanges (of `scope_type`) and each work queue once, then
    each job's delay queue over several channels of `connection` (`shared.lanes`). The jobs of `known` (seeded
    before on the same queue, same type) only have their delay queue looked for, and declared if it is gone.
    Returns how many messages wait in each declared delay queue."""
    await topology.declare_scope(channel, scope, scope_type)
    for queue, queue_type in sorted({(r.queue, r.queue_type) for r in rows}):
        await topology.declare_work_queue(channel, scope, queue, queue_type)  # type: ignore[arg-type]
    checked = [r for r in rows if r.job_id in known]
    absent = await lanes.missing(channel, [topology.delay_queue_name(scope, r.job_id) for r in checked])
    present = {r.job_id for r in checked if topology.delay_queue_name(scope, r.job_id) not in absent}
    waiting: dict[str, int] = {}
    await lanes.spread(channel, [_declarer(row, waiting) for row in rows if row.job_id not in present], connection)
    return waiting


def _declarer(row: JobRow, waiting: dict[str, int]) -> Callable[[AbstractChannel], Awaitable[None]]:
    async def declare(ch: AbstractChannel) -> None:
        queue_type = row.queue_type
        waiting[row.job_id] = await topology.declare_chain_queues(ch, row.scope, row.job_id, row.queue, queue_type)  # type: ignore[arg-type]

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
    skip_purge: Collection[str] = (),
    connection: AbstractConnection | None = None,
) -> dict[str, tuple[int, chain.Slot | None]]:
    """`chain.replace` for each job, in one transaction: new epoch, empty delay queue (but for the jobs of
    `skip_purge`, known to be empty), first message (if enabled and scheduled). Returns each job's new epoch
    and first slot."""
    if not job_ids:
        return {}
    async with conn.transaction():
        await jobs_batch.chain_locks(conn, [chain_lock_key(scope, j) for j in job_ids])
        rows = await jobs_batch.bump_epochs(conn, scope, job_ids)
        await lanes.spread(channel, [_purger(scope, j) for j in job_ids if j not in skip_purge], connection)
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
