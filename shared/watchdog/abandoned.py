"""Sweep: abandoned runs. A claimed or running row whose worker died is marked abandoned, and its next attempt is
published when the retry policy allows one (the same policy the worker applies after a failed run)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import asyncpg
import structlog

from shared import backoff
from shared.dependencies import AMQP_ERRORS, describe
from shared.events import outcomes
from shared.messages import JobMessage, retry_message
from shared.metrics import Metrics
from shared.publisher import Publisher
from shared.retry_policy import will_retry
from shared.store import jobs as jobs_store
from shared.store import retries, sweeps
from shared.store.jobs import JobRow
from shared.store.runs import RELEASED_CLAIM_GRACE_SEC, RunRow
from shared.vocabulary import RunStatus
from shared.watchdog.loop import each_alone

log = structlog.get_logger("shared.watchdog")


def should_retry(row: RunRow, job: JobRow | None) -> bool:
    """Whether an abandoned run gets its next attempt: the job still exists, the run is not of a chain that was
    replaced since (an older epoch: the new chain carries the job on), and attempts remain."""
    if job is None:
        return False
    if row.epoch is not None and row.epoch != job.epoch:
        return False
    return will_retry(RunStatus.ABANDONED, row.attempt, job.max_attempts)


def next_attempt(row: RunRow, now: datetime) -> JobMessage:
    """The retry of an abandoned run: same slot, epoch and params, the retry policy's run id."""
    return retry_message(row.scope, row.job_id, row.epoch, row.scheduled_for, row.attempt, row.params, row.run_id, now)


class AbandonedRuns:
    """Marks runs of dead workers abandoned and publishes their retries."""

    name = "abandoned_runs"

    def __init__(
        self,
        scope: str,
        publisher: Publisher,
        metrics: Metrics,
        clock: Callable[[], datetime],
        *,
        released_grace_sec: float = RELEASED_CLAIM_GRACE_SEC,
        cap_sec: float = 30.0,
    ) -> None:
        self.scope = scope
        self.publisher = publisher
        self.metrics = metrics
        self.clock = clock
        self.released_grace_sec = released_grace_sec
        self.cap_sec = cap_sec

    async def run(self, conn: asyncpg.Connection) -> None:
        """One sweep: abandon, then retry what may be retried."""
        for row in await sweeps.abandon_orphans(conn, self.scope, self.released_grace_sec):
            # one row's problem: the others are abandoned already and still owed their retries
            with each_alone("watchdog.abandoned_run_failed", job_id=row.job_id, run_id=str(row.run_id)):
                await self._settle(conn, row)

    async def _settle(self, conn: asyncpg.Connection, row: RunRow) -> None:
        job = await jobs_store.get_job(conn, self.scope, row.job_id)
        self.metrics.runs.labels(self.scope, row.job_id, RunStatus.ABANDONED.value, row.trigger_source).inc()
        retry = should_retry(row, job)
        log.warning("run.abandoned", job_id=row.job_id, run_id=str(row.run_id), dead_worker=row.worker, retry=retry)
        if retry:
            now = self.clock()
            message = next_attempt(row, now)
            await retries.owe(
                conn, run_id=row.run_id, slot=row.scheduled_for, scope=row.scope, job_id=row.job_id,
                attempt=row.attempt, epoch=row.epoch, message=message.to_body().decode(), due_at=now,
            )  # fmt: skip  # owed first (watchdog.retries)
            await self.publish_retry(message)
            self.metrics.retries.labels(self.scope, row.job_id).inc()
        await self.publish_outcome(row)

    async def publish_outcome(self, row: RunRow) -> None:
        """`job.<job_id>.abandoned` on S.events, once, best effort: the row is the record; a broker that is down now
        loses this event (logged), never the sweep."""
        try:
            await outcomes.publish_outcome(
                self.publisher, run_id=row.run_id, job_id=row.job_id, scheduled_for=row.scheduled_for,
                trigger_source=row.trigger_source, attempt=row.attempt, status=RunStatus.ABANDONED.value,
                duration_ms=None, error=f"abandoned: worker {row.worker} is gone",
            )  # fmt: skip
        except AMQP_ERRORS as exc:
            run_id = str(row.run_id)
            log.warning("watchdog.outcome_not_published", job_id=row.job_id, run_id=run_id, error=describe(exc))

    async def publish_retry(self, message: JobMessage) -> None:
        """The row is abandoned already (committed): publish its retry until the broker takes it. A run abandoned
        during a broker restart would otherwise lose its retry to the first publish on a closed channel."""
        await backoff.forever(
            "watchdog retry",
            lambda: self.publisher.to_retry(message, 0.0),
            cap_sec=self.cap_sec,
            errors=AMQP_ERRORS,
            event="watchdog.retry_publish_failed",
            job_id=message.job_id,
            run_id=str(message.run_id),
        )
