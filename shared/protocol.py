"""The run protocol (DESIGN section 6): what a worker does with one message, one named step per function.

    1 parse_or_park   2 lookup_job   3 handle_misfire   4 take_lock   5 claim_slot
    6 post_next       7 ack          8 execution.run_and_record       9 execution.retry_if_due
    10 release + execution.trigger_downstream

`handle_delivery` strings them together and is the only entry point. It never raises: the consumer never
dies on input, and a dependency that is down makes the message come back later, never vanish.

A chain message whose job row this worker read before (same epoch) skips the read of step 2: the row is
confirmed by the lock statement of step 4, which reads the row's version in the same round trip. Nothing is
written, published, parked or acked on a row before it is confirmed; a row that changed meanwhile is read
again and the message goes through every step on the fresh row.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aio_pika
import aiormq
import asyncpg
import structlog

from shared import chain, execution, schedule
from shared.locks import run_lock_keys, unlock, wait_for_chain
from shared.messages import BadMessage, JobMessage, parse_message
from shared.metrics import Metrics
from shared.publisher import Publisher
from shared.registry import Handler, Registry
from shared.store import jobs as jobs_store
from shared.store import runs
from shared.store.jobs import JobCache, JobRow
from shared.store.pool import left_tidy, spoil
from shared.store.runs import NewRun, RunRow
from shared.vocabulary import RunStatus, TriggerSource

log = structlog.get_logger("shared.protocol")

DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # a pooled connection whose session the server just ended (restart, pg_terminate_backend), handed out
    # before asyncpg saw the socket close: "cannot switch to state ...; another operation is in progress"
    asyncpg.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)
AMQP_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aio_pika.exceptions.AMQPException,
    # a publish on a robust channel that is closed until it reconnects (a RuntimeError, not an AMQPError)
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Env:
    """Everything the protocol touches, passed in (no globals): one per worker process."""

    scope: str
    worker_id: str
    pool: asyncpg.Pool
    publisher: Publisher
    registry: Registry
    metrics: Metrics
    executor: ThreadPoolExecutor
    clock: Callable[[], datetime] = utcnow
    rng: Callable[[], float] = random.random
    inflight: set[uuid.UUID] = field(default_factory=set)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    dependency_backoff_sec: float = 1.0
    jobs: JobCache = field(default_factory=JobCache)
    _series: dict[tuple[int, tuple[str, ...]], Any] = field(default_factory=dict)

    def series(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once per label set: the per-run metrics cost a dict lookup."""
        key = (id(metric), labels)
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = metric.labels(*labels)
        return child


class Delivery:
    """One consumed message and whether it has been settled (acked or nacked) yet."""

    def __init__(self, message: aio_pika.abc.AbstractIncomingMessage, queue: str) -> None:
        self.message = message
        self.queue = queue  # the work queue short name it was consumed from
        self.settled = False

    async def ack(self) -> None:
        if not self.settled:
            self.settled = True
            await self.message.ack()

    async def nack_requeue(self) -> None:
        if not self.settled:
            self.settled = True
            with contextlib.suppress(*AMQP_ERRORS, RuntimeError):
                await self.message.nack(requeue=True)


class Verdict(StrEnum):
    RUN = "run"
    SKIPPED = "skipped"  # every lock slot taken, overlap=skip: recorded, chain goes on
    BUFFERED = "buffered"  # every lock slot taken, overlap=buffer_one: waits in the retry queue
    DROP = "drop"  # duplicate or redelivery: nothing to run


@dataclass(frozen=True, slots=True)
class Claim:
    verdict: Verdict
    run: NewRun
    reason: str = ""
    existing: RunRow | None = None


# -- 1. parse ---------------------------------------------------------------------------------------------------


async def parse_or_park(env: Env, delivery: Delivery) -> JobMessage | None:
    """A body that is not a valid job message goes to parking with the reason; the consumer goes on."""
    try:
        message, unknown = parse_message(delivery.message.body)
    except BadMessage as exc:
        await park(env, delivery, exc.reason, exc.detail)
        return None
    if message.scope is not None and message.scope != env.scope:
        await park(env, delivery, "wrong_scope", f"message scope {message.scope!r}, worker scope {env.scope!r}")
        return None
    if unknown:
        log.debug("message.unknown_fields_ignored", job_id=message.job_id, fields=unknown[:20])
    return message


