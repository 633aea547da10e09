"""`seed`: migrate, upsert the jobs file, declare the topology and (re)start every enabled job's chain.

Seeding twice leaves one chain per job (each seed bumps the epoch and purges the delay queue under the chain
lock). A job in the database that the file no longer has is reported, never deleted; `--prune` disables it.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from scheduler_seed import render
from scheduler_seed.errors import UsageError
from scheduler_seed.inputs import argtype, seconds
from scheduler_seed.session import Session, wait_for_servers
from shared import schedule, seeding
from shared.definitions import JobDefinition
from shared.jobsfile import load_jobs_file
from shared.seeding import SeedResult
from shared.store import jobs as jobs_store
from shared.store.jobs import JobRow

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


def check_references(definitions: list[JobDefinition], path: Path) -> None:
    """Every on_success job must be in the same file: a dangling name would only fail at run time."""
    known = {d.job_id for d in definitions}
    for definition in definitions:
        for downstream in definition.on_success:
            if downstream not in known:
                raise UsageError(f"{path}: job {definition.job_id!r}: on_success names {downstream!r}, not in the file")


def missing_from_file(rows: list[JobRow], definitions: list[JobDefinition]) -> list[JobRow]:
    """Jobs of the scope the file does not declare (left alone unless --prune)."""
    declared = {d.job_id for d in definitions}
    return [row for row in rows if row.job_id not in declared]


def seeded_row(definition: JobDefinition, result: SeedResult, before: JobRow | None, now: datetime) -> list[str]:
    if before is None:
        change = "new"
    elif not before.enabled and definition.enabled:
        change = "re-enabled"  # the file is the truth: a job paused by hand runs again after a seed
    else:
        change = "changed" if result.changed else "unchanged"
    plan = definition.schedule()
    if not definition.enabled:
        first = "disabled"
    elif result.first_slot is None:
        first = "on event or by hand"
    else:
        first = f"{render.when(result.first_slot)} ({render.upcoming([result.first_slot], now)})"
    words = "-" if plan is None else schedule.describe(plan)
    return [definition.job_id, definition.queue_name, change, str(result.epoch), first, words]


async def execute(args: argparse.Namespace, session: Session) -> int:
    path: Path = args.file or JOBS_DIR / f"{session.scope}.toml"
    definitions = load_jobs_file(path)
    check_references(definitions, path)
    if args.wait_for_deps:
        await wait_for_servers(session.settings, args.wait_for_deps, lambda line: print(line, file=sys.stderr))
    conn = await session.db()
    channel = await session.channel()
    publisher = await session.publisher()
    before = {row.job_id: row for row in await jobs_store.list_jobs(conn, session.scope)}
    now = datetime.now(UTC)
    rows = []
    for definition in definitions:
        # the clock of each job's own seeding: with one `now` for the whole file, the last jobs of a long file
        # would get a first slot already past, run late, and count their next slot from then (skipping one)
        now = datetime.now(UTC)
        result = await seeding.seed_job(conn, channel, publisher, session.scope, definition, now)
        rows.append(seeded_row(definition, result, before.get(definition.job_id), now))
    print(render.table(["JOB", "QUEUE", "DEFINITION", "EPOCH", "FIRST SLOT", "SCHEDULE"], rows))
    print(f"seeded {len(definitions)} jobs into scope {session.scope!r} from {path}")
    for row in missing_from_file(list(before.values()), definitions):
        await report_missing(args, session, row, path, now)
    return 0


async def report_missing(args: argparse.Namespace, session: Session, row: JobRow, path: Path, now: datetime) -> None:
    if not row.enabled:
        print(f"job {row.job_id!r} is in the database but not in {path}: already disabled")
    elif args.prune:
        conn, channel, publisher = await session.db(), await session.channel(), await session.publisher()
        await seeding.pause_job(conn, channel, publisher, session.scope, row.job_id, now, note=f"pruned: not in {path}")
        print(f"job {row.job_id!r} is in the database but not in {path}: disabled (--prune)")
    else:
        print(
            f"job {row.job_id!r} is in the database but not in {path}: still enabled; "
            "`seed --prune` disables it, `pause` stops it"
        )
