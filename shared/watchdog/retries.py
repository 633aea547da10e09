"""Sweep: lost retries. A failed or abandoned attempt with attempts left records its retry (the message and when it
is due) before the message is published. A retry whose next attempt has no row `lost_after_sec` after it was due
never arrived: the worker died between its record and the publish, or RabbitMQ lost it on the way (dead-lettering
out of the retry queue is at most once on classic queues). It is published again, the same message (same run id:
a copy that arrives after all is a duplicate of that row), unless it is moot: the job was deleted, paused (a paused
job's messages are dropped) or reseeded (a new epoch: the new chain carries the job on). While no live worker
consumes the job's queue, nothing is published: the retry may be waiting there. After `MAX_REPOSTS`
a retry that keeps not arriving is given up, loudly: something consumes and drops it, it is not lost."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

import asyncpg
import pydantic
import structlog

from shared.messages import JobMessage
from shared.metrics import Metrics
from shared.publisher import Publisher
from shared.store import jobs as jobs_store
from shared.store import retries, workers
from shared.store.jobs import JobRow
from shared.store.retries import OwedRetry
from shared.watchdog.loop import each_alone

log = structlog.get_logger("shared.watchdog")

MAX_REPOSTS = 3
"""How often one retry is published again before the sweep gives up on it."""


class Fate(StrEnum):
    ARRIVED = "arrived"  # the next attempt's row is there: nothing is owed
    MOOT = "moot"  # the job changed since: the retry would be dropped
    GIVEN_UP = "given_up"  # published again MAX_REPOSTS times and still no row
    WAIT = "wait"  # no live worker consumes the job's queue: the retry may well be waiting there
    REPOST = "repost"


def fate(owed: OwedRetry, message: JobMessage | None, job: JobRow | None, consumed: bool = True) -> tuple[Fate, str]:
    """What the sweep does with an overdue retry (`message`: the stored one, None if it no longer validates;
    `consumed`: a live worker consumes the job's queue) and why."""
    if owed.arrived:
        return Fate.ARRIVED, "the next attempt has a row"
    if message is None:
        return Fate.MOOT, "the stored retry message no longer validates"
    if job is None:
        return Fate.MOOT, "the job was deleted"
    if not job.enabled:
        return Fate.MOOT, "the job is paused"
    if message.epoch is not None and message.epoch != job.epoch:
        return Fate.MOOT, "the job was reseeded since (a new chain)"
    if not consumed:
        return Fate.WAIT, "no live worker consumes the job's queue"
    if owed.reposts >= MAX_REPOSTS:
        return Fate.GIVEN_UP, f"published again {owed.reposts} times and no attempt arrived"
    return Fate.REPOST, "no attempt arrived"


def stored_message(owed: OwedRetry) -> JobMessage | None:
    try:
        return JobMessage.model_validate(owed.message)
    except pydantic.ValidationError:
        return None


class LostRetries:
    """Publishes again the retries that never arrived."""

    name = "lost_retries"

    def __init__(
        self,
        scope: str,
        publisher: Publisher,
        metrics: Metrics,
        *,
        lost_after_sec: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.scope = scope
        self.publisher = publisher
        self.metrics = metrics
        self.lost_after_sec = lost_after_sec
        self.clock = clock

    async def run(self, conn: asyncpg.Connection) -> None:
        """One sweep."""
        overdue = await retries.overdue(conn, self.scope, self.lost_after_sec)
        if not overdue:
            return
        live = await workers.live_queues(conn, self.scope)
        jobs: dict[str, JobRow | None] = {}
        for owed in overdue:
            if owed.job_id not in jobs:
                jobs[owed.job_id] = await jobs_store.get_job(conn, self.scope, owed.job_id)
            job = jobs[owed.job_id]
            with each_alone("watchdog.lost_retry_failed", job_id=owed.job_id, run_id=str(owed.run_id)):
                await self._settle(conn, owed, job, consumed=job is not None and job.queue in live)

    async def _settle(self, conn: asyncpg.Connection, owed: OwedRetry, job: JobRow | None, consumed: bool) -> None:
        message = stored_message(owed)
        what, why = fate(owed, message, job, consumed)
        if what is Fate.WAIT:
            return  # asked again on the next pass
        context = {"job_id": owed.job_id, "run_id": str(owed.run_id), "reason": why}
        if what is Fate.REPOST:
            assert message is not None
            await self.publisher.to_retry(message, 0.0)
            await retries.reposted(conn, owed, self.clock())
            self.metrics.retries_reposted.labels(self.scope, owed.job_id).inc()
            log.warning("retry.reposted", next_attempt=message.attempt, reposts=owed.reposts + 1, **context)
            return
        await retries.settle(conn, owed)
        if what is Fate.MOOT:
            log.info("retry.moot", **context)
        elif what is Fate.GIVEN_UP:
            log.error("retry.given_up", **context)
