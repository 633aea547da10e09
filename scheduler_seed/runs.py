"""`runs JOB`: the job's latest runs, newest slot first."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

import asyncpg

from scheduler_seed import render
from scheduler_seed.inputs import argtype, positive_int
from scheduler_seed.jobref import existing_job
from scheduler_seed.session import Session
from shared.store import runs as runs_store


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("runs", parents=[common], help="a job's latest runs")
    p.add_argument("job", metavar="JOB")
    p.add_argument("--limit", type=argtype(positive_int), default=20, help="how many (default 20)")
    p.add_argument("--json", action="store_true", help="the rows as JSON")
    p.set_defaults(execute=execute)


def as_table(records: list[asyncpg.Record], now: datetime) -> str:
    rows = [
        [
            r["scheduled_for"],
            r["trigger_source"],
            r["attempt"],
            r["status"],
            render.ago(r["started_at"], now) if r["started_at"] else None,
            render.millis(r["duration_ms"]),
            render.millis(r["lateness_ms"]),
            r["worker"],
            str(r["run_id"]),
            render.shorten(r["error"], 60),
        ]
        for r in records
    ]
    headers = ["SLOT", "TRIGGER", "ATTEMPT", "STATUS", "STARTED", "TOOK", "LATE", "WORKER", "RUN ID", "ERROR"]
    return render.table(headers, rows)


def as_json(records: list[asyncpg.Record]) -> str:
    keys = ("run_id", "job_id", "epoch", "trigger_source", "scheduled_for", "attempt", "status", "worker",
            "started_at", "finished_at", "duration_ms", "lateness_ms", "error", "params")  # fmt: skip
    out = []
    for r in records:
        item = {k: r[k] for k in keys}
        item["run_id"] = str(item["run_id"])
        for k in ("scheduled_for", "started_at", "finished_at"):
            item[k] = render.iso(item[k])
        out.append(item)
    return json.dumps(out, indent=2)


async def execute(args: argparse.Namespace, session: Session) -> int:
    conn = await session.db()
    await existing_job(conn, session.scope, args.job)
    records = await runs_store.recent(conn, session.scope, args.job, args.limit)
    if args.json:
        print(as_json(records))
    elif not records:
        print(f"job {args.job!r} has no runs yet")
    else:
        print(as_table(records, datetime.now(UTC)))
    return 0
