"""`backfill JOB --from T --to T`: run each past slot in the range once.

One manual message per slot, carrying the job's current epoch and the slot as `scheduled_for`. The worker
derives the run_id from the slot and the claim is unique per (scope, job, slot, attempt) across epochs, so a
slot that already has a run (by the chain or an earlier backfill) is not run again: backfilling twice is safe.

Slots go one after another, each published once the job (and its lock group) is idle and followed to its
outcome: a job that allows one run at a time records a slot whose message finds the lock taken as
`skipped_locked`, and that slot could never be backfilled again. `--no-wait` only publishes.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from datetime import UTC, datetime

import asyncpg

from scheduler_seed import render, tracking
from scheduler_seed.errors import CliError, UsageError
from scheduler_seed.inputs import argtype, instant, positive_int
from scheduler_seed.jobref import existing_job
from scheduler_seed.session import Session
from shared import schedule, topology
from shared.messages import JobMessage
from shared.publisher import Publisher
from shared.seeding import declare_for
from shared.store import workers
from shared.store.jobs import JobRow
from shared.vocabulary import RunStatus, TriggerSource

DEFAULT_MAX_SLOTS = 1000


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "backfill",
        parents=[common],
        help="run each past slot of a time range once",
        description="T is ISO 8601 (read in the job's time zone when it has no offset), 'now', or 'now-2h'. "
        "Slots run one after another; slots that already have a run are not run again. "
        "Exit code 0 when every slot run succeeded, 1 otherwise.",
    )
    p.add_argument("job", metavar="JOB")
    p.add_argument("--from", dest="start", required=True, metavar="T", help="first instant of the range")
    p.add_argument("--to", dest="end", required=True, metavar="T", help="last instant of the range (not future)")
    p.add_argument("--max-slots", type=argtype(positive_int), default=DEFAULT_MAX_SLOTS, help="refuse larger ranges")
    p.add_argument("--no-wait", action="store_true", help="publish every slot at once and do not follow the runs")
    p.set_defaults(execute=execute)


def slots_in_range(job: JobRow, start_text: str, end_text: str, now: datetime, max_slots: int) -> list[datetime]:
    """The job's slots in [from, to]; a usage error for an unscheduled job, a future end or too many slots."""
    if job.schedule is None or not job.has_chain:
        raise UsageError(f"job {job.job_id!r} has no schedule (it runs on events and by hand): nothing to backfill")
    try:
        start, end = instant(start_text, now, job.timezone), instant(end_text, now, job.timezone)
        if end > now:
            raise ValueError(f"--to {end_text!r} is in the future: backfill runs past slots, the chain runs the rest")
        if start > end:
            raise ValueError(f"--from {start_text!r} is after --to {end_text!r}")
        return schedule.slots_between(job.schedule, start, end, max_slots)
    except ValueError as exc:
        raise UsageError(f"backfill: {exc}") from None


def slot_message(job: JobRow, slot: datetime, now: datetime) -> JobMessage:
    return JobMessage(
        job_id=job.job_id,
        trigger_source=TriggerSource.MANUAL,
        scope=job.scope,
        epoch=job.epoch,
        scheduled_for=slot,
        run_id=schedule.derive_run_id(job.scope, job.job_id, job.epoch, slot, 1),
        published_at=now,
    )


async def recorded(conn: asyncpg.Connection, job: JobRow, slots: list[datetime]) -> dict[datetime, str]:
    """Slots of the range that already have a first-attempt run row (any epoch), with its status."""
    records = await conn.fetch(
        "SELECT scheduled_for, status FROM scheduler.job_runs WHERE scope = $1 AND job_id = $2 AND attempt = 1"
        " AND epoch IS NOT NULL AND scheduled_for = ANY($3::timestamptz[])",
        job.scope,
        job.job_id,
        slots,
    )
    return {r["scheduled_for"]: r["status"] for r in records}


async def execute(args: argparse.Namespace, session: Session) -> int:
    conn = await session.db()
    job = await existing_job(conn, session.scope, args.job)
    now = datetime.now(UTC)
    slots = slots_in_range(job, args.start, args.end, now, args.max_slots)
    done = await recorded(conn, job, slots)
    todo = [slot for slot in slots if slot not in done]
    span = f"{render.when(slots[0])} .. {render.when(slots[-1])}" if slots else "the range"
    print(f"{len(slots)} slots of {job.job_id!r} in {span}; {len(todo)} to run")
    if done:
        counts = ", ".join(f"{status} {n}" for status, n in sorted(Counter(done.values()).items()))
        print(f"{len(done)} slots already have a run and are not run again ({counts})")
    if not todo:
        return 0
    await declare_for(await session.channel(), job)
    publisher = await session.publisher()
    if args.no_wait:
        for slot in todo:
            await publisher.to_work(job.queue, slot_message(job, slot, now))
        print(f"published {len(todo)} slots to {topology.work_queue_name(session.scope, job.queue)}")
        return 0
    if job.queue not in await workers.live_queues(conn, session.scope):
        raise CliError(
            f"no live worker consumes queue {job.queue!r}: backfill runs slots one after another and needs one "
            "(or use --no-wait to only publish them)"
        )
    failed = 0
    for slot in todo:
        failed += not await run_slot(conn, publisher, job, slot)
    print(f"published {len(todo)} of {len(slots)} slots: {len(todo) - failed} succeeded, {failed} did not")
    return 0 if failed == 0 else 1


async def run_slot(conn: asyncpg.Connection, publisher: Publisher, job: JobRow, slot: datetime) -> bool:
    """Publish one slot once the job and its lock group are idle, and follow it to its outcome."""
    deadline = time.monotonic() + tracking.patience(job)
    await tracking.wait_until_idle(conn, job.scope, await tracking.lock_peers(conn, job), deadline)
    await publisher.to_work(job.queue, slot_message(job, slot, datetime.now(UTC)))
    find = tracking.by_slot(job.scope, job.job_id, slot)
    outcome = await tracking.wait_for_outcome(conn, find, job, deadline, print)
    print(f"slot {render.when(slot)}: {tracking.describe_outcome(outcome)}")
    return bool(outcome["status"] == RunStatus.SUCCEEDED)