async def park(env: Env, delivery: Delivery, reason: str, detail: str) -> None:
    headers = dict(delivery.message.headers or {})
    await env.publisher.park(delivery.message.body, reason, detail, delivery.queue, headers)
    env.metrics.parked.labels(env.scope, reason).inc()
    log.warning("message.parked", reason=reason, detail=detail[:300], queue=delivery.queue)
    await delivery.ack()


async def drop(env: Env, delivery: Delivery, reason: str, **kw: Any) -> None:
    env.metrics.dropped.labels(env.scope, reason).inc()
    log.info("message.dropped", reason=reason, **kw)
    await delivery.ack()


# -- 2. look up ------------------------------------------------------------------------------------------------


async def lookup_job(env: Env, conn: asyncpg.Connection, delivery: Delivery, msg: JobMessage) -> JobRow | None:
    """The job row, or None after parking (unknown job, wrong queue) or dropping (disabled, stale, expired)."""
    job = await jobs_store.get_job(conn, env.scope, msg.job_id)
    if job is not None and msg.epoch is not None and msg.epoch > job.epoch:
        # An epoch the row has not reached: the reseed that posted this message has not committed yet (a short
        # delay expires before it does). It holds the chain lock until then: wait for it, read the row again.
        await wait_for_chain(conn, env.scope, msg.job_id)
        job = await jobs_store.get_job(conn, env.scope, msg.job_id)
    if job is None:
        env.jobs.forget(msg.job_id)
        await park(env, delivery, "unknown_job", f"no job {msg.job_id!r} in scope {env.scope!r}")
        return None
    env.jobs.put(job)
    if job.queue != delivery.queue:
        await park(env, delivery, "wrong_queue", f"job {job.job_id!r} is served by queue {job.queue!r}")
        return None
    if not job.enabled and not runs_when_paused(msg):
        await drop(env, delivery, "disabled", job_id=job.job_id)  # the chain ends here; resume reseeds
        return None
    if msg.epoch is not None and msg.epoch != job.epoch:
        await drop(env, delivery, "stale_epoch", job_id=job.job_id, epoch=msg.epoch, current=job.epoch)
        return None
    if msg.is_expired(env.clock()):
        await runs.claim(conn, new_run(env, job, msg), RunStatus.EXPIRED, env.worker_id)
        await drop(env, delivery, "expired", job_id=job.job_id)
        return None
    return job


def cached_job(env: Env, delivery: Delivery, msg: JobMessage) -> JobRow | None:
    """The row read for an earlier message, if `lookup_job` would let this message through on it: a chain
    message of the row's epoch, for an enabled job served by this queue. Unconfirmed until step 4."""
    if not msg.is_chain:
        return None
    job = env.jobs.get(msg.job_id)
    if job is None or job.epoch != msg.epoch or not job.enabled or job.queue != delivery.queue:
        return None
    return None if msg.is_expired(env.clock()) else job


def runs_when_paused(msg: JobMessage) -> bool:
    """A paused job still runs what an operator asks for by hand (run-now, backfill, a hand-published message)
    and the retries of run-now; chain, startup and event messages, and retries of chain runs, wait for `resume`."""
    if msg.trigger_source is TriggerSource.MANUAL:
        return True
    return msg.trigger_source is TriggerSource.RETRY and msg.epoch is None


def new_run(env: Env, job: JobRow, msg: JobMessage) -> NewRun:
    """The run a message asks for. Slot messages (they carry an epoch) get a run_id derived from the slot, so
    every copy of one slot claims the same row; other messages bring their own run_id."""
    if msg.epoch is not None:
        run_id = schedule.derive_run_id(env.scope, job.job_id, msg.epoch, msg.scheduled_for, msg.attempt)
    else:
        run_id = msg.run_id
    return NewRun(
        run_id=run_id,
        scope=env.scope,
        job_id=job.job_id,
        epoch=msg.epoch,
        trigger_source=msg.trigger_source.value,
        scheduled_for=msg.scheduled_for,
        attempt=msg.attempt,
        params=msg.params,
        upstream_run_id=msg.upstream_run_id,
    )


