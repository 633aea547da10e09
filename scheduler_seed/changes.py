"""`pause`, `resume`, `set` and `delete`: change a job now, without a deploy. Each replaces the chain under
the chain lock (in `shared.control`), so the change takes effect at once and no second chain appears."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from scheduler_seed import render, selection
from scheduler_seed.errors import UsageError
from scheduler_seed.inputs import argtype, json_object, positive_int, seconds, whole_seconds
from shared import schedule
from shared.control import Control, bulk
from shared.control import preview as previews
from shared.control.instants import later
from shared.control.results import JobChange

_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def boolean(text: str) -> bool:
    """true/false (also yes/no, on/off, 1/0)."""
    try:
        return _BOOLEANS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"expected true or false, got {text!r}") from None


# (flag, column of scheduler.jobs, parser, metavar, help): what `set` can change
SETTABLE: tuple[tuple[str, str, Callable[[str], Any], str, str], ...] = (
    ("--cron", "cron_expr", str, "EXPR", "cron expression, 5 fields (switches an interval job to cron)"),
    ("--interval", "interval_seconds", whole_seconds, "SEC", "90, 90s, 5m, 2h (switches a cron job to interval)"),
    ("--timezone", "timezone", str, "ZONE", "IANA time zone the cron expression is read in (Asia/Seoul)"),
    ("--params", "default_params", json_object, "JSON", "new default_params, a JSON object (replaces the old)"),
    ("--timeout", "timeout_sec", seconds, "SEC", "run timeout: 600, 10m"),
    ("--max-attempts", "max_attempts", positive_int, "N", "attempts per slot, retries included"),
    ("--jitter", "jitter_sec", seconds, "SEC", "spread each slot's start over [0, SEC)"),
    ("--misfire-grace", "misfire_grace_sec", seconds, "SEC", "a slot later than this is skipped, not run"),
    ("--description", "description", str, "TEXT", "free text"),
    ("--dst-gap", "dst_gap", str, "RULE", "cron wall time in a DST gap: shift_forward (at the gap's end) or skip"),
    ("--dst-overlap", "dst_overlap", str, "RULE", "cron wall time that happens twice: first, second or both"),
    ("--labels", "labels", json_object, "JSON", 'labels, a JSON object of strings (replaces the old): {"team": "x"}'),
    (
        "--run-on-startup", "run_on_startup", boolean, "BOOL",
        "true: each boot of the service serving the job posts one startup run (once per boot, not per replica)",
    ),
)  # fmt: skip


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("pause", parents=[common], help="stop a job's chain now (a run in progress finishes)")
    selection.add_target(p)
    p.add_argument("--note", help="why, shown by status and the audit")
    p.add_argument(
        "--until",
        metavar="TIME",
        help="resume by itself then (the watchdog does it): a duration ahead (30m, 2h, 1d) or ISO 8601 "
        "(without an offset: in the job's time zone)",
    )
    p.set_defaults(execute=pause)

    p = sub.add_parser("resume", parents=[common], help="enable a job and start a fresh chain from now")
    selection.add_target(p)
    p.set_defaults(execute=resume)

    p = sub.add_parser(
        "set",
        parents=[common],
        help="change a job's schedule or settings, effective now",
        description="Change the stored definition and restart the chain at once. The jobs file is not edited: "
        "the next `seed` keeps the change and prints it as drift; `seed --reset JOB` applies the file again.",
    )
    p.add_argument("job", metavar="JOB")
    for flag, column, parse, metavar, text in SETTABLE:
        p.add_argument(flag, dest=column, type=argtype(parse), metavar=metavar, help=text)
    p.add_argument(
        "--preview", action="store_true", help="print which of the next slots appear and disappear; change nothing"
    )
    p.add_argument(
        "--preview-count", type=argtype(positive_int), default=previews.DEFAULT_COUNT, metavar="N",
        help=f"with --preview: compare the next N slots (default {previews.DEFAULT_COUNT})",
    )  # fmt: skip
    p.set_defaults(execute=set_job)

    p = sub.add_parser(
        "delete",
        parents=[common],
        help="unregister a job: its chain ends, its row and its delay and retry queues go, its runs stay",
        description="A job still in the jobs file comes back with the next `seed`; take it out of the file first.",
    )
    p.add_argument("job", metavar="JOB")
    p.set_defaults(execute=delete)


def changes_from(args: argparse.Namespace) -> dict[str, Any]:
    changes = {column: getattr(args, column) for _, column, *_ in SETTABLE if getattr(args, column) is not None}
    if not changes:
        raise UsageError("set: nothing to change: give at least one of " + ", ".join(f for f, *_ in SETTABLE))
    return changes


def effect(result: JobChange, now: datetime) -> str:
    if result.first_slot is None:
        return "no chain (paused, or runs only on events and by hand)"
    return f"next slot {render.when(result.first_slot)} ({render.upcoming([result.first_slot], now)})"


async def pause(args: argparse.Namespace, control: Control) -> int:
    selector = selection.selector_of(args, "pause")
    if selector is not None:
        return selection.report(await bulk.apply(control, "pause", selector, note=args.note, until=args.until))
    until = None
    if args.until is not None:
        try:
            until = later(args.until, datetime.now(UTC), (await control.job(args.job)).timezone)
        except ValueError as exc:
            raise UsageError(f"pause --until: {exc}") from None
    await control.pause(args.job, note=args.note, until=until)
    ends = "`resume` restarts it" if until is None else f"it resumes by itself at {render.when(until)}"
    print(f"paused {args.job!r}: its waiting message is gone; a run in progress finishes; {ends}")
    return 0


async def resume(args: argparse.Namespace, control: Control) -> int:
    selector = selection.selector_of(args, "resume")
    if selector is not None:
        return selection.report(await bulk.apply(control, "resume", selector))
    result = await control.resume(args.job)
    gaps = f"; {result.gaps} paused slot(s) recorded, {result.catchup} to catch up" if result.gaps else ""
    print(f"resumed {args.job!r}: epoch {result.epoch}, {effect(result, datetime.now(UTC))}{gaps}")
    return 0


def describe_preview(found: previews.SetPreview) -> str:
    """The preview as lines: the fields, the schedules, then each slot that appears (+) or disappears (-)."""
    lines = [f"preview of set {found.job_id!r} (nothing changed):"]
    lines += [
        f"  {name}: {render.shorten(repr(old), 80)} -> {render.shorten(repr(new), 80)}"
        for name, (old, new) in found.changes.items()
    ]
    lines.append(f"  schedule: {found.schedule_before} -> {found.schedule_after}")
    if not found.enabled:
        lines.append("  the job is paused: no slot runs until `resume`")
    diff = found.slots
    through = f" through {render.when(diff.horizon)}" if diff.horizon is not None else ""
    if diff.unchanged:
        lines.append(f"  the next {len(diff.after)} slots stay as they are")
        return "\n".join(lines)
    lines.append(f"  slots{through}: {len(diff.appear)} appear, {len(diff.disappear)} disappear")
    marked = sorted([(s, "+") for s in diff.appear] + [(s, "-") for s in diff.disappear])
    lines += [f"    {mark} {render.when(slot)}" for slot, mark in marked]
    return "\n".join(lines)


async def set_job(args: argparse.Namespace, control: Control) -> int:
    changes = changes_from(args)
    if args.preview:
        print(describe_preview(await previews.preview(control, args.job, changes, args.preview_count)))
        return 0
    result = await control.set(args.job, changes)
    now = datetime.now(UTC)
    row = await control.job(args.job)
    words = "on event or by hand" if row.schedule is None else schedule.describe(row.schedule)
    state = "" if row.enabled else " (paused: takes effect on resume)"
    changed = ", ".join(sorted(changes))
    print(f"set {args.job!r}: {changed}; {words}; epoch {result.epoch}, {effect(result, now)}{state}")
    return 0


async def delete(args: argparse.Namespace, control: Control) -> int:
    result = await control.delete(args.job)
    print(
        f"deleted {args.job!r}: its chain ended at epoch {result.epoch}, its delay and retry queues are gone; "
        "`runs` still shows its history"
    )
    return 0
