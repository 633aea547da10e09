"""`backfill JOB --from T --to T`: run each past slot in the range once.

One manual message per slot, carrying the job's current epoch and the slot as `scheduled_for`. The worker
derives the run_id from the slot and the claim is unique per (scope, job, slot, attempt) across epochs, so a
slot that already has a run (by the chain or an earlier backfill) is not run again: backfilling twice is safe.
"""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import UTC, datetime

import asyncpg

from scheduler_seed import render
from scheduler_seed.errors import UsageError
from scheduler_seed.inputs import argtype, instant, positive_int
from scheduler_seed.jobref import existing_job
from scheduler_seed.session import Session
from shared import schedule, topology
from shared.messages import JobMessage, TriggerSource
from shared.seeding import declare_for
from shared.store.jobs import JobRow

DEFAULT_MAX_SLOTS = 1000


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "backfill",
        parents=[common],
        help="run each past slot of a time range once",
        description="T is ISO 8601 (read in the job's time zone without an offset), 'now', or 'now-2h'. "
        "Slots that already have a run are not run again.",
    )
    p.add_argument("job", metavar="JOB")
    p.add_argument("--from", dest="start", required=True, metavar="T", help="first instant of the range")
    p.add_argument("--to", dest="end", required=True, metavar="T", help="last instant of the range (not future)")
    p.add_argument("--max-slots", type=argtype(positive_int), default=DEFAULT_MAX_SLOTS, help="refuse larger ranges")
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
    """Slots of the range that already have a first-attempt run row, with its status."""
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
    if todo:
        await declare_for(await session.channel(), job)
        publisher = await session.publisher()
        for slot in todo:
            await publisher.to_work(job.queue, slot_message(job, slot, now))
    queue = topology.work_queue_name(session.scope, job.queue)
    span = f"{render.when(slots[0])} .. {render.when(slots[-1])}" if slots else "the range"
    print(f"published {len(todo)} of {len(slots)} slots of {job.job_id!r} ({span}) to {queue}")
    if done:
        counts = ", ".join(f"{status} {n}" for status, n in sorted(Counter(done.values()).items()))
        print(f"{len(done)} slots already have a run and are not run again ({counts})")
    return 0
