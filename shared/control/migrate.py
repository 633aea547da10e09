"""`migrate-queues`: move the work queues of a scope (and the delay and retry queues feeding them) to another
queue type without losing a chain or running a slot twice.

RabbitMQ cannot change a queue's type in place, so each work queue is moved in four steps:

1. its jobs' rows take the new type, so a worker that consumes again (its consumer is cancelled when the
   queue goes) and a seed declare the new type from now on;
2. under each job's chain lock, the epoch is bumped and the job's delay and retry queues are deleted: the chain
   message waiting there is gone, and any copy still in flight is stale (dropped where it lands; a run in
   progress finishes, but posts no next slot);
3. the work queue's ready messages (run-now, startup, event runs) are taken out, the queue is deleted and
   declared again with the new type, and those messages go back into it;
4. each job's delay queue is declared with the new type (its retry queue comes with its next retry) and, under
   its chain lock again, its chain starts from the record: the first slot after the last slot with a run row
   (the slot whose message was lost in step 2 or 3), so no slot is skipped and none runs twice (a slot with a
   row is never posted again).

Pending retries and buffered slots of chain runs (waiting in a retry queue) end like on any reseed; a job that
is paused keeps no chain. Moving a work queue that is already of the target type does nothing to it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aio_pika
import aiormq
import asyncpg
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection

from shared import chain, topology
from shared.control.errors import InvalidRequest
from shared.locks import chain_lock
from shared.publisher import Publisher
from shared.store import jobs as jobs_store
from shared.store import runs as runs_store
from shared.store.jobs import JobRow

log = structlog.get_logger("shared.control.migrate")
MAX_MOVED = 100_000  # ready messages moved out of one work queue and back (run-now and events: few)


@dataclass(frozen=True, slots=True)
class MovedQueue:
    """One work queue after `migrate-queues`: its type before and after, its jobs and where each chain goes on."""

    queue: str
    before: str
    after: str
    jobs: tuple[str, ...]
    moved_messages: int  # ready messages taken out of the work queue and put back
    next_slots: dict[str, datetime | None]  # job -> first slot posted (None: paused or unscheduled)


async def _is_declared_as(connection: AbstractConnection, spec: topology.QueueSpec) -> bool | None:
    """True when the queue exists with exactly these arguments; False when it exists with others; None when
    it does not exist. Each probe on its own channel: a refusal closes the channel."""
    channel = await connection.channel()
    try:
        try:
            await channel.declare_queue(spec.name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        channel = await connection.channel()
        try:
            await channel.declare_queue(spec.name, durable=spec.durable, arguments=dict(spec.arguments))
        except aiormq.exceptions.ChannelPreconditionFailed:
            return False
        return True
    finally:
        if not channel.is_closed:
            await channel.close()


def resume_after(job: JobRow, last_slot: datetime | None, now: datetime) -> datetime:
    """Where a moved chain goes on from: after the last slot with a run row; a job that never ran, from the slot
    it was waiting for (its next_due_at less its jitter), or from now. Pure."""
    if last_slot is not None:
        return last_slot
    if job.next_due_at is not None:
        return min(now, job.next_due_at - timedelta(seconds=job.jitter_sec) - timedelta(microseconds=1))
    return now


async def _take_ready(channel: AbstractChannel, name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    queue = await channel.get_queue(name, ensure=False)
    taken: list[aio_pika.abc.AbstractIncomingMessage] = []
    while len(taken) < MAX_MOVED:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            break
        taken.append(message)
    return taken


async def migrate_work_queue(
    conn: asyncpg.Connection,
    connection: AbstractConnection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    queue: str,
    jobs: list[JobRow],
    to: topology.QueueType,
) -> MovedQueue:
    """Steps 1-4 of the module docstring for one work queue and its jobs."""
    before = jobs[0].queue_type if jobs else ("quorum" if to == "classic" else "classic")
    ids = [job.job_id for job in jobs]
    await conn.execute(
        "UPDATE scheduler.jobs SET queue_type = $3, updated_at = now() WHERE scope = $1 AND job_id = ANY($2::text[])",
        scope, ids, to,
    )  # fmt: skip
    log.info("migrate.queue_start", scope=scope, queue=queue, before=before, after=to, jobs=ids)
    for job in jobs:
        async with conn.transaction():
            await chain_lock(conn, scope, job.job_id)
            await jobs_store.bump_epoch_row(conn, scope, job.job_id)
            await channel.queue_delete(topology.delay_queue_name(scope, job.job_id))
            await channel.queue_delete(topology.retry_queue_name(scope, job.job_id))
    work = topology.work_queue_name(scope, queue)
    moved: list[aio_pika.abc.AbstractIncomingMessage] = []
    if await _is_declared_as(connection, topology.work_queue_spec(scope, queue, to)) is not True:
        # RabbitMQ 3.10 keeps a channel's view of a queue by name after the queue is deleted: a channel that used
        # the old queue and then publishes to the new one of another type brings the whole connection down
        # (INTERNAL_ERROR). So the old queue is touched on its own channel, and the new one on fresh ones.
        emptying = await connection.channel()
        try:
            if await _is_declared_as(connection, topology.work_queue_spec(scope, queue, "classic")) is not None:
                moved = await _take_ready(emptying, work)
            await emptying.queue_delete(work)
        finally:
            await emptying.close()
    declaring = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        await topology.declare_work_queue(declaring, scope, queue, to)
        for job in jobs:
            await topology.declare_job(declaring, scope, job.job_id, queue, to)
        fresh = Publisher(
            declaring, scope, ttl_ceiling_ms=publisher.ttl_ceiling_ms, scope_queue_type=publisher.scope_queue_type
        )
        for message in moved:
            properties = aiormq.spec.Basic.Properties(
                content_type=message.content_type, delivery_mode=2, headers=dict(message.headers or {}),
                message_id=message.message_id,
            )  # fmt: skip
            await fresh.republish(work, message.body, properties)
        next_slots = await _reseed(conn, declaring, fresh, scope, jobs)
    finally:
        if not declaring.is_closed:
            await declaring.close()
    log.info("migrate.queue_done", scope=scope, queue=queue, after=to, moved=len(moved), next_slots=len(next_slots))
    return MovedQueue(queue, before, to, tuple(ids), len(moved), next_slots)


async def _reseed(
    conn: asyncpg.Connection, channel: AbstractChannel, publisher: Publisher, scope: str, jobs: list[JobRow]
) -> dict[str, datetime | None]:
    next_slots: dict[str, datetime | None] = {}
    for job in jobs:
        now = datetime.now(UTC)
        row = await jobs_store.get_job(conn, scope, job.job_id)
        if row is None:
            continue
        after = resume_after(row, await runs_store.last_chain_slot(conn, scope, job.job_id), now)
        _, slot = await chain.replace_after(conn, channel, publisher, row, now, after)
        next_slots[job.job_id] = None if slot is None else slot.scheduled_for
    return next_slots


async def migrate_queues(
    conn: asyncpg.Connection,
    connection: AbstractConnection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    to: str,
    queue: str | None = None,
) -> list[MovedQueue]:
    """Move every work queue of `scope` (or only `queue`) whose jobs or queues are not of type `to` yet."""
    if to not in ("classic", "quorum"):
        raise InvalidRequest(f"--to {to!r}: use classic or quorum", "to")
    target: topology.QueueType = "quorum" if to == "quorum" else "classic"
    by_queue: dict[str, list[JobRow]] = defaultdict(list)
    for row in await jobs_store.list_jobs(conn, scope):
        by_queue[row.queue].append(row)
    if queue is not None:
        if queue not in by_queue:
            raise InvalidRequest(f"no job of scope {scope!r} uses work queue {queue!r}", "queue")
        by_queue = defaultdict(list, {queue: by_queue[queue]})
    moved = []
    for name, jobs in sorted(by_queue.items()):
        specs = [topology.work_queue_spec(scope, name, target)]
        specs += [topology.delay_queue_spec(scope, job.job_id, name, target) for job in jobs]
        retries = [topology.retry_queue_spec(scope, job.job_id, name, target) for job in jobs]
        in_place = all(job.queue_type == target for job in jobs)
        present = [await _is_declared_as(connection, spec) for spec in specs]
        retry_ok = [await _is_declared_as(connection, spec) is not False for spec in retries]  # absent is fine
        if in_place and all(present) and all(retry_ok):
            continue
        moved.append(await migrate_work_queue(conn, connection, channel, publisher, scope, name, jobs, target))
    return moved
