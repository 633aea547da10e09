"""Sweep: timed pauses. A job paused with `pause JOB --until TIME` is resumed here once that time has come, as
`resume` does it by hand (fresh chain, `paused` rows in the slot ledger, the job's catch-up policy), through the
control layer, so the audit shows the resume with the actor `watchdog`. The leader alone runs it (one resume per
job): there is still no central process.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import asyncpg
import structlog
from aio_pika.abc import AbstractChannel

from shared.control.api import Control
from shared.dependencies import classify, describe
from shared.ledger import WATCHDOG
from shared.metrics import Metrics
from shared.store import ledger as ledger_store
from shared.vocabulary import GapCause

log = structlog.get_logger("shared.watchdog")


class TimedResume:
    """Resumes the paused jobs whose `paused_until` has passed, one at a time (one failing does not hold up the
    others)."""

    name = "timed_resume"

    def __init__(
        self, scope: str, channel: AbstractChannel, metrics: Metrics, *, clock: Callable[[], datetime]
    ) -> None:
        self.scope = scope
        self.channel = channel
        self.metrics = metrics
        self.clock = clock

    async def run(self, conn: asyncpg.Connection) -> None:
        """One sweep."""
        for job in await ledger_store.due_resumes(conn, self.scope, self.clock()):
            assert job.paused_until is not None
            control = Control.borrowing(conn, self.channel, self.scope, actor=WATCHDOG)
            note = f"timed pause ended ({job.paused_until.isoformat()})"
            try:
                change = await control.resume(job.job_id, note=note)
            except Exception as exc:
                if classify(exc) is not None:
                    raise  # a server is gone: every other job would fail the same way
                log.error("job.timed_resume_failed", job_id=job.job_id, error=describe(exc))
                continue
            if change.gaps:
                self.metrics.slots_not_run.labels(self.scope, job.job_id, GapCause.PAUSED.value).inc(change.gaps)
            if change.catchup:
                self.metrics.catchup_runs.labels(self.scope, job.job_id).inc(change.catchup)
            log.warning(
                "job.timed_resume",
                job_id=job.job_id,
                paused_until=job.paused_until.isoformat(),
                epoch=change.epoch,
                paused_slots=change.gaps,
                catchup_runs=change.catchup,
            )
