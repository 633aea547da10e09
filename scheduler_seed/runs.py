"""`runs JOB`: the job's latest runs, newest slot first; `--gaps`: the slots that got no run (the slot ledger)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from scheduler_seed import render
from scheduler_seed.inputs import argtype, positive_int
from shared.control import Control
from shared.control.results import RunRecord, plain


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("runs", parents=[common], help="a job's latest runs")
    p.add_argument("job", metavar="JOB")
    p.add_argument("--limit", type=argtype(positive_int), default=20, help="how many (default 20)")
    p.add_argument("--json", action="store_true", help="the rows as JSON")
    p.add_argument(
        "--gaps", action="store_true", help="only the slots that got no run (skipped, paused, missed), with why"
    )
    p.set_defaults(execute=execute)


def as_table(records: list[RunRecord], now: datetime) -> str:
    rows = [
        [
            r.scheduled_for,
            r.trigger_source,
            r.attempt,
            r.status,
            render.ago(r.started_at, now) if r.started_at else None,
            render.millis(r.duration_ms),
            render.millis(r.lateness_ms),
            r.worker,
            str(r.run_id),
            render.shorten(r.error, 60),
        ]
        for r in records
    ]
    headers = ["SLOT", "TRIGGER", "ATTEMPT", "STATUS", "STARTED", "TOOK", "LATE", "WORKER", "RUN ID", "ERROR"]
    return render.table(headers, rows)


def as_json(records: list[RunRecord]) -> str:
    return json.dumps(plain(records), indent=2)


async def execute(args: argparse.Namespace, control: Control) -> int:
    records = await control.runs(args.job, args.limit, gaps=args.gaps)
    if args.json:
        print(as_json(records))
    elif not records:
        print(f"job {args.job!r} has no slots without a run" if args.gaps else f"job {args.job!r} has no runs yet")
    else:
        print(as_table(records, datetime.now(UTC)))
    return 0