# -- 3. misfire ------------------------------------------------------------------------------------------------


def misfired(env: Env, job: JobRow, msg: JobMessage) -> bool:
    """A chain message later than the job's grace (plus its jitter)."""
    return msg.is_chain and schedule.is_misfire(msg.scheduled_for, env.clock(), job.misfire_grace_sec + job.jitter_sec)


async def handle_misfire(env: Env, conn: asyncpg.Connection, delivery: Delivery, job: JobRow, msg: JobMessage) -> bool:
    """A chain message later than the grace: record skipped_misfire and post the next slot counted from now
    (no burst of catch-up runs). True when the message was handled here."""
    if not misfired(env, job, msg):
        return False
    now = env.clock()
    run = new_run(env, job, msg)
    if await runs.claim(conn, run, RunStatus.SKIPPED_MISFIRE, env.worker_id):
        env.metrics.runs.labels(env.scope, job.job_id, RunStatus.SKIPPED_MISFIRE, msg.trigger_source).inc()
        log.warning("run.skipped_misfire", late_sec=round((now - msg.scheduled_for).total_seconds(), 3))
        await post_next(env, conn, job, msg, run.run_id)
    await drop(env, delivery, "misfire", job_id=job.job_id)
    return True


# -- 4. lock ---------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Lock:
    key: int | None  # the session advisory lock held on the run's connection, if any; None once released
    needed: bool  # False for overlap=allow_all
    stale: bool = False  # the job row the lock was asked for has changed since it was read: decide again
    claimed: bool | None = None  # step 5's usual insert, done with the lock: None when it was not attempted

    @property
    def free(self) -> bool:
        return self.key is not None or not self.needed


async def take_lock(env: Env, conn: asyncpg.Connection, job: JobRow, run: NewRun, confirm: bool = False) -> Lock:
    """One of the job's (or lock group's) `max_parallel` slots, held on `conn` for the whole run. The same
    round trip reads the job row's version (with `confirm`, a row that changed since `job` was read makes the
    lock `stale`, and nothing is claimed) and, the lock being free, does step 5's usual case: `run` inserted
    as claimed (`claimed` says whether the slot was free)."""
    needed = job.overlap != "allow_all"
    keys = run_lock_keys(job.scope, job.lock_name, job.max_parallel) if needed else []
    expected = job.version if confirm else None
    key, version, inserted = await runs.lock_and_claim(conn, keys, needed, run, env.worker_id, expected)
    stale = confirm and version != job.version
    lock = Lock(key=key, needed=needed, stale=stale)
    if lock.free and not stale:
        lock.claimed = inserted
    return lock


async def release(conn: asyncpg.Connection, lock: Lock) -> None:
    if lock.key is not None:
        key, lock.key = lock.key, None
        try:
            await unlock(conn, key)
        except DB_ERRORS:
            spoil(conn)  # the pool's full reset gives the lock back, or the connection is gone with it


# -- 5. claim --------------------------------------------------------------------------------------------------


async def claim_slot(env: Env, conn: asyncpg.Connection, job: JobRow, run: NewRun, lock: Lock) -> Claim:
    """Insert the run row with a deterministic id (with the lock free, step 4 already tried); decide what an
    existing row means."""
    if lock.claimed:
        return Claim(Verdict.RUN, run)
    if lock.claimed is None:  # every lock slot taken: the slot is buffered or skipped, if it has no row yet
        buffer = job.overlap == "buffer_one" and not await runs.has_waiter(conn, env.scope, job.job_id)
        status = RunStatus.BUFFERED if buffer else RunStatus.SKIPPED_LOCKED
        if await runs.claim(conn, run, status, env.worker_id):
            return Claim(Verdict.BUFFERED if buffer else Verdict.SKIPPED, run)
    existing = await runs.existing(conn, run)
    if existing is None:  # the conflicting row vanished (pruned): treat as a duplicate
        return Claim(Verdict.DROP, run, "duplicate")
    return await _claim_existing(env, conn, job, run, existing, lock)


