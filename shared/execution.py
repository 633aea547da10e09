"""Steps 8-10 of the run protocol on a claimed slot: run the handler under its timeout, record the outcome (the
statement that records it also releases the run lock), retry, publish the outcome event (downstream jobs
subscribe to it)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import asyncpg
import structlog
from pydantic import ValidationError

from shared import backoff, decisions, retry_policy
from shared.cancel_watch import CancelWatch
from shared.context import Idempotency, RunContext
from shared.dependencies import AMQP_ERRORS, DB_ERRORS, describe
from shared.events import outcomes
from shared.lock_watch import LockWatch
from shared.messages import describe_validation_error
from shared.registry import Handler
from shared.runtime import Env, Turn
from shared.slot_batch import Shift
from shared.store import retries, runs
from shared.store.runs_batch import Finished
from shared.vocabulary import RunStatus

log = structlog.get_logger("shared.execution")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RunResult:
    status: RunStatus
    error: str | None
    duration_ms: int
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))  # when the handler stopped


def error_text(exc: BaseException) -> str:
    """What is kept of an exception: its type and message, one line, bounded (no traceback, no locals)."""
    return describe(exc, runs.ERROR_LIMIT)


async def persist(env: Env, what: str, action: Callable[[], Awaitable[T]]) -> T | None:
    """Run a write that must not be lost (the record of a finished run, a retry message) until it succeeds,
    with capped back-off; gives up (logged) only when the worker stops."""
    done = await backoff.until_stopped(
        what, action, env.stopping, errors=(*DB_ERRORS, *AMQP_ERRORS), event="persist.retrying"
    )
    return None if done is None else done[0]


def run_slot(turn: Turn) -> datetime | None:
    """The scheduled_for of the turn's run row (its partition key): the row the claim found, else the run the
    message asked for."""
    if turn.existing is not None:
        return turn.existing.scheduled_for
    return None if turn.run is None else turn.run.scheduled_for


def make_context(turn: Turn) -> RunContext:
    env, job, msg, run = turn.env, turn.job, turn.msg, turn.run
    assert job is not None and run is not None
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
        event=msg.event,
        emitter=partial(outcomes.emit, env.publisher),
    )


async def run_and_record(turn: Turn) -> RunResult:
    """Step 8: mark running (unless step 6 did: `turn.started_at`), run the handler with merged and validated
    params under the timeout, record. The record also releases the run lock (step 10), unless a sync handler's
    thread outlives its timeout: then the lock is kept until that thread is done and the caller releases it."""
    env, job, msg, run, lock = turn.env, turn.job, turn.msg, turn.run, turn.lock
    assert job is not None and run is not None and lock is not None and turn.handler is not None
    fire_at = decisions.fire_time(job, msg)
    started = turn.started_at or await runs.start(turn.conn, run.run_id, env.worker_id, fire_at, run_slot(turn))
    if started is None:  # the row left its claim meanwhile (it cannot, while the lock is held): say so, go on
        log.warning("run.start_not_recorded", run_id=str(run.run_id))
        started = env.clock()
    late = decisions.lateness(started, fire_at).total_seconds()
    env.series(env.metrics.start_lateness, env.scope, job.job_id, msg.trigger_source.value).observe(max(0.0, late))
    # Every later line of the run (the handler's, run.finished) carries its slot and lateness: one info line per
    # run (run.finished) tells it all; run.started is for LOG_LEVEL=DEBUG.
    structlog.contextvars.bind_contextvars(
        lateness_ms=round(late * 1000, 1), scheduled_for=msg.scheduled_for.isoformat()
    )
    log.debug("run.started")
    ctx = make_context(turn)
    running = env.series(env.metrics.running, env.scope, job.job_id)
    running.inc()
    t0 = time.monotonic()
    leftover: list[asyncio.Future[Any]] = []
    try:
        params = {**job.default_params, **msg.params}
        status, error = await _invoke(turn, turn.handler, ctx, params, lock.key is not None, leftover)
    except asyncio.CancelledError:
        result = RunResult(RunStatus.ABANDONED, "cancelled: the worker shut down before the run finished", _ms(t0))
        await asyncio.shield(_finish(turn, result, on_run_connection=False))
        await asyncio.shield(retry_if_due(turn, result, on_run_connection=False))
        raise
    finally:
        running.dec()
    result = RunResult(status, error, _ms(t0))
    if not leftover and turn.handler_done is not None:
        turn.handler_done()  # the handler is done: its place among the worker's handlers goes back now
    await _finish(turn, result, on_run_connection=True, release=not leftover)
    for future in leftover:  # a sync handler past its timeout: keep the lock until its thread is really done
        log.warning("run.waiting_for_sync_handler_thread")
        with contextlib.suppress(BaseException):
            await future
    if turn.handler_done is not None:
        turn.handler_done()
    return result


def _ms(t0: float) -> int:
    return int((time.monotonic() - t0) * 1000)


async def _invoke(
    turn: Turn,
    handler: Handler,
    ctx: RunContext,
    params: dict[str, Any],
    locked: bool,
    leftover: list[asyncio.Future[Any]],
) -> tuple[RunStatus, str | None]:
    try:
        parsed = handler.parse_params(params)
    except ValidationError as exc:
        return RunStatus.FAILED, f"{retry_policy.PARAMS_INVALID}: {describe_validation_error(exc)}"
    assert turn.job is not None and turn.run is not None
    cancellable = locked and turn.job.overlap == "cancel_other"
    with LockWatch(turn.conn, locked) as watch:
        async with CancelWatch(turn.conn, turn.run.run_id, cancellable) as cancel:
            try:
                async with asyncio.timeout(ctx.timeout_sec):
                    await cancel.run(_call(turn.env, handler, ctx, parsed, leftover))
                return RunStatus.SUCCEEDED, None
            except TimeoutError:
                return RunStatus.TIMED_OUT, f"timed out after {ctx.timeout_sec:g} s"
            except asyncio.CancelledError:
                if cancel.stopped_by_request() and not watch.lost:
                    ctx.log.warning("run.cancelled_by_request")
                    return RunStatus.CANCELLED, await cancel.reason()
                if not watch.lost:
                    raise
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                return RunStatus.FAILED, "run lock lost (database connection closed): run cancelled"
            except Exception as exc:
                ctx.log.warning("run.handler_error", error=error_text(exc))
                return RunStatus.FAILED, error_text(exc)


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


async def _finish(turn: Turn, result: RunResult, on_run_connection: bool, release: bool = False) -> None:
    """Record the outcome: on the run's own connection (with `release`, freeing the run lock in the same
    statement); if that connection is gone (and the lock with it), on a pool connection, retried until written."""
    env, job, msg, run = turn.env, turn.job, turn.msg, turn.run
    assert job is not None and run is not None

    async def write() -> None:
        async with env.pool.acquire() as pooled:
            await runs.finish(
                pooled, run.run_id, result.status, result.error, result.duration_ms, result.finished_at,
                slot=run_slot(turn), owner=env.worker_id,
            )  # fmt: skip

    if not (on_run_connection and await _finish_on_run_connection(turn, result, release)):
        await persist(env, "run.finish", write)
    env.series(env.metrics.runs, env.scope, job.job_id, result.status.value, msg.trigger_source.value).inc()
    env.series(env.metrics.run_duration, env.scope, job.job_id).observe(result.duration_ms / 1000)
    if result.status is RunStatus.SUCCEEDED:
        env.metrics.observe_success(env.scope, job.job_id, time.time())
    level = "info" if result.status is RunStatus.SUCCEEDED else "warning"
    getattr(log, level)("run.finished", status=result.status.value, duration_ms=result.duration_ms, error=result.error)


async def _finish_on_run_connection(turn: Turn, result: RunResult, release: bool) -> bool:
    lock, run = turn.lock, turn.run
    assert lock is not None and run is not None
    key = lock.key if release else None

    async def write(conn: asyncpg.Connection) -> None:
        if isinstance(conn, Shift):  # a run started with others: recorded with those that end with it
            slot = run_slot(turn)
            assert slot is not None
            finished = Finished(
                run.run_id, result.status, result.error, result.duration_ms, result.finished_at, slot, key
            )
            await conn.finish(finished)
        else:
            await runs.finish(
                conn, run.run_id, result.status, result.error, result.duration_ms, result.finished_at,
                release_key=key, slot=run_slot(turn),
            )  # fmt: skip

    if not await _on_run_connection(turn, write, "run.finish_retrying"):
        return False
    if key is not None:
        lock.key = None  # released by that statement
    return True


async def retry_if_due(turn: Turn, result: RunResult, on_run_connection: bool = True) -> None:
    """Step 9: attempts left -> the same slot again through the retry queue after back-off with jitter. The retry
    is recorded as owed first, on the run's own connection unless `on_run_connection` is false (a run cancelled
    mid-statement: its connection may be busy), else on the pool."""
    env, job, msg = turn.env, turn.job, turn.msg
    assert job is not None
    max_attempts = msg.max_attempts or job.max_attempts
    if not retry_policy.will_retry(result.status, msg.attempt, max_attempts, result.error):
        return
    delay = retry_policy.retry_delay(msg.attempt, job.retry_backoff_sec, job.retry_backoff_max_sec, env.rng())
    now = env.clock()
    retry = msg.next_attempt(env.scope, now)
    run, slot = turn.run, run_slot(turn)
    assert run is not None and slot is not None
    body, due_at = retry.to_body(), now + timedelta(seconds=delay)
    # owed first: a retry lost between here and its arrival is published again by the watchdog (watchdog.retries)
    owe = partial(
        retries.owe, run_id=run.run_id, slot=slot, scope=env.scope, job_id=job.job_id, attempt=msg.attempt,
        epoch=msg.epoch, message=body.decode(), due_at=due_at,
    )  # fmt: skip
    if not (on_run_connection and await _on_run_connection(turn, owe, "retry.owe_retrying")):
        await persist(env, "retry.owe", lambda: owe(env.pool))
    await persist(env, "retry.publish", lambda: env.publisher.to_retry(retry, delay))
    env.metrics.retries.labels(env.scope, job.job_id).inc()
    log.info("run.retry_scheduled", next_attempt=retry.attempt, retry_in_sec=round(delay, 3))


async def _on_run_connection(
    turn: Turn, write: Callable[[asyncpg.Connection], Awaitable[None]], failed_event: str
) -> bool:
    """A write on the run's own connection (no second connection from the pool while the turn holds one). False
    when that connection is gone or the write failed on it (logged as `failed_event`): the caller writes on the
    pool instead."""
    try:
        if turn.conn.is_closed():  # raises too once PostgreSQL dropped it: the pool has taken the proxy back
            return False
        await write(turn.conn)
    except DB_ERRORS as exc:
        log.warning(failed_event, error=error_text(exc))
        return False
    return True


async def publish_outcome(turn: Turn, status: RunStatus, duration_ms: int | None, error: str | None) -> None:
    """Step 10: the run's outcome on `S.events` as `job.<job_id>.<status>` (the `on_success` jobs and every other
    subscriber get it there). After the record: retried while RabbitMQ is down (logged), never losing the record."""
    env, job, msg, run = turn.env, turn.job, turn.msg, turn.run
    assert job is not None and run is not None
    publish = partial(
        outcomes.publish_outcome, env.publisher, run_id=run.run_id, job_id=job.job_id,
        scheduled_for=msg.scheduled_for, trigger_source=msg.trigger_source.value, attempt=msg.attempt,
        status=status.value, duration_ms=duration_ms, error=error,
    )  # fmt: skip
    if await persist(env, "outcome.publish", publish) is not None:
        log.debug("outcome.published", status=status.value)
