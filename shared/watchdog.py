"""The watchdog: runs in every worker, active in one per scope (an advisory lock decides which).

Each pass: mark runs whose worker died as abandoned (and retry them when attempts remain), close buffered
slots whose message never came back, reseed chains that are lost, and now and then prune old history.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg
import structlog
from aio_pika.abc import AbstractChannel

from shared import chain, connect, retry_policy
from shared.dependencies import AMQP_ERRORS
from shared.locks import watchdog_lock_key
from shared.messages import JobMessage
from shared.metrics import Metrics
from shared.publisher import Publisher
from shared.store import idempotency, runs, workers
from shared.store import jobs as jobs_store
from shared.store.jobs import JobRow
from shared.store.pool import connect as pg_connect
from shared.vocabulary import TriggerSource

log = structlog.get_logger("shared.watchdog")
PRUNE_EVERY_SEC = 3600.0


def lost_chains(jobs: list[JobRow], live_queues: set[str], now: datetime, lost_after: timedelta) -> list[JobRow]:
    """Enabled chain jobs served by a live worker whose next message is overdue by more than `lost_after`
    (or that have no next message at all). A job nobody serves is not lost: its message waits in the queue."""
    return [
        job
        for job in jobs
        if job.enabled
        and job.has_chain
        and job.queue in live_queues
        and (job.next_due_at is None or job.next_due_at + lost_after < now)
    ]


def retry_message(row: runs.RunRow, now: datetime) -> JobMessage:
    """The next attempt of an abandoned run (same slot, same params)."""
    attempt = row.attempt + 1
    run_id = retry_policy.retry_run_id(row.scope, row.job_id, row.epoch, row.scheduled_for, row.run_id, attempt)
    return JobMessage(
        job_id=row.job_id,
        trigger_source=TriggerSource.RETRY,
        scope=row.scope,
        epoch=row.epoch,
        scheduled_for=row.scheduled_for,
        attempt=attempt,
        params=row.params,
        run_id=run_id,
        published_at=now,
    )


class Watchdog:
    def __init__(
        self,
        dsn: str,
        scope: str,
        worker_id: str,
        channel: AbstractChannel,
        publisher: Publisher,
        metrics: Metrics,
        *,
        interval_sec: float,
        lost_after_sec: float,
        retention_days: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.dsn = dsn
        self.scope = scope
        self.worker_id = worker_id
        self.channel = channel
        self.publisher = publisher
        self.metrics = metrics
        self.interval_sec = interval_sec
        self.lost_after = timedelta(seconds=lost_after_sec)
        self.retention_days = retention_days
        self.clock = clock
        self.active = False
        self._last_prune = float("-inf")  # prune on the first active pass

    async def run(self) -> None:
        """Forever: hold a dedicated connection, try to become the active watchdog, do a pass, sleep."""
        while True:
            conn = await connect.wait_for("postgres", "watchdog", lambda: pg_connect(self.dsn, self.worker_id))
            self.active = False
            try:
                while True:
                    if not self.active:
                        self.active = bool(
                            await conn.fetchval("SELECT pg_try_advisory_lock($1)", watchdog_lock_key(self.scope))
                        )
                        if self.active:
                            log.info("watchdog.active", scope=self.scope)
                    if self.active:
                        await self.pass_once(conn)
                    await asyncio.sleep(self.interval_sec)
            except Exception as exc:  # the watchdog must outlive any single failure: log, back off, start over
                log.warning("watchdog.pass_failed", error=f"{type(exc).__name__}: {exc}"[:300])
                await asyncio.sleep(self.interval_sec)
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def pass_once(self, conn: asyncpg.Connection) -> None:
        await self.sweep_abandoned(conn)
        await runs.expire_stale_buffers(conn, self.scope, 30.0)
        await self.reseed_lost(conn)
        if time.monotonic() - self._last_prune > PRUNE_EVERY_SEC:
            self._last_prune = time.monotonic()
            await self.prune(conn)

    async def sweep_abandoned(self, conn: asyncpg.Connection) -> None:
        for row in await runs.abandon_orphans(conn, self.scope):
            job = await jobs_store.get_job(conn, self.scope, row.job_id)
            self.metrics.runs.labels(self.scope, row.job_id, "abandoned", row.trigger_source).inc()
            retry = job is not None and row.attempt < job.max_attempts and (row.epoch in (None, job.epoch))
            log.warning("run.abandoned", job_id=row.job_id, run_id=str(row.run_id), dead_worker=row.worker, retry=retry)
            if retry:
                await self.publish_retry(retry_message(row, self.clock()))
                self.metrics.retries.labels(self.scope, row.job_id).inc()

    async def publish_retry(self, message: JobMessage) -> None:
        """The row is abandoned already (committed): publish its retry until the broker takes it. A run abandoned
        during a broker restart would otherwise lose its retry to the first publish on a closed channel."""
        delay = 0.5
        while True:
            try:
                await self.publisher.to_retry(message, 0.0)
                return
            except AMQP_ERRORS as exc:
                log.warning(
                    "watchdog.retry_publish_failed", job_id=message.job_id, error=repr(exc)[:300], retry_in_sec=delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def reseed_lost(self, conn: asyncpg.Connection) -> None:
        now = self.clock()
        live = await workers.live_queues(conn, self.scope)
        for job in lost_chains(await jobs_store.list_jobs(conn, self.scope), live, now, self.lost_after):
            reason = "never_seeded" if job.next_due_at is None else "overdue"
            # the list was read at the start of the pass: decide again on the row, under the chain lock, now
            at = self.clock()
            replaced = await chain.replace_if_overdue(conn, self.channel, self.publisher, job, at, at - self.lost_after)
            if replaced is None:
                log.info("chain.reseed_not_needed", job_id=job.job_id, reason="extended_meanwhile")
                continue
            epoch, slot = replaced
            self.metrics.reseeds.labels(self.scope, job.job_id, reason).inc()
            log.warning(
                "chain.reseeded",
                job_id=job.job_id,
                reason=reason,
                was_due=None if job.next_due_at is None else job.next_due_at.isoformat(),
                epoch=epoch,
                first_slot=None if slot is None else slot.scheduled_for.isoformat(),
            )

    async def prune(self, conn: asyncpg.Connection) -> None:
        pruned = await runs.prune(conn, self.scope, self.retention_days)
        keys = await idempotency.prune(conn, self.scope)
        gone = await workers.forget_dead(conn, self.scope, 86400.0)
        log.info("watchdog.pruned", runs=pruned, idempotency_keys=keys, workers=gone)
