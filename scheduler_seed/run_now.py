"""`run-now JOB`: one manual message to the job's work queue, and with --wait its outcome.

A job that is running now (a claimed or running row whose worker is alive) is refused with exit code 3
unless --queue: the 409 of `000_655093b4cfd23bb8.txt`. The message carries an explicit run_id, so --wait
follows exactly this run (and its retries) in `scheduler.job_runs`.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from scheduler_seed import render, tracking
from scheduler_seed.errors import RunningNow
from scheduler_seed.inputs import argtype, json_object, seconds
from scheduler_seed.jobref import existing_job
from scheduler_seed.session import Session
from shared import topology
from shared.messages import manual_message
from shared.seeding import declare_for
from shared.store import workers
from shared.vocabulary import RunStatus


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run-now",
        parents=[common],
        help="run a job once, now",
        description="Publish one manual message to the job's work queue. Exit code 3 if the job is running now "
        "(unless --queue); with --wait, 0 when the run succeeded and 1 otherwise.",
    )
    p.add_argument("job", metavar="JOB")
    p.add_argument("--params", type=argtype(json_object), default={}, help="JSON object over the default_params")
    p.add_argument("--wait", action="store_true", help="wait for the run (and its retries) and print the outcome")
    p.add_argument("--queue", action="store_true", help="queue the run even if the job is running now")
    p.add_argument("--timeout", type=argtype(seconds), metavar="SEC", help="with --wait: give up after SEC")
    p.set_defaults(execute=execute)


async def execute(args: argparse.Namespace, session: Session) -> int:
    conn = await session.db()
    job = await existing_job(conn, session.scope, args.job)
    if not args.queue:
        live = await tracking.live_runs(conn, session.scope, [job.job_id])
        if live:
            run = live[0]
            raise RunningNow(
                f"job {job.job_id!r} is running now (run {run.run_id}, {run.status} on {run.worker} for "
                f"{render.span((datetime.now(UTC) - run.since).total_seconds())}); "
                "nothing queued: add --queue to queue a run anyway"
            )
    message = manual_message(job.job_id, args.params, datetime.now(UTC)).model_copy(update={"scope": session.scope})
    await declare_for(await session.channel(), job)  # so the message has a queue even before any worker started
    await (await session.publisher()).to_work(job.queue, message)
    print(f"queued run {message.run_id} of {job.job_id!r} on {topology.work_queue_name(session.scope, job.queue)}")
    if job.queue not in await workers.live_queues(conn, session.scope):
        print(f"note: no live worker consumes queue {job.queue!r} now; the run starts when one does")
    if not args.wait:
        return 0
    deadline = time.monotonic() + (args.timeout if args.timeout is not None else tracking.patience(job))
    find = tracking.by_run_id(message.run_id)
    outcome = await tracking.wait_for_outcome(conn, find, job, deadline, print)
    print(tracking.describe_outcome(outcome))
    return 0 if outcome["status"] == RunStatus.SUCCEEDED else 1
