"""`audit [JOB]`: the latest operator changes, newest first: who, when, what, the fields before and after."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from scheduler_seed import render
from scheduler_seed.inputs import argtype, positive_int
from shared.control import Control
from shared.control.results import AuditEntry, plain


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("audit", parents=[common], help="who changed what, when (newest first)")
    p.add_argument("job", metavar="JOB", nargs="?", help="only this job's changes")
    p.add_argument("--limit", type=argtype(positive_int), default=30, help="how many (default 30)")
    p.add_argument("--json", action="store_true", help="the entries as JSON")
    p.set_defaults(execute=execute)


def what_changed(entry: AuditEntry) -> str:
    """`field: old -> new` for each changed field (one side only for a job created or deleted)."""
    before, after = entry.before or {}, entry.after or {}
    parts = []
    for key in sorted(before.keys() | after.keys()):
        if key in before and key in after:
            parts.append(f"{key}: {_short(before[key])} -> {_short(after[key])}")
        else:
            parts.append(f"{key}={_short(after.get(key, before.get(key)))}")
    return "; ".join(parts)


def _short(value: Any) -> str:
    return render.shorten(json.dumps(value, default=str), 40)


def as_table(entries: list[AuditEntry], now: datetime) -> str:
    rows = [
        [render.ago(e.at, now), e.actor, e.action, e.job_id, render.shorten(what_changed(e), 90), e.note]
        for e in entries
    ]
    return render.table(["WHEN", "WHO", "ACTION", "JOB", "CHANGE", "NOTE"], rows)


async def execute(args: argparse.Namespace, control: Control) -> int:
    entries = await control.audit(args.limit, args.job)
    if args.json:
        print(json.dumps(plain(entries), indent=2))
    elif not entries:
        print("no changes recorded yet" + (f" for {args.job!r}" if args.job else ""))
    else:
        print(as_table(entries, datetime.now(UTC)))
    return 0
