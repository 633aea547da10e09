"""The slot ledger: every slot the schedule in force names while the job is enabled gets a row in
`scheduler.job_runs`, the ones that did not run included. Where a gap is found, its rows are written in one
statement (ON CONFLICT DO NOTHING: a slot that has a run keeps it) and the job's catch-up policy
(`shared.catchup`) sends the slots it wants run after all.

    late_message    the run protocol: a chain message that misfired, or whose next slot (counted from now)
                    jumps over slots of the schedule: `skipped_misfire` rows (cause misfire / jumped)
    lost_chain      the watchdog's reseed: the slots between the lost message and now: `missed` rows
    replaced        seed or set replaced the chain while its message was on its way: `missed` rows
    paused          resume (by hand or at the end of a timed pause): the slots the pause kept: `paused` rows

A catch-up run is a backfill message of the slot (manual, carrying the epoch) that waits for the job's lock
(`wait_for_lock`) until it expires: it revives the slot's gap row, so the slot runs once, and a slot whose
catch-up never ran keeps its gap row. A pause, resume or reseed in between makes it stale (new epoch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import structlog

from shared import catchup
from shared.catchup import CatchupPlan, Gap
from shared.dependencies import AMQP_ERRORS, DB_ERRORS, describe
from shared.messages import backfill_message
from shared.metrics import Metrics
from shared.publisher import Publisher
from shared.schedule import Schedule
from shared.store import ledger as ledger_store
from shared.store.jobs import JobRow
from shared.vocabulary import GapCause, ReseedReason, RunStatus

log = structlog.get_logger("shared.ledger")

WATCHDOG = "watchdog"  # the worker column of gap rows the watchdog writes, and the audit actor of a timed resume


@dataclass(frozen=True, slots=True)
class GapRecorded:
    """What recording one gap did: the slots it wrote a row for, and the catch-up it sent."""

    written: tuple[datetime, ...]
    catchup: CatchupPlan

    @property
    def count(self) -> int:
        return len(self.written)


NOTHING = GapRecorded((), catchup.NO_CATCHUP)


async def record(
    conn: asyncpg.Connection,
    publisher: Publisher,
    job: JobRow,
    epoch: int,
    gap: Gap,
    status: RunStatus,
    cause: GapCause,
    detail: str,
    now: datetime,
    *,
    worker: str | None,
    metrics: Metrics | None = None,
    also_missed: Sequence[datetime] = (),
    catch_up: bool = True,
) -> GapRecorded:
    """Write the gap's rows, count them, and (unless not `catch_up`) send the catch-up of the written slots and
    of `also_missed` (slots already recorded as not run by the caller)."""
    written = await ledger_store.insert_gaps(conn, job.scope, job.job_id, epoch, gap.slots, status, detail, worker)
    if metrics is not None and written:
        metrics.slots_not_run.labels(job.scope, job.job_id, cause.value).inc(len(written))
    missed = [*written, *also_missed] if catch_up else []
    plan = catchup.plan(job.catchup, missed, job.catchup_max, job.catchup_rate_per_sec)
    await send_catchup(publisher, job, epoch, plan, now)
    if metrics is not None and plan.runs:
        metrics.catchup_runs.labels(job.scope, job.job_id).inc(len(plan.runs))
    if written or plan.runs:
        log.warning(
            "ledger.gap_recorded",
            job_id=job.job_id,
            status=status.value,
            cause=cause.value,
            slots=len(written),
            first=written[0].isoformat() if written else None,
            last=written[-1].isoformat() if written else None,
            truncated=gap.truncated,
            catchup=job.catchup,
            catchup_runs=len(plan.runs),
        )
    return GapRecorded(tuple(written), plan)


async def send_catchup(publisher: Publisher, job: JobRow, epoch: int, plan: CatchupPlan, now: datetime) -> None:
    """One message per slot to run: the first to the work queue, the next ones through the retry queue, each
    `delay_sec` later (the rate). Each waits for the job's lock until its expiry (`catchup.wait_limit_sec`)."""
    if not plan.runs:
        return
    expires_at = now + timedelta(seconds=catchup.wait_limit_sec(plan, job.timeout_sec, job.misfire_grace_sec))
    for run in plan.runs:
        message = backfill_message(job.scope, job.job_id, epoch, run.slot, now).model_copy(
            update={"wait_for_lock": True, "expires_at": expires_at}
        )
        if run.delay_sec <= 0:
            await publisher.to_work(job.queue, message)
        else:
            await publisher.to_retry(message, run.delay_sec)


async def late_message(
    conn: asyncpg.Connection,
    publisher: Publisher,
    metrics: Metrics,
    worker: str,
    job: JobRow,
    epoch: int,
    slot: datetime,
    now: datetime,
    own_missed: bool,
) -> GapRecorded:
    """A chain message for `slot` that posted its next slot counted from `now`: the slots in (slot, now] were
    jumped over (`skipped_misfire`, cause jumped); with `own_missed`, `slot` itself was recorded as a misfire.
    On the run's path: a failure other than a server gone is logged and the run goes on without the rows."""
    try:
        return await _late_message(conn, publisher, metrics, worker, job, epoch, slot, now, own_missed)
    except (*DB_ERRORS, *AMQP_ERRORS):
        raise
    except Exception as exc:
        log.error("ledger.gap_not_recorded", job_id=job.job_id, slot=slot.isoformat(), error=describe(exc))
        return NOTHING