async def _claim_existing(
    env: Env, conn: asyncpg.Connection, job: JobRow, run: NewRun, row: RunRow, lock: Lock
) -> Claim:
    run = NewRun(**{**_fields(run), "run_id": row.run_id})
    revivable = row.status in REVIVABLE and is_backfill(run) and lock.free
    if revivable and await runs.revive(conn, row.run_id, env.worker_id):
        return Claim(Verdict.RUN, run, "backfill_revived", row)
    if row.status.terminal:
        return Claim(Verdict.DROP, run, "already_done", row)
    if row.status is RunStatus.BUFFERED:
        return await _claim_buffered(env, conn, job, run, row, lock)
    # claimed or running: a copy of a slot someone else is on, unless that someone is gone
    mine_left_over = row.worker == env.worker_id and row.run_id not in env.inflight
    if not mine_left_over and await runs.worker_alive(conn, row.worker):
        return Claim(Verdict.DROP, run, "duplicate", row)
    if lock.free and await runs.take_over(conn, row.run_id, row.worker, env.worker_id):
        log.warning("run.taken_over", run_id=str(row.run_id), dead_worker=row.worker)
        return Claim(Verdict.RUN, run, "taken_over", row)
    return Claim(Verdict.DROP, run, "owner_dead_lock_busy", row)  # the watchdog marks it abandoned


async def _claim_buffered(
    env: Env, conn: asyncpg.Connection, job: JobRow, run: NewRun, row: RunRow, lock: Lock
) -> Claim:
    if lock.free:
        if await runs.promote_buffered(conn, row.run_id, env.worker_id):
            return Claim(Verdict.RUN, run, "buffered_ran", row)
        return Claim(Verdict.DROP, run, "duplicate", row)
    if schedule.is_misfire(row.scheduled_for, env.clock(), job.misfire_grace_sec):
        if await runs.resolve_buffered(conn, row.run_id, RunStatus.SKIPPED_LOCKED, "lock still taken after the grace"):
            env.metrics.runs.labels(env.scope, job.job_id, RunStatus.SKIPPED_LOCKED, run.trigger_source).inc()
        return Claim(Verdict.DROP, run, "buffer_gave_up", row)
    return Claim(Verdict.BUFFERED, run, "still_locked", row)


REVIVABLE = frozenset({RunStatus.SKIPPED_LOCKED, RunStatus.SKIPPED_MISFIRE, RunStatus.EXPIRED})


def is_backfill(run: NewRun) -> bool:
    """A manual message for a slot of the chain (it carries an epoch): `backfill` sends these."""
    return run.trigger_source == TriggerSource.MANUAL.value and run.epoch is not None and run.attempt == 1


def _fields(run: NewRun) -> dict[str, Any]:
    return {name: getattr(run, name) for name in NewRun.__slots__}


# -- 6. post next ----------------------------------------------------------------------------------------------


async def post_next(
    env: Env, conn: asyncpg.Connection, job: JobRow, msg: JobMessage, run_id: uuid.UUID, start: bool = False
) -> chain.Slot | None:
    """Chain messages only: publish the next slot (confirmed) before the run starts, so the cadence does not
    depend on the run's length and the chain survives a crash of the run. With `start`, the statement that
    records the post also marks the run running (step 8's first write, done here to save a round trip)."""
    if not msg.is_chain or not job.has_chain:
        return None
    now = env.clock()
    worker = env.worker_id if start else None
    slot = await chain.extend(conn, env.publisher, job, job.epoch, max(msg.scheduled_for, now), now, run_id, worker)
    if slot is None:
        log.info("chain.not_extended", reason="epoch_changed")
    return slot


# -- the whole protocol ----------------------------------------------------------------------------------------


