"""`run-now JOB`: one manual message to the job's work queue, and with --wait its outcome.

A job that is running now (a claimed or running row whose worker is alive) is refused with exit code 3
unless --queue: the 409 of `000_655093b4cfd23bb8.txt`. The message carries an explicit run_id, so --wait
follows exactly this run (and its retries) in `scheduler.job_runs`.
"""

from __future__ import annotations

import argparse

from scheduler_seed import render, selection
from scheduler_seed.errors import UsageError
from scheduler_seed.inputs import argtype, json_object, seconds
from shared.control import Control, bulk
from shared.control.results import RunOutcome


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run-now",
        parents=[common],
        help="run a job once, now",
        description="Publish one manual message to the job's work queue. Exit code 3 if the job is running now "
        "(unless --queue); with --wait, 0 when the run succeeded and 1 otherwise.",
    )
    selection.add_target(p)
    p.add_argument("--params", type=argtype(json_object), default={}, help="JSON object over the default_params")
    p.add_argument("--wait", action="store_true", help="wait for the run (and its retries) and print the outcome")
    p.add_argument("--queue", action="store_true", help="queue the run even if the job is running now")
    p.add_argument("--timeout", type=argtype(seconds), metavar="SEC", help="with --wait: give up after SEC")
    p.set_defaults(execute=execute)


def describe_outcome(outcome: RunOutcome) -> str:
    """`run <id> <status> (attempt n, took 1.2s): <error>`."""
    line = f"run {outcome.run_id} {outcome.status} (attempt {outcome.attempt}"
    line += f", took {render.millis(outcome.duration_ms)})" if outcome.duration_ms is not None else ")"
    if outcome.error:
        line += f": {render.shorten(outcome.error, 300)}"
    return line


def say_retry(outcome: RunOutcome) -> None:
    print(describe_outcome(outcome) + "; a retry follows")


async def execute(args: argparse.Namespace, control: Control) -> int:
    selector = selection.selector_of(args, "run-now")
    if selector is not None:
        if args.wait:
            raise UsageError("run-now --selector queues the runs; --wait follows one job: name it", "wait")
        return selection.report(await bulk.apply(control, "run-now", selector, params=args.params, queue=args.queue))
    queued = await control.run_now(args.job, args.params, queue=args.queue)
    print(f"queued run {queued.run_id} of {queued.job_id!r} on {queued.routing_key}")
    if not queued.worker_live:
        job = await control.job(args.job)
        print(f"note: no live worker consumes queue {job.queue!r} now; the run starts when one does")
    if not args.wait:
        return 0
    outcome = await control.wait_for(queued, args.timeout, say_retry)
    print(describe_outcome(outcome))
    return 0 if outcome.succeeded else 1
