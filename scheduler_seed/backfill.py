"""`backfill JOB --from T --to T`: run each past slot in the range once (the rules are in
`shared.control.runs`: slots that already have a run are not run again, so backfilling twice is safe).
Slots go one after another, each followed to its outcome; `--no-wait` only publishes."""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import datetime

from scheduler_seed import render
from scheduler_seed.inputs import argtype, positive_int
from scheduler_seed.run_now import describe_outcome, say_retry
from shared import topology
from shared.control import Control
from shared.control.results import RunOutcome
from shared.control.runs import DEFAULT_MAX_SLOTS


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


def say_slot(slot: datetime, outcome: RunOutcome) -> None:
    print(f"slot {render.when(slot)}: {describe_outcome(outcome)}")


async def execute(args: argparse.Namespace, control: Control) -> int:
    plan = await control.plan_backfill(args.job, args.start, args.end, args.max_slots, names=("--from", "--to"))
    slots, done, todo = plan.slots, plan.done, plan.todo
    span = f"{render.when(slots[0])} .. {render.when(slots[-1])}" if slots else "the range"
    print(f"{len(slots)} slots of {plan.job_id!r} in {span}; {len(todo)} to run")
    if done:
        counts = ", ".join(f"{status} {n}" for status, n in sorted(Counter(done.values()).items()))
        print(f"{len(done)} slots already have a run and are not run again ({counts})")
    if not todo:
        return 0
    result = await control.backfill(plan, wait=not args.no_wait, on_slot=say_slot, on_retry=say_retry)
    if args.no_wait:
        job = await control.job(args.job)
        print(f"published {result.published} slots to {topology.work_queue_name(control.scope, job.queue)}")
        return 0
    failed = result.published - result.succeeded
    print(f"published {result.published} of {len(slots)} slots: {result.succeeded} succeeded, {failed} did not")
    return 0 if failed == 0 else 1