async def handle_delivery(env: Env, delivery: Delivery) -> None:
    """Steps 1-10 for one message. Never raises."""
    structlog.contextvars.clear_contextvars()
    try:
        await _protocol(env, delivery)
        env.series(env.metrics.dependency_up, "postgres").set(1)
        env.series(env.metrics.dependency_up, "rabbitmq").set(1)
    except DB_ERRORS as exc:
        await _dependency_down(env, delivery, "postgres", exc)
    except AMQP_ERRORS as exc:
        await _dependency_down(env, delivery, "rabbitmq", exc)
    except asyncio.CancelledError:
        await delivery.nack_requeue()
        raise
    except Exception as exc:
        log.exception("message.internal_error", error=repr(exc)[:300], redelivered=delivery.message.redelivered)
        if delivery.settled:
            return
        if delivery.message.redelivered:  # failed twice: park it rather than loop on it
            with contextlib.suppress(Exception):
                await park(env, delivery, "internal_error", repr(exc))
        else:
            await _dependency_down(env, delivery, "internal", exc)
    finally:
        structlog.contextvars.clear_contextvars()


async def _dependency_down(env: Env, delivery: Delivery, dependency: str, exc: BaseException) -> None:
    """Not acked yet: wait (holding the message, so prefetch throttles intake) and hand it back to the broker."""
    if dependency in ("postgres", "rabbitmq"):
        env.metrics.dependency_up.labels(dependency).set(0)
    log.warning("dependency.unavailable", dependency=dependency, error=repr(exc)[:300], settled=delivery.settled)
    if not delivery.settled:
        await asyncio.sleep(env.dependency_backoff_sec * (0.5 + env.rng()))
        await delivery.nack_requeue()


async def _protocol(env: Env, delivery: Delivery) -> None:
    msg = await parse_or_park(env, delivery)
    if msg is None:
        return
    structlog.contextvars.bind_contextvars(
        scope=env.scope, trigger_source=msg.trigger_source.value, attempt=msg.attempt
    )
    async with env.pool.acquire() as conn:  # this connection holds the run lock for the whole run
        cached = cached_job(env, delivery, msg)
        if cached is not None and await _serve(env, conn, delivery, msg, cached, confirmed=False):
            left_tidy(conn)
            return
        job = await lookup_job(env, conn, delivery, msg)
        if job is not None:
            await _serve(env, conn, delivery, msg, job, confirmed=True)
        left_tidy(conn)  # every lock taken here was given back (a failed unlock spoiled it): no reset needed


async def _serve(
    env: Env, conn: asyncpg.Connection, delivery: Delivery, msg: JobMessage, job: JobRow, confirmed: bool
) -> bool:
    """Steps 3-10 on a job row. An unconfirmed (cached) row is only acted on once step 4 has confirmed it:
    returns False, having done nothing, when it cannot be (it changed, or the message misfired or has no
    handler: decided on the fresh row instead)."""
    structlog.contextvars.bind_contextvars(job_id=job.job_id)  # only ids of real jobs become log labels
    if not confirmed and misfired(env, job, msg):
        return False
    if await handle_misfire(env, conn, delivery, job, msg):
        return True
    handler = env.registry.resolve(job.job_id, job.queue)
    if handler is None:
        if confirmed:
            await park(env, delivery, "no_handler", f"this worker has no handler for queue {job.queue!r}")
        return confirmed
    run = new_run(env, job, msg)
    lock = await take_lock(env, conn, job, run, confirm=not confirmed)
    try:
        if lock.stale:
            env.jobs.forget(job.job_id)
            return False
        await _claimed(env, conn, delivery, job, msg, run, lock, handler)
        return True
    finally:
        await release(conn, lock)


