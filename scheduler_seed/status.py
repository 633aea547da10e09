"""`status`: every job of the scope at a glance (or as JSON): enabled, schedule, next slots, last run,
failures in a row, runs going on now, lateness of the last start, runs by trigger source and event subscriptions."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from scheduler_seed import render, selection
from shared.control import Control, bulk
from shared.control.results import JobStatus, plain
from shared.control.status import NEXT_SLOTS


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("status", parents=[common], help="every job: schedule, next slots, last run, failures")
    p.add_argument("--json", action="store_true", help="one JSON object per job, in a list")
    p.add_argument(
        "--selector",
        "-l",
        metavar="SELECTOR",
        help="only the jobs whose labels match: " + selection.SELECTOR_HELP.split(": ", 1)[1],
    )
    p.set_defaults(execute=execute)


def as_json(statuses: list[JobStatus]) -> str:
    return json.dumps(plain(statuses), indent=2)


def as_table(statuses: list[JobStatus], now: datetime) -> str:
    rows = [
        [
            s.job_id,
            enabled_words(s),
            s.schedule,
            render.upcoming(s.next_slots, now),
            render.ago(s.last_run_at, now),
            s.last_status,
            s.consecutive_failures,
            s.running,
            render.millis(s.last_lateness_ms),
            triggers(s),
        ]
        for s in statuses
    ]
    headers = [
        "JOB", "ENABLED", "SCHEDULE", f"NEXT {NEXT_SLOTS}", "LAST RUN", "STATUS", "FAILS", "RUNNING", "LATE", "RUNS BY",
    ]  # fmt: skip
    return render.table(headers, rows)


def enabled_words(status: JobStatus) -> str:
    """`yes`, `paused`, or `paused until 2026-01-05 08:00:00Z` (a timed pause)."""
    if status.enabled:
        return "yes"
    return "paused" if status.paused_until is None else f"paused until {render.when(status.paused_until)}"


def triggers(status: JobStatus) -> str:
    """Executed runs by trigger source, ever (`scheduler 120, event 4`), and the event patterns subscribed to."""
    counts = ", ".join(f"{source} {n}" for source, n in sorted(status.trigger_counts.items())) or "-"
    return counts if not status.triggers_on else f"{counts}; on {' '.join(status.triggers_on)}"


async def execute(args: argparse.Namespace, control: Control) -> int:
    statuses = await control.status()
    if args.selector is not None:
        statuses = bulk.pick_statuses(statuses, bulk.parse(args.selector))
    if args.json:
        print(as_json(statuses))
    elif not statuses and args.selector is not None:
        print(f"no job in scope {control.scope!r} matches selector {args.selector!r}")
    elif not statuses:
        print(f"no jobs in scope {control.scope!r}: `seed` loads deploy/jobs/{control.scope}.toml")
    else:
        now = datetime.now(UTC)
        print(as_table(statuses, now))
        for line in dst_lines(statuses, now):
            print(line)
    return 0


DST_SOON = 35 * 86400  # the table notes a zone transition this close (the JSON always has it)


def dst_lines(statuses: list[JobStatus], now: datetime) -> list[str]:
    """One line per job whose zone changes its clocks within DST_SOON: when, which way, and the slots around."""
    lines = []
    for s in statuses:
        change = s.dst
        if change is None or (change.at - now).total_seconds() > DST_SOON:
            continue
        way = "forward" if change.kind == "gap" else "back"
        rule = change.dst_gap if change.kind == "gap" else change.dst_overlap
        around = (
            " ".join(render.when(t) for t in change.slots_before[-2:])
            + " | "
            + " ".join(render.when(t) for t in change.slots_after[:2])
        )
        lines.append(
            f"DST {s.job_id}: {change.zone} clocks go {way} {render.span(abs(change.shift_sec))} at "
            f"{render.when(change.at)} (rule {rule}); slots around it: {around}"
        )
    return lines
