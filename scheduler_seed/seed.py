"""`seed`: migrate, load the jobs file over the live definitions, declare the topology, start new chains.

After a job's first seed the database holds its live definition: a field edited in the file since the last
seed takes the file's value; a field changed at runtime (`pause`, `set`, the HTTP API) keeps its live value
and is printed as drift; `--reset [JOB ...]` puts the file's values back (`shared.control.drift`). A chain is
replaced (new epoch, delay queue purged under the chain lock) only when the job is new or its schedule changed,
so seeding twice leaves one chain per job. A job in the database that the file no longer has is reported,
never deleted; `--prune` disables it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scheduler_seed import render
from scheduler_seed.inputs import argtype, seconds
from shared import schedule
from shared.control import Control, wait_for_servers
from shared.control.results import MissingAction, SeededJob
from shared.control.validation import check_references, jobs_file

__all__ = ["JOBS_DIR", "check_references", "drift_lines", "execute", "register", "seeded_row"]

JOBS_DIR = Path("deploy/jobs")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "seed",
        parents=[common],
        help="load a jobs file; runtime changes (pause, set) stay unless --reset",
        description="Migrate, load the jobs of FILE over the live definitions, declare their queues and start "
        "the chain of each new or re-timed job. A field edited in the file since the last seed takes the file's "
        "value; a field changed at runtime (pause, set) keeps its live value and is printed as drift. "
        "Idempotent: running it twice leaves one chain per job.",
    )
    p.add_argument("--file", type=Path, help="jobs file (default: deploy/jobs/<scope>.toml)")
    p.add_argument(
        "--reset",
        nargs="*",
        metavar="JOB",
        help="put the file's values back over runtime changes, for the JOBs named (none named: every job)",
    )
    p.add_argument("--note", help="why, recorded in the audit (default: the file's path)")
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
    enabled = next((d.live for d in seeded.drift if d.field == "enabled"), definition.enabled)  # a kept pause
    if not enabled:
        first = "disabled"
    elif result.first_slot is None:
        first = "on event or by hand"
    else:
        first = f"{render.when(result.first_slot)} ({render.upcoming([result.first_slot], now)})"
    words = "-" if plan is None else schedule.describe(plan)
    drifted = f"{len(seeded.drift)} kept" if seeded.drift else "-"
    row = [definition.job_id, definition.queue_name, seeded.change.value, seeded.chain.value, str(result.epoch)]
    return [*row, first, words, drifted]


def drift_lines(jobs: list[SeededJob]) -> list[str]:
    """Per job and field, where the file and the live definition differ: kept (drift) or put back (reset)."""
    rows = []
    for seeded in jobs:
        job_id = seeded.definition.job_id
        for d in seeded.drift:
            both = "; edited in the file since the last seed too" if d.file_edited else ""
            rows.append([job_id, d.field, render_value(d.file), render_value(d.live), f"live kept{both}"])
        for d in seeded.reset:
            rows.append([job_id, d.field, render_value(d.file), render_value(d.live), "reset to the file"])
    if not rows:
        return []
    return render.table(["JOB", "FIELD", "FILE", "LIVE", "SEED DID"], rows).splitlines()


def render_value(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


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
    reset: bool | list[str] = False if args.reset is None else (args.reset or True)
    result = await control.seed_file(path, prune=args.prune, reset=reset, note=args.note)
    rows = [seeded_row(seeded) for seeded in result.jobs]
    print(render.table(["JOB", "QUEUE", "DEFINITION", "CHAIN", "EPOCH", "NEXT SLOT", "SCHEDULE", "DRIFT"], rows))
    print(f"seeded {len(result.jobs)} jobs into scope {control.scope!r} from {path}")
    lines = drift_lines(result.jobs)
    if lines:
        print("drift: the live definition differs from the file (runtime changes stay; `seed --reset JOB` applies it):")
        print("\n".join(lines))
    for job_id, action in result.missing:
        print(f"job {job_id!r} is in the database but not in {path}: {MISSING[action]}")
    return 0
