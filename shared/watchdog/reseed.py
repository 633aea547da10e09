"""Sweep: lost chains (reseed). An enabled chain job served by a live worker whose next message is overdue (or
that never had one, a grace after its row was written) lost its chain (a message dropped while dead-lettering, a
purged queue): it is replaced by a new epoch (`chain.replace_if_overdue`, which decides again on the row under the
chain lock). The slots from the lost message's to now get `missed` rows in the slot ledger, and the job's catch-up
policy runs some of them.

A job row that no longer makes a job (a cron or timezone broken in SQL) is skipped and logged once; the other jobs
are reseeded as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import asyncpg
import structlog
from aio_pika.abc import AbstractChannel

from shared import chain, ledger
from shared.metrics import Metrics
from shared.publisher import Publisher
from shared.store import jobs as jobs_store
from shared.store import workers
from shared.store.jobs import BadJob, JobRow
from shared.vocabulary import ReseedReason
from shared.watchdog.loop import each_alone

log = structlog.get_logger("shared.watchdog")


def lost_chains(jobs: list[JobRow], live_queues: set[str], now: datetime, lost_after: timedelta) -> list[JobRow]:
    """Enabled chain jobs served by a live worker whose next message is overdue by more than `lost_after`, or
    that have no next message at all and were last written more than `lost_after` ago (a row the seeder or the
    control plane wrote a moment ago gets its chain from them: reseeding it then would only race them). A job
    nobody serves is not lost: its message waits in the queue."""
    return [
        job
        for job in jobs
        if job.enabled
        and job.has_chain
        and job.queue in live_queues
        and (job.next_due_at or job.updated_at) + lost_after < now
    ]


def reseed_reason(job: JobRow) -> ReseedReason:
    return ReseedReason.NEVER_SEEDED if job.next_due_at is None else ReseedReason.OVERDUE


class LostChains:
    """Reseeds lost chains, one job at a time: a job that cannot be reseeded does not hold up the others."""

    name = "lost_chains"

    def __init__(
        self,
        scope: str,
        channel: AbstractChannel,
        publisher: Publisher,
        metrics: Metrics,
        *,
        lost_after_sec: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.scope = scope
        self.channel = channel
        self.publisher = publisher
        self.metrics = metrics
        self.lost_after = timedelta(seconds=lost_after_sec)
        self.clock = clock
        self.bad: dict[str, str] = {}  # job_id -> the error last logged for it

    async def run(self, conn: asyncpg.Connection) -> None:
        """One sweep."""
        now = self.clock()
        live = await workers.live_queues(conn, self.scope)
        jobs, bad = await jobs_store.list_jobs_checked(conn, self.scope)
        self.note_bad(bad)
        for job in lost_chains(jobs, live, now, self.lost_after):
            with each_alone("chain.reseed_failed", job_id=job.job_id):
                await self.reseed(conn, job)

    def note_bad(self, bad: Sequence[BadJob]) -> None:
        """Log each bad job once (not every pass), and once more when it is good again."""
        current = {b.job_id: b.error for b in bad}
        for job_id, error in current.items():
            if self.bad.get(job_id) != error:
                log.error("job.definition_invalid", job_id=job_id, error=error, skipped="chain reseed")
        for job_id in self.bad.keys() - current.keys():
            log.info("job.definition_valid_again", job_id=job_id)
        self.bad = current

    async def reseed(self, conn: asyncpg.Connection, job: JobRow) -> None:
        """Replace the chain of `job` if, on the row as committed and under the chain lock, it is still lost."""
        reason = reseed_reason(job)
        # the list was read at the start of the pass: decide again on the row, under the chain lock, now
        at = self.clock()
        replaced = await chain.replace_if_overdue(conn, self.channel, self.publisher, job, at, at - self.lost_after)
        if replaced is None:
            log.info("chain.reseed_not_needed", job_id=job.job_id, reason="extended_meanwhile")
            return
        epoch, slot = replaced
        self.metrics.reseeds.labels(self.scope, job.job_id, reason.value).inc()
        await ledger.lost_chain(conn, self.publisher, self.metrics, job, epoch, reason, at)  # `missed` rows
        log.warning(
            "chain.reseeded",
            job_id=job.job_id,
            reason=reason.value,
            was_due=None if job.next_due_at is None else job.next_due_at.isoformat(),
            epoch=epoch,
            first_slot=None if slot is None else slot.scheduled_for.isoformat(),
        )
