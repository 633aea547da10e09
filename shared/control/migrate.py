"""`migrate-queues`: move the work queues of a scope (and the delay and retry queues feeding them) to another
queue type without losing a chain, a waiting message or running a slot twice, even when the move is interrupted.

RabbitMQ cannot change a queue's type in place, so each work queue is moved in five steps, between the
declaration of its holding queue (``S.jobs.<queue>.migrating``, classic and durable) and its deletion:

1. its jobs' rows take the new type, so a worker that consumes again (its consumer is cancelled when the
   queue goes) and a seed declare the new type from now on;
2. under each job's chain lock, the epoch is bumped and the job's delay and retry queues are deleted: the chain
   message waiting there is gone, and any copy still in flight is stale (dropped where it lands; a run in
   progress finishes, but posts no next slot);
3. the work queue's ready messages (run-now, startup, event runs) move to the holding queue, and the emptied
   work queue is deleted;
4. the work queue is declared with the new type and the holding queue's messages move into it;
5. each job's delay queue is declared with the new type (its retry queue comes with its next retry) and, under
   its chain lock again, its chain starts from the record: the first slot after the last slot with a run row
   (the slot whose message was lost in step 2), so no slot is skipped and none runs twice (a slot with a row is
   never posted again). Then the holding queue, empty, is deleted.

A message moves from one queue to the other as a copy published with publisher confirms; the original is
acknowledged only once the broker confirmed its copy, a bounded batch at a time (nothing is held in this
process beyond a batch). Killed at any point, the move leaves every message in the old work queue, the holding
queue or the new one; running `migrate-queues` again finds the holding queue and does the steps again, each
finding itself done or finishing what was left. A process that dies between a batch's confirms and its
acknowledgement leaves that batch in both queues: the copies carry the same run ids, and a worker drops the
second of two messages with one run id (a chain slot, a run-now, a startup or an event run) as a duplicate. A
body published by hand without a run id gets a new one from each worker that reads it: such a message caught
in that moment runs twice.

Pending retries and buffered slots of chain runs (waiting in a retry queue) end like on any reseed; a job that
is paused keeps no chain. Moving a work queue that is already of the target type does nothing to it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aio_pika
import aiormq
import asyncpg
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection

from shared import chain, topology
from shared.control.errors import ActionFailed, InvalidRequest, MoveUnderWay
from shared.dependencies import DB_ERRORS
from shared.locks import chain_lock, migrate_lock_key
from shared.publisher import Publisher
from shared.store import jobs as jobs_store
from shared.store import runs as runs_store
from shared.store.jobs import JobRow

log = structlog.get_logger("shared.control.migrate")
MOVE_BATCH = 100  # messages taken, copied (confirms awaited together) and acknowledged at a time
EMPTYING_ROUNDS = 10  # moves of a work queue that keeps receiving messages before the move gives up (and resumes later)


@dataclass(frozen=True, slots=True)
class MovedQueue:
    """One work queue after `migrate-queues`: its type before and after, its jobs and where each chain goes on."""

    queue: str
    before: str
    after: str
    jobs: tuple[str, ...]
    moved_messages: int  # ready messages that went through the holding queue into the work queue
    next_slots: dict[str, datetime | None]  # job -> first slot posted (None: paused or unscheduled)
    resumed: bool = False  # the holding queue of an interrupted move was there: this run finished that move


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


def copy_properties(message: aio_pika.abc.AbstractIncomingMessage) -> aiormq.spec.Basic.Properties:
    """What a moved message keeps: its headers (x-death of a dead-lettered slot included), id and content type;
    persistent whatever it was. Not the count of deliveries a quorum queue stamps on what it gives out: the copy
    is a new message in another queue, never delivered yet."""
    headers = {k: v for k, v in (message.headers or {}).items() if k != "x-delivery-count"}
    return aiormq.spec.Basic.Properties(
        content_type=message.content_type, delivery_mode=2, headers=headers, message_id=message.message_id
    )


async def _acknowledge(batch: list[aio_pika.abc.AbstractIncomingMessage]) -> None:
    """The originals of a batch whose copies the broker confirmed (one frame: deliveries of a channel are
    acknowledged up to the last one)."""
    await batch[-1].ack(multiple=True)


async def move_messages(connection: AbstractConnection, scope: str, source: str, target: str) -> int:
    """Move every ready message of the queue `source` into the queue `target` of `scope` (bound to ``S.jobs``
    under its own name), `MOVE_BATCH` at a time: a batch is taken unacknowledged, its copies published with
    publisher confirms, and the originals acknowledged only then. Interrupted, a batch stays in `source` (the
    broker requeues what its channel had not acknowledged) and may also be in `target`. Returns how many moved.

    The source is read on a channel of its own, closed after: RabbitMQ 3.10 keeps a channel's view of a queue by
    name after the queue is deleted, and a channel that used the old queue and then publishes to the new one of
    another type brings the whole connection down (INTERNAL_ERROR)."""
    taking = await connection.channel(publisher_confirms=False)
    putting = await connection.channel(publisher_confirms=True, on_return_raises=True)
    copies = Publisher(putting, scope)
    moved = 0
    try:
        queue = await taking.get_queue(source, ensure=False)
        while True:
            batch: list[aio_pika.abc.AbstractIncomingMessage] = []
            while len(batch) < MOVE_BATCH:
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                batch.append(message)
            if not batch:
                return moved
            await asyncio.gather(*(copies.republish(target, m.body, copy_properties(m)) for m in batch))
            await _acknowledge(batch)
            moved += len(batch)
    finally:
        for channel in (taking, putting):
            if not channel.is_closed:
                await channel.close()


async def _queue_type(connection: AbstractConnection, scope: str, queue: str) -> topology.QueueType | None:
    """The type of the work queue `queue` as it exists now; None when it does not exist."""
    classic = await _is_declared_as(connection, topology.work_queue_spec(scope, queue, "classic"))
    if classic is None:
        return None
    return "classic" if classic else "quorum"


async def empty_into_holding(connection: AbstractConnection, scope: str, queue: str) -> int:
    """Step 3: the work queue's ready messages into its holding queue, then the work queue deleted, but only
    empty: a message published meanwhile (a run-now) is moved too. Returns how many messages moved."""
    work, holding = topology.work_queue_name(scope, queue), topology.holding_queue_name(scope, queue)
    moved = 0
    for _ in range(EMPTYING_ROUNDS):
        kind = await _queue_type(connection, scope, queue)
        if kind is None:
            return moved
        moved += await move_messages(connection, scope, work, holding)
        if await _delete_if_empty(connection, work, kind):
            return moved
    raise ActionFailed(
        f"work queue {work!r} kept receiving messages while it was emptied ({moved} moved to {holding!r}, kept "
        "there): run migrate-queues again to finish the move"
    )


async def _delete_if_empty(connection: AbstractConnection, name: str, kind: topology.QueueType) -> bool:
    """Delete the queue `name` if no message is ready in it; False when one is. A classic queue is asked to
    (if-empty); a quorum queue refuses that flag (NOT_IMPLEMENTED, which closes the connection), so it is
    counted first and deleted at once after: a message published in that round trip is the one it could lose."""
    channel = await connection.channel()
    try:
        if kind == "quorum":
            declared = await channel.declare_queue(name, passive=True)
            if declared.declaration_result.message_count:
                return False
            deleted = await channel.queue_delete(name)
            if deleted.message_count:
                log.error("migrate.messages_dropped", queue=name, messages=deleted.message_count)
            return True
        try:
            await channel.queue_delete(name, if_empty=True)
        except aiormq.exceptions.ChannelPreconditionFailed:
            return False
        return True
    finally:
        if not channel.is_closed:
            await channel.close()


async def fill_from_holding(connection: AbstractConnection, scope: str, queue: str) -> int:
    """Step 4 after the work queue is declared with its new type: the holding queue's messages into it. Returns
    how many moved. The holding queue stays until the chains started again (`_release_holding`)."""
    holding = topology.holding_queue_name(scope, queue)
    return await move_messages(connection, scope, holding, topology.work_queue_name(scope, queue))


async def _release_holding(connection: AbstractConnection, scope: str, queue: str) -> int:
    """The move is done: the holding queue goes, empty (what reached it meanwhile, only a concurrent move of the
    same queue can publish there, is moved to the work queue first). Returns how many of those moved."""
    moved = 0
    for _ in range(EMPTYING_ROUNDS):
        if await _delete_if_empty(connection, topology.holding_queue_name(scope, queue), "classic"):
            return moved
        moved += await fill_from_holding(connection, scope, queue)
    raise ActionFailed(
        f"holding queue {topology.holding_queue_name(scope, queue)!r} kept receiving messages: run migrate-queues again"
    )


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
    """Steps 1-5 of the module docstring for one work queue and its jobs; each step may find itself done
    already (a move run again after an interruption)."""
    found = await _queue_type(connection, scope, queue)
    resumed = await _is_declared_as(connection, topology.holding_queue_spec(scope, queue)) is not None
    # Declared first and deleted last: while it exists, the move is under way or was interrupted, and the next run
    # of migrate-queues moves this work queue again whatever else it finds done already.
    holding = await connection.channel()
    try:
        await topology.declare_holding_queue(holding, scope, queue)
    finally:
        await holding.close()
    before = found or (jobs[0].queue_type if jobs else ("quorum" if to == "classic" else "classic"))
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
    held = 0
    if found not in (None, to):
        held = await empty_into_holding(connection, scope, queue)
    declaring = await connection.channel(publisher_confirms=True, on_return_raises=True)
    try:
        await topology.declare_work_queue(declaring, scope, queue, to)
        moved = await fill_from_holding(connection, scope, queue)
        fresh = Publisher(
            declaring, scope, ttl_ceiling_ms=publisher.ttl_ceiling_ms, scope_queue_type=publisher.scope_queue_type
        )
        next_slots = await _reseed(conn, declaring, fresh, scope, queue, jobs, to)
    finally:
        if not declaring.is_closed:
            await declaring.close()
    moved += await _release_holding(connection, scope, queue)
    log.info(
        "migrate.queue_done", scope=scope, queue=queue, after=to, held=held, moved=moved, next_slots=len(next_slots)
    )
    return MovedQueue(queue, before, to, tuple(ids), moved, next_slots, resumed)


async def _reseed(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    queue: str,
    jobs: list[JobRow],
    to: topology.QueueType,
) -> dict[str, datetime | None]:
    """Step 5: each job's delay queue, then its chain from the record."""
    next_slots: dict[str, datetime | None] = {}
    for job in jobs:
        await topology.declare_chain_queues(channel, scope, job.job_id, queue, to)
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
    """Move every work queue of `scope` (or only `queue`) whose jobs or queues are not of type `to` yet, or whose
    holding queue is still there (an earlier move was interrupted). One move of a scope at a time: a second one
    finds the scope's move lock held and raises `MoveUnderWay`, having touched nothing."""
    if to not in ("classic", "quorum"):
        raise InvalidRequest(f"--to {to!r}: use classic or quorum", "to")
    target: topology.QueueType = "quorum" if to == "quorum" else "classic"
    key = migrate_lock_key(scope)
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
        raise MoveUnderWay(scope, await _lock_holder(conn, key))
    try:
        return await _migrate_queues(conn, connection, channel, publisher, scope, target, queue)
    finally:
        with contextlib.suppress(*DB_ERRORS):  # a connection lost took the lock with it
            await conn.execute("SELECT pg_advisory_unlock($1)", key)


async def _lock_holder(conn: asyncpg.Connection, key: int) -> str | None:
    """Who holds the session lock `key`: the PostgreSQL session, its application name and since when."""
    row = await conn.fetchrow(
        "SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = (($1::bigint >> 32) & 4294967295)::oid"
        " AND l.objid = ($1::bigint & 4294967295)::oid LIMIT 1",
        key,
    )
    if row is None:
        return None
    name = f" of {row['application_name']!r}" if row["application_name"] else ""
    return f"PostgreSQL session {row['pid']}{name}, connected since {row['backend_start']:%Y-%m-%d %H:%M:%S %Z}"


async def _migrate_queues(
    conn: asyncpg.Connection,
    connection: AbstractConnection,
    channel: AbstractChannel,
    publisher: Publisher,
    scope: str,
    target: topology.QueueType,
    queue: str | None,
) -> list[MovedQueue]:
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
        holding = await _is_declared_as(connection, topology.holding_queue_spec(scope, name))
        if in_place and all(present) and all(retry_ok) and holding is None:
            continue
        moved.append(await migrate_work_queue(conn, connection, channel, publisher, scope, name, jobs, target))
    return moved