async def _claimed(
    env: Env,
    conn: asyncpg.Connection,
    delivery: Delivery,
    job: JobRow,
    msg: JobMessage,
    run: NewRun,
    lock: Lock,
    handler: Handler,
) -> None:
    claim = await claim_slot(env, conn, job, run, lock)
    structlog.contextvars.bind_contextvars(run_id=str(claim.run.run_id))
    if claim.verdict is Verdict.DROP:
        await _ensure_chain_after(env, conn, job, msg, claim)
        await drop(env, delivery, claim.reason, job_id=job.job_id)
        return
    if claim.verdict is not Verdict.RUN:
        await _not_now(env, conn, delivery, job, msg, claim)
        return
    env.inflight.add(claim.run.run_id)
    try:
        started = None
        try:
            if claim.existing is None or claim.existing.next_posted_for is None:
                slot = await post_next(env, conn, job, msg, claim.run.run_id, start=True)
                started = None if slot is None else slot.run_started_at
        except BaseException:
            await unclaim(env, claim.run.run_id)
            raise
        await ack_claimed(delivery)  # 7: before running, so a long run never meets the consumer timeout
        result = await execution.run_and_record(env, conn, job, msg, claim.run, handler, lock, started)
    finally:
        env.inflight.discard(claim.run.run_id)
    await execution.retry_if_due(env, job, msg, claim.run, result)
    await execution.trigger_downstream(env, job, claim.run, result)


async def unclaim(env: Env, run_id: uuid.UUID) -> None:
    """The slot is claimed but the next slot could not be posted: the message goes back to the queue. Give the
    claim up (best effort, on a fresh connection) so the copy takes the slot over wherever it lands; kept by a
    live worker, the claim would block the slot for good (its copy is dropped as a duplicate of a live owner)."""
    with contextlib.suppress(Exception):
        async with env.pool.acquire(timeout=5) as conn:
            await runs.release_claim(conn, run_id, env.worker_id)


async def ack_claimed(delivery: Delivery) -> None:
    """Ack a message whose slot is claimed (row and lock are ours, the next slot posted). If the channel is gone,
    RabbitMQ requeues the message and its copy is dropped as a duplicate wherever it lands (the row belongs to a
    live worker): the run goes on, since the row and the lock, not the message, are its record."""
    try:
        await delivery.ack()
    except AMQP_ERRORS as exc:
        log.warning("message.ack_failed", error=repr(exc)[:300])


async def _not_now(
    env: Env, conn: asyncpg.Connection, delivery: Delivery, job: JobRow, msg: JobMessage, claim: Claim
) -> None:
    """Every lock slot is taken: the slot is skipped (recorded) or buffered; either way the chain goes on."""
    outcome = "buffered" if claim.verdict is Verdict.BUFFERED else "skipped"
    env.metrics.lock_contention.labels(env.scope, job.job_id, outcome).inc()
    if claim.existing is None:
        await post_next(env, conn, job, msg, claim.run.run_id)
    if claim.verdict is Verdict.SKIPPED:
        env.metrics.runs.labels(env.scope, job.job_id, RunStatus.SKIPPED_LOCKED, msg.trigger_source).inc()
        log.info("run.skipped_locked")
    else:
        delay = buffer_poll_delay(job, env.rng())
        await env.publisher.to_retry(msg, delay)
        log.info("run.buffered", retry_in_sec=round(delay, 3))
    await delivery.ack()


def buffer_poll_delay(job: JobRow, rand: float) -> float:
    """How long a buffered slot waits before asking for the lock again: a fifth of the period, 0.2-2 s."""
    plan = job.schedule
    period = schedule.period_estimate(plan).total_seconds() if plan is not None else 10.0
    return min(2.0, max(0.2, period / 5)) * (0.75 + rand / 2)


async def _ensure_chain_after(env: Env, conn: asyncpg.Connection, job: JobRow, msg: JobMessage, claim: Claim) -> None:
    """A copy of a finished slot: if the run died before posting the next slot (abandoned), post it now. A chain
    message of the current epoch whose slot was taken by a run of an older epoch (a reseed raced a message of
    the old chain for the same slot) carries the live chain: it posts the next slot, or the chain would end
    here. Should a copy of it do the same, the later of the two next messages is dropped as a duplicate."""
    row = claim.existing
    if row is None or not msg.is_chain:
        return
    if msg.epoch == job.epoch and row.epoch is not None and row.epoch < job.epoch:
        log.info("chain.carried_over", slot_run_epoch=row.epoch)
        await post_next(env, conn, job, msg, claim.run.run_id)
        return
    if row.status.terminal and row.next_posted_for is None and row.epoch == job.epoch:
        await post_next(env, conn, job, msg, row.run_id)
