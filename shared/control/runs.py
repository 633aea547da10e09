"""Run actions: run now (refused while the job runs, the 409 of `000_655093b4cfd23bb8.txt`), backfill a
range of past slots, and the job's latest runs.

Backfill sends one manual message per slot carrying the job's current epoch and the slot as `scheduled_for`.
The worker derives the run_id from the slot and the claim is unique per (scope, job, slot, attempt) across
epochs, so a slot that already has a run is not run again: backfilling twice is safe. Waited for, slots go one
after another, each published once the job (and its lock group) is idle: a job that allows one run at a time
records a slot whose message finds the lock taken as `skipped_locked`, and that slot could not be backfilled
again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared import schedule, topology
from shared.control import follow
from shared.control.errors import ActionFailed, InvalidRequest, RunningNow
from shared.control.instants import instant
from shared.control.results import BackfillPlan, BackfillResult, RunOutcome, RunQueued, RunRecord
from shared.messages import backfill_message, manual_message
from shared.publisher import Publisher
from shared.store import history, workers
from shared.store import jobs as jobs_store
from shared.store import ledger as ledger_store
from shared.store.jobs import JobRow

DEFAULT_MAX_SLOTS = 1000


async def refuse_if_running(conn: asyncpg.Connection, job: JobRow) -> None:
    """RunningNow (with the live run's id, worker and start) when the job has a live run."""
    live = await follow.live_runs(conn, job.scope, [job.job_id])
    if live:
        run = live[0]
        raise RunningNow(job.job_id, run.run_id, run.status, run.worker, run.since)


async def run_now(
    conn: asyncpg.Connection,
    publisher: Publisher,
    job: JobRow,
    params: dict[str, Any],
    now: datetime,
    queue: bool = False,
) -> RunQueued:
    """Publish one manual message to the job's work queue (its queues must be declared). With `queue`, the run
    waits for a run of the job (or its lock group) in its way instead of being skipped."""
    message = manual_message(job.job_id, params, now, wait_for_lock=queue).model_copy(update={"scope": job.scope})
    await publisher.to_work(job.queue, message)
    live = job.queue in await workers.live_queues(conn, job.scope)
    return RunQueued(job.job_id, message.run_id, topology.work_queue_name(job.scope, job.queue), live)


async def follow_run(
    conn: asyncpg.Connection,
    job: JobRow,
    queued: RunQueued,
    scheduled_for: datetime,
    within_sec: float | None,
    on_retry: Callable[[RunOutcome], None] | None,
) -> RunOutcome:
    """Wait for a queued manual run (and its retries) to finish; ActionFailed when `within_sec` passes first."""
    deadline = time.monotonic() + (within_sec if within_sec is not None else follow.patience(job))
    find = follow.by_run_id(job, queued.run_id, scheduled_for)
    return await follow.wait_for_outcome(conn, find, job, deadline, on_retry)


def slots_in_range(
    job: JobRow,
    start: datetime | str,
    end: datetime | str,
    now: datetime,
    max_slots: int,
    names: tuple[str, str] = ("from", "to"),
) -> list[datetime]:
    """The job's slots in [start, end] (text is read by `instants.instant` in the job's time zone).
    InvalidRequest for an unscheduled job, an end in the future, a range backwards or too many slots;
    `names` are what the caller calls the two ends (the CLI's `--from`, `--to`)."""
    if job.schedule is None or not job.has_chain:
        raise InvalidRequest(f"job {job.job_id!r} has no schedule (it runs on events and by hand): nothing to backfill")
    field = names[0]
    try:
        first = start if isinstance(start, datetime) else instant(start, now, job.timezone)
        field = names[1]
        last = end if isinstance(end, datetime) else instant(end, now, job.timezone)
        if last > now:
            raise ValueError(
                f"{names[1]} {_shown(end)} is in the future: backfill runs past slots, the chain runs the rest"
            )
        if first > last:
            field = names[0]
            raise ValueError(f"{names[0]} {_shown(start)} is after {names[1]} {_shown(end)}")
        return schedule.slots_between(job.schedule, first, last, max_slots)
    except ValueError as exc:
        raise InvalidRequest(f"backfill: {exc}", field) from None


def _shown(value: datetime | str) -> str:
    return repr(value if isinstance(value, str) else value.isoformat())


async def plan_backfill(conn: asyncpg.Connection, job: JobRow, slots: list[datetime]) -> BackfillPlan:
    return BackfillPlan(job.job_id, slots, await history.slots_recorded(conn, job.scope, job.job_id, slots))


async def backfill(
    conn: asyncpg.Connection,
    publisher: Publisher,
    job: JobRow,
    plan: BackfillPlan,
    wait: bool,
    on_slot: Callable[[datetime, RunOutcome], None] | None,
    on_retry: Callable[[RunOutcome], None] | None,
) -> BackfillResult:
    """Run the plan's slots that have no run yet: all published at once, or (`wait`) one after another, each
    followed to its outcome. Waiting needs a live worker on the job's queue (ActionFailed otherwise)."""
    todo = plan.todo
    if not wait:
        for slot in todo:
            await publisher.to_work(job.queue, backfill_message(job.scope, job.job_id, job.epoch, slot, _now()))
        return BackfillResult(plan, len(todo), {})
    if todo and job.queue not in await workers.live_queues(conn, job.scope):
        raise ActionFailed(
            f"no live worker consumes queue {job.queue!r}: backfill runs slots one after another and needs one "
            "(or use --no-wait to only publish them)"
        )
    peers = await jobs_store.lock_peers(conn, job.scope, job.job_id, job.lock_group)
    outcomes: dict[datetime, RunOutcome] = {}
    for slot in todo:
        deadline = time.monotonic() + follow.patience(job)
        await follow.wait_until_idle(conn, job.scope, peers, deadline)
        await publisher.to_work(job.queue, backfill_message(job.scope, job.job_id, job.epoch, slot, _now()))
        find = follow.by_slot(job.scope, job.job_id, slot)
        outcomes[slot] = await follow.wait_for_outcome(conn, find, job, deadline, on_retry)
        if on_slot is not None:
            on_slot(slot, outcomes[slot])
    return BackfillResult(plan, len(todo), outcomes)


def _now() -> datetime:
    return datetime.now(UTC)


async def recent(conn: asyncpg.Connection, scope: str, job_id: str, limit: int) -> list[RunRecord]:
    """The job's latest runs, newest slot first."""
    keys = RunRecord.__slots__
    return [RunRecord(**{k: r[k] for k in keys}) for r in await history.recent(conn, scope, job_id, limit)]


async def gaps(conn: asyncpg.Connection, scope: str, job_id: str, limit: int) -> list[RunRecord]:
    """The job's slots that got no run (the slot ledger's gap rows), newest slot first."""
    keys = RunRecord.__slots__
    return [RunRecord(**{k: r[k] for k in keys}) for r in await ledger_store.gaps(conn, scope, job_id, limit)]