async def _late_message(
    conn: asyncpg.Connection,
    publisher: Publisher,
    metrics: Metrics,
    worker: str,
    job: JobRow,
    epoch: int,
    slot: datetime,
    now: datetime,
    own_missed: bool,
) -> GapRecorded:
    plan = job.schedule
    if plan is None:
        return NOTHING
    if own_missed:
        metrics.slots_not_run.labels(job.scope, job.job_id, GapCause.MISFIRE.value).inc()
    late = (now - slot).total_seconds()
    detail = f"jumped over: the message of slot {slot.isoformat()} came {late:.3f} s late; the chain went on from then"
    gap = catchup.gap_slots(plan, slot, now, after=True)
    also = (slot,) if own_missed else ()
    return await record(
        conn, publisher, job, epoch, gap, RunStatus.SKIPPED_MISFIRE, GapCause.JUMPED, detail, now,
        worker=worker, metrics=metrics, also_missed=also,
    )  # fmt: skip


async def lost_chain(
    conn: asyncpg.Connection,
    publisher: Publisher,
    metrics: Metrics,
    job: JobRow,
    epoch: int,
    reason: ReseedReason,
    now: datetime,
) -> GapRecorded:
    """After the watchdog reseeded `job` (its row as read before) under `epoch` at `now`: the slots from the lost
    message's slot to now are `missed`. A chain never seeded has no gap."""
    plan = job.schedule
    if plan is None or job.next_due_at is None:
        return NOTHING
    gap = catchup.gap_slots(plan, catchup.gap_start(job.next_due_at, job.jitter_sec, now), now)
    detail = f"chain lost ({reason.value}): the message due {job.next_due_at.isoformat()} never came; reseeded"
    return await record(
        conn, publisher, job, epoch, gap, RunStatus.MISSED, GapCause.CHAIN_LOST, detail, now,
        worker=WATCHDOG, metrics=metrics,
    )  # fmt: skip


async def replaced(
    conn: asyncpg.Connection,
    publisher: Publisher,
    before: JobRow | None,
    enabled: bool,
    epoch: int,
    now: datetime,
    *,
    worker: str | None,
) -> GapRecorded:
    """After seed or set replaced the chain of `before` (the row as it was) under `epoch` at `now`, the job now
    `enabled` or not. Still enabled: the slot its waiting message carried, if already due, and any after it up to
    now, are `missed` (that message is stale now). Enabled again (the jobs file): its `paused` rows, as on resume.
    Disabled by the file: its pause starts here."""
    plan = _schedule_of(before)
    if before is None or plan is None or before.reschedule_mode != "queue":
        return NOTHING
    if before.enabled and not enabled:
        start = catchup.gap_start(before.next_due_at, before.jitter_sec, now)
        await ledger_store.mark_paused(conn, before.scope, before.job_id, None, start)
        return await pausing(conn, publisher, before, epoch, start, "disabled by the jobs file", now, worker=worker)
    if not before.enabled:
        if not enabled:
            return NOTHING
        recorded = await paused(conn, publisher, before, epoch, now, worker=worker)
        await ledger_store.clear_pause(conn, before.scope, before.job_id)
        return recorded
    if before.next_due_at is None or before.next_due_at > now:
        return NOTHING  # the usual case: the waiting slot is still ahead and the new chain posts it again
    gap = catchup.gap_slots(plan, catchup.gap_start(before.next_due_at, before.jitter_sec, now), now)
    detail = f"chain replaced (seed or set) while the message due {before.next_due_at.isoformat()} was on its way"
    return await record(
        conn, publisher, before, epoch, gap, RunStatus.MISSED, GapCause.REPLACED, detail, now, worker=worker
    )


def _schedule_of(job: JobRow | None) -> Schedule | None:
    """The schedule of a stored row, None for none or for one that no longer builds (a cron refused by newer
    rules, stored before them: `set` repairs it, and its old slots are not known)."""
    if job is None:
        return None
    try:
        return job.schedule
    except ValueError:
        return None


def pause_start(job: JobRow, now: datetime) -> datetime | None:
    """The first slot a pause of `job` (its row before) keeps from running: the chain's waiting slot (None: the
    job was paused already, or has no chain)."""
    if not job.enabled or job.reschedule_mode != "queue" or _schedule_of(job) is None:
        return None
    return catchup.gap_start(job.next_due_at, job.jitter_sec, now)


async def pausing(
    conn: asyncpg.Connection,
    publisher: Publisher,
    job: JobRow,
    epoch: int,
    paused_from: datetime | None,
    note: str | None,
    now: datetime,
    *,
    worker: str | None,
) -> GapRecorded:
    """At the pause of `job` (its row before): the slots already due whose message is still on its way (it will
    be dropped: the job is disabled) are `paused` now; the rest of the pause is written on resume. No catch-up
    here: the job is paused."""
    plan = _schedule_of(job)
    if plan is None or paused_from is None:
        return NOTHING
    gap = catchup.gap_slots(plan, paused_from, now)
    detail = "paused" + (f": {note}" if note else "")
    return await record(
        conn, publisher, job, epoch, gap, RunStatus.PAUSED, GapCause.PAUSED, detail, now, worker=worker,
        catch_up=False,
    )  # fmt: skip


async def paused(
    conn: asyncpg.Connection,
    publisher: Publisher,
    job: JobRow,
    epoch: int,
    now: datetime,
    *,
    worker: str | None,
    metrics: Metrics | None = None,
) -> GapRecorded:
    """On resume of `job` (its row as it was while paused) under the new `epoch` at `now`: the slots from the
    first one the pause kept from running to now are `paused`."""
    plan = _schedule_of(job)
    if plan is None or job.paused_from is None or job.reschedule_mode != "queue":
        return NOTHING
    gap = catchup.gap_slots(plan, job.paused_from, now)
    detail = "paused" + (f": {job.pause_note}" if job.pause_note else "")
    return await record(
        conn, publisher, job, epoch, gap, RunStatus.PAUSED, GapCause.PAUSED, detail, now,
        worker=worker, metrics=metrics,
    )  # fmt: skip
