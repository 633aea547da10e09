"""Steps 8-10 of the run protocol: run the handler under its timeout, record the outcome, retry, trigger
downstream jobs. The lock stays held by the caller until all of this is done."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import structlog
from pydantic import ValidationError

from shared import schedule
from shared.context import Idempotency, RunContext
from shared.messages import JobMessage, describe_validation_error
from shared.registry import Handler
from shared.store import jobs as jobs_store
from shared.store import runs
from shared.store.jobs import JobRow
from shared.store.runs import NewRun
from shared.vocabulary import RunStatus, TriggerSource

if TYPE_CHECKING:
    from shared.protocol import Env, Lock

log = structlog.get_logger("shared.execution")
T = TypeVar("T")
RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ABANDONED})


@dataclass(frozen=True, slots=True)
class RunResult:
    status: RunStatus
    error: str | None
    duration_ms: int
    retryable: bool = True
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))  # when the handler stopped


def error_text(exc: BaseException) -> str:
    """What is kept of an exception: its type and message, one line, bounded (no traceback, no locals)."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text[: runs.ERROR_LIMIT]


async def persist(env: Env, what: str, action: Callable[[], Awaitable[T]]) -> T | None:
    """Run a write that must not be lost (the record of a finished run, a retry message) until it succeeds,
    with capped back-off; gives up only when the worker stops."""
    from shared.protocol import AMQP_ERRORS, DB_ERRORS

    delay = 0.5
    while True:
        try:
            return await action()
        except (*DB_ERRORS, *AMQP_ERRORS) as exc:
            if env.stopping.is_set():
                log.error("persist.gave_up", what=what, error=error_text(exc))
                return None
            log.warning("persist.retrying", what=what, error=error_text(exc), retry_in_sec=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


def fire_time(job: JobRow, msg: JobMessage) -> datetime:
    """When the message was meant to start: the slot plus its jitter for chain messages, else the slot."""
    if msg.is_chain:
        return msg.scheduled_for + schedule.slot_jitter(job.job_id, msg.scheduled_for, job.jitter_sec)
    return msg.scheduled_for


def make_context(env: Env, job: JobRow, msg: JobMessage, run: NewRun) -> RunContext:
    return RunContext(
        run_id=run.run_id,
        job_id=job.job_id,
        scope=env.scope,
        trigger_source=msg.trigger_source.value,
        scheduled_for=msg.scheduled_for,
        attempt=msg.attempt,
        max_attempts=msg.max_attempts or job.max_attempts,
        timeout_sec=msg.timeout_sec or job.timeout_sec,
        log=structlog.get_logger("job").bind(),
        idempotency=Idempotency(env.pool, env.scope, run.run_id),
        upstream_run_id=msg.upstream_run_id,
    )


async def run_and_record(
    env: Env,
    conn: asyncpg.Connection,
    job: JobRow,
    msg: JobMessage,
    run: NewRun,
    handler: Handler,
    lock: Lock,
    started: datetime | None = None,
) -> RunResult:
    """Step 8: mark running (unless step 6 did: `started`), run the handler with merged and validated params
    under the timeout, record. The record also releases the run lock (step 10), unless a sync handler's thread
    outlives its timeout: then the lock is kept until that thread is done and the caller releases it."""
    if started is None:
        started = await runs.start(conn, run.run_id, env.worker_id)
    lateness = (started - fire_time(job, msg)).total_seconds()
    env.series(env.metrics.start_lateness, env.scope, job.job_id, msg.trigger_source.value).observe(max(0.0, lateness))
    # Every later line of the run (the handler's, run.finished) carries its slot and lateness: one info line per
    # run (run.finished) tells it all; run.started is for LOG_LEVEL=DEBUG.
    structlog.contextvars.bind_contextvars(
        lateness_ms=round(lateness * 1000, 1), scheduled_for=msg.scheduled_for.isoformat()
    )
    log.debug("run.started")
    ctx = make_context(env, job, msg, run)
    running = env.series(env.metrics.running, env.scope, job.job_id)
    running.inc()
    t0 = time.monotonic()
    leftover: list[asyncio.Future[Any]] = []
    try:
        status, error, retryable = await _invoke(
            env, conn, handler, ctx, {**job.default_params, **msg.params}, lock.key is not None, leftover
        )
    except asyncio.CancelledError:
        result = RunResult(RunStatus.ABANDONED, "cancelled: the worker shut down before the run finished", _ms(t0))
        await asyncio.shield(_finish(env, job, msg, run, result))
        await asyncio.shield(retry_if_due(env, job, msg, run, result))
        raise
    finally:
        running.dec()
    result = RunResult(status, error, _ms(t0), retryable)
    await _finish(env, job, msg, run, result, conn, None if leftover else lock)
    for future in leftover:  # a sync handler past its timeout: keep the lock until its thread is really done
        log.warning("run.waiting_for_sync_handler_thread")
        with contextlib.suppress(BaseException):
            await future
    return result


def _ms(t0: float) -> int:
    return int((time.monotonic() - t0) * 1000)


class LockWatch:
    """While a locked run executes: if PostgreSQL drops the connection that holds the lock, cancel the run.
    Without the lock another worker may start the same job, so going on would break "never run twice at once"."""

    def __init__(self, conn: asyncpg.Connection, enabled: bool) -> None:
        self.conn = conn
        self.enabled = enabled
        self.lost = False
        self.watching = False
        self._task = asyncio.current_task()

    def _on_terminated(self, _: object) -> None:
        # asyncpg calls termination listeners with call_soon: this may run after the handler has returned and the
        # watch ended, and a cancel then would kill the recording of the run's outcome instead of the run.
        if not self.watching:
            return
        self.lost = True
        if self._task is not None:
            self._task.cancel()

    def __enter__(self) -> LockWatch:
        if self.enabled:
            self.watching = True
            self.conn.add_termination_listener(self._on_terminated)
        return self

    def __exit__(self, *_: object) -> None:
        self.watching = False
        if self.enabled:
            with contextlib.suppress(Exception):
                self.conn.remove_termination_listener(self._on_terminated)


async def _invoke(
    env: Env,
    conn: asyncpg.Connection,
    handler: Handler,
    ctx: RunContext,
    params: dict[str, Any],
    locked: bool,
    leftover: list[asyncio.Future[Any]],
) -> tuple[RunStatus, str | None, bool]:
    try:
        parsed = handler.parse_params(params)
    except ValidationError as exc:
        return RunStatus.FAILED, f"params invalid: {describe_validation_error(exc)}", False
    with LockWatch(conn, locked) as watch:
        try:
            async with asyncio.timeout(ctx.timeout_sec):
                await _call(env, handler, ctx, parsed, leftover)
            return RunStatus.SUCCEEDED, None, True
        except TimeoutError:
            return RunStatus.TIMED_OUT, f"timed out after {ctx.timeout_sec:g} s", True
        except asyncio.CancelledError:
            if not watch.lost:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            return RunStatus.FAILED, "run lock lost (database connection closed): run cancelled", True
        except Exception as exc:
            ctx.log.warning("run.handler_error", error=error_text(exc))
            return RunStatus.FAILED, error_text(exc), True


async def _call(env: Env, handler: Handler, ctx: RunContext, params: Any, leftover: list[asyncio.Future[Any]]) -> None:
    if handler.is_async:
        await handler.fn(ctx, params)
        return
    # copy_context: the thread's log lines keep the run's bound fields (run_id, job_id, ...)
    call = partial(contextvars.copy_context().run, handler.fn, ctx, params)
    future = asyncio.get_running_loop().run_in_executor(env.executor, call)
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        leftover.append(future)  # a thread cannot be interrupted: the caller waits for it before unlocking
        raise


async def _finish(
    env: Env,
    job: JobRow,
    msg: JobMessage,
    run: NewRun,
    result: RunResult,
    conn: asyncpg.Connection | None = None,
    lock: Lock | None = None,
) -> None:
    """Record the outcome: on the run's own connection, releasing `lock` in the same statement; if that
    connection is gone (and the lock with it), on a pool connection, retried until it is written."""

    async def write() -> None:
        async with env.pool.acquire() as pooled:
            await runs.finish(pooled, run.run_id, result.status, result.error, result.duration_ms, result.finished_at)

    if not await _finish_on(env, conn, run, result, lock):
        await persist(env, "run.finish", write)
    env.series(env.metrics.runs, env.scope, job.job_id, result.status.value, msg.trigger_source.value).inc()
    env.series(env.metrics.run_duration, env.scope, job.job_id).observe(result.duration_ms / 1000)
    if result.status is RunStatus.SUCCEEDED:
        env.metrics.observe_success(env.scope, job.job_id, time.time())
    level = "info" if result.status is RunStatus.SUCCEEDED else "warning"
    getattr(log, level)("run.finished", status=result.status.value, duration_ms=result.duration_ms, error=result.error)


async def _finish_on(
    env: Env, conn: asyncpg.Connection | None, run: NewRun, result: RunResult, lock: Lock | None
) -> bool:
    from shared.protocol import DB_ERRORS

    if conn is None:
        return False
    key = None if lock is None else lock.key
    try:
        if conn.is_closed():  # raises too once PostgreSQL dropped it: the pool has taken the proxy back
            return False
        await runs.finish(
            conn, run.run_id, result.status, result.error, result.duration_ms, result.finished_at, release_key=key
        )
    except DB_ERRORS as exc:
        log.warning("run.finish_retrying", error=error_text(exc))
        return False
    if lock is not None:
        lock.key = None  # released by that statement
    return True


def retry_run_id(env: Env, msg: JobMessage, run: NewRun) -> uuid.UUID:
    if msg.epoch is not None:
        return schedule.derive_run_id(env.scope, msg.job_id, msg.epoch, msg.scheduled_for, msg.attempt + 1)
    return uuid.uuid5(run.run_id, f"attempt-{msg.attempt + 1}")


async def retry_if_due(env: Env, job: JobRow, msg: JobMessage, run: NewRun, result: RunResult) -> None:
    """Step 9: attempts left -> the same slot again through the retry queue after back-off with jitter."""
    max_attempts = msg.max_attempts or job.max_attempts
    if result.status not in RETRYABLE or not result.retryable or msg.attempt >= max_attempts:
        return
    delay = schedule.backoff_delay(msg.attempt, job.retry_backoff_sec, job.retry_backoff_max_sec, env.rng())
    retry = msg.next_attempt(retry_run_id(env, msg, run), env.clock())
    await persist(env, "retry.publish", lambda: env.publisher.to_retry(retry, delay))
    env.metrics.retries.labels(env.scope, job.job_id).inc()
    log.info("run.retry_scheduled", next_attempt=retry.attempt, retry_in_sec=round(delay, 3))


async def trigger_downstream(env: Env, job: JobRow, run: NewRun, result: RunResult) -> None:
    """Step 10: after a success, each `on_success` job gets an event message naming this run."""
    if result.status is not RunStatus.SUCCEEDED or not job.on_success:
        return
    queues = await jobs_store.queues_of(env.pool, env.scope, list(job.on_success))
    now = env.clock()
    for downstream in job.on_success:
        queue = queues.get(downstream)
        if queue is None:
            log.error("downstream.unknown_job", downstream=downstream)
            continue
        event = JobMessage(
            job_id=downstream,
            trigger_source=TriggerSource.EVENT,
            scope=env.scope,
            run_id=uuid.uuid5(run.run_id, downstream),
            upstream_run_id=run.run_id,
            scheduled_for=now,
            published_at=now,
        )
        await persist(env, "downstream.publish", partial(env.publisher.to_work, queue, event))
        log.info("downstream.triggered", downstream=downstream, downstream_run_id=str(event.run_id))
