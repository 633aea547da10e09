"""`seed`: migrate, upsert the jobs file, declare the topology and (re)start every enabled job's chain.

Seeding twice leaves one chain per job (each seed bumps the epoch and purges the delay queue under the chain
lock). A job in the database that the file no longer has is reported, never deleted; `--prune` disables it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scheduler_seed import render
from scheduler_seed.inputs import argtype, seconds
from shared import schedule
from shared.control import Control, wait_for_servers
from shared.control.results import MissingAction, SeededJob
from shared.control.validation import check_references, jobs_file

__all__ = ["JOBS_DIR", "check_references", "execute", "register", "seeded_row"]

JOBS_DIR = Path("deploy/jobs")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "seed",
        parents=[common],
        help="load a jobs file and (re)start every job's chain",
        description="Migrate, upsert the jobs of FILE, declare their queues and post each enabled job's first "
        "message. Idempotent: running it twice leaves one chain per job.",
    )
    p.add_argument("--file", type=Path, help="jobs file (default: deploy/jobs/<scope>.toml)")
    p.add_argument("--prune", action="store_true", help="disable jobs that are in the database but not in the file")
    p.add_argument(
        "--wait-for-deps",
        type=argtype(seconds),
        default=0.0,
        metavar="SEC",
        help="wait up to SEC for RabbitMQ and PostgreSQL to answer (for a one-shot seeder container)",
    )
    p.set_defaults(execute=execute)


def seeded_row(seeded: SeededJob) -> list[str]:
    definition, result, now = seeded.definition, seeded.result, seeded.seeded_at
    plan = definition.schedule()
    if not definition.enabled:
        first = "disabled"
    elif result.first_slot is None:
        first = "on event or by hand"
    else:
        first = f"{render.when(result.first_slot)} ({render.upcoming([result.first_slot], now)})"
    words = "-" if plan is None else schedule.describe(plan)
    return [definition.job_id, definition.queue_name, seeded.change.value, str(result.epoch), first, words]


MISSING = {
    MissingAction.ALREADY_DISABLED: "already disabled",
    MissingAction.DISABLED: "disabled (--prune)",
    MissingAction.LEFT_ENABLED: "still enabled; `seed --prune` disables it, `pause` stops it",
}


async def execute(args: argparse.Namespace, control: Control) -> int:
    path: Path = args.file or JOBS_DIR / f"{control.scope}.toml"
    if args.wait_for_deps and control.settings is not None:
        jobs_file(path)  # a bad file is refused at once, before waiting for any server
        await wait_for_servers(control.settings, args.wait_for_deps, lambda line: print(line, file=sys.stderr))
    result = await control.seed_file(path, prune=args.prune)
    rows = [seeded_row(seeded) for seeded in result.jobs]
    print(render.table(["JOB", "QUEUE", "DEFINITION", "EPOCH", "FIRST SLOT", "SCHEDULE"], rows))
    print(f"seeded {len(result.jobs)} jobs into scope {control.scope!r} from {path}")
    for job_id, action in result.missing:
        print(f"job {job_id!r} is in the database but not in {path}: {MISSING[action]}")
    return 0
