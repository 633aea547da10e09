"""What the bot answers: short plain text built from control-layer results and errors, cut to Telegram's
message limit. Pure: values and the clock in, strings out.

Telegram refuses a message over 4096 characters (counted in UTF-16 code units), so long answers are split at
line ends into several messages, a long line is clipped, and a status of many jobs stops after a few messages
with a count of what was left out (the Admin UI and `status` show the rest).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from scheduler_seed.render import ago, span, when
from shared.control.errors import DependencyDown, ErrorKind, RunningNow, UnknownJob, kind_of
from shared.control.results import JobChange, JobStatus, RunQueued, RunRecord

MESSAGE_LIMIT = 4096  # Telegram's limit per message, UTF-16 code units
MAX_LINE = 600  # one job or one run per line: a long error or note is clipped to this
MAX_MESSAGES = 4  # a status of thousands of jobs is a page for the Admin UI, not a flood of messages


def units(text: str) -> int:
    """The length Telegram counts: UTF-16 code units (an emoji outside the BMP counts two)."""
    return len(text.encode("utf-16-le")) // 2


def clip(text: str, limit: int = MAX_LINE) -> str:
    """`text` on one line, at most `limit` code units, ending in '...' when cut."""
    flat = " ".join(text.split())
    if units(flat) <= limit:
        return flat
    cut = flat[: max(limit - 3, 0)]
    while units(cut) > limit - 3:  # characters outside the BMP count double
        cut = cut[:-1]
    return cut + "..."


def messages(lines: Iterable[str], limit: int = MESSAGE_LIMIT, max_messages: int = MAX_MESSAGES) -> list[str]:
    """The lines packed into as few messages as fit `limit` each, at most `max_messages`; when lines are left
    out, the last message says how many."""
    lines = [clip(line, limit) for line in lines]
    packed: list[str] = []
    current: list[str] = []
    for index, line in enumerate(lines):
        if current and units("\n".join([*current, line])) > limit:
            packed.append("\n".join(current))
            current = []
            if len(packed) == max_messages:
                return _with_remainder(packed, len(lines) - index, limit)
        current.append(line)
    if current:
        packed.append("\n".join(current))
    return packed


def _with_remainder(packed: list[str], left_out: int, limit: int) -> list[str]:
    note = f"... and {left_out} more line(s) not shown."
    last = packed[-1].split("\n")
    while last and units("\n".join([*last, note])) > limit:
        left_out += 1
        last.pop()
        note = f"... and {left_out} more line(s) not shown."
    packed[-1] = "\n".join([*last, note])
    return packed


# -- answers ------------------------------------------------------------------------------------------------


def status_lines(statuses: Sequence[JobStatus], now: datetime) -> list[str]:
    """One line per job: enabled, schedule, last run and status, failures in a row, running now."""
    if not statuses:
        return ["No jobs in this scope."]
    return [f"{len(statuses)} job(s), times in UTC:", *(_status_line(s, now) for s in statuses)]


def _status_line(job: JobStatus, now: datetime) -> str:
    state = "on" if job.enabled else "PAUSED" + (f" ({job.pause_note})" if job.pause_note else "")
    last = "never run" if job.last_run_at is None else f"last {job.last_status} {ago(job.last_run_at, now)}"
    parts = [f"{job.job_id}: {state}", job.schedule, last]
    if job.consecutive_failures:
        parts.append(f"{job.consecutive_failures} failure(s) in a row")
    if job.running:
        parts.append(f"{job.running} running")
    if job.enabled and job.next_slots:
        parts.append(f"next {when(job.next_slots[0])}")
    return clip(", ".join(parts))


def run_lines(job_id: str, records: Sequence[RunRecord], now: datetime) -> list[str]:
    """The job's latest runs, newest slot first, one line each."""
    if not records:
        return [f"No runs of {job_id} yet."]
    return [f"Latest {len(records)} run(s) of {job_id}, times in UTC:", *(_run_line(r, now) for r in records)]


def _run_line(run: RunRecord, now: datetime) -> str:
    took = "" if run.duration_ms is None else f" in {span(run.duration_ms / 1000)}"
    parts = [
        f"{when(run.scheduled_for)} {run.status}{took}",
        f"{run.trigger_source} #{run.attempt}",
        f"run {str(run.run_id)[:8]}",
    ]
    if run.error:
        parts.append(f"error: {run.error}")
    return clip(", ".join(parts))


def queued(run: RunQueued) -> str:
    text = f"Run {run.run_id} of {run.job_id} queued."
    if not run.worker_live:
        text += f" No live worker consumes {run.routing_key} now: it runs when one starts."
    return text


def running_now(busy: RunningNow, now: datetime) -> str:
    """The 409 of seed 000 in words: the job is running, which run, since when; nothing was queued."""
    on = f" on {busy.worker}" if busy.worker else ""
    return (
        f"{busy.job_id} is running now: run {busy.run_id} ({busy.status}{on}), started {when(busy.since)} "
        f"({ago(busy.since, now)}). Nothing was queued."
    )


def paused(change: JobChange, note: str | None, until: datetime | None = None) -> str:
    why = f" Note: {clip(note)}" if note else ""
    ends = f" It resumes by itself at {when(until)}." if until is not None else ""
    return f"{change.job_id} paused: its chain has ended; a run in progress finishes.{ends}{why}"


def resumed(change: JobChange) -> str:
    first = f" First slot {when(change.first_slot)} UTC." if change.first_slot else ""
    return f"{change.job_id} resumed with a fresh chain.{first}"


def failure(exc: BaseException, now: datetime) -> str:
    """A failed action as a plain answer, by the control layer's error kinds (never a traceback, no secret)."""
    kind = kind_of(exc)
    if isinstance(exc, RunningNow):
        return running_now(exc, now)
    if isinstance(exc, UnknownJob):
        return f"Unknown job {exc.job_id!r}. /job status lists the jobs."
    if kind is ErrorKind.UNAVAILABLE:
        server = exc.server if isinstance(exc, DependencyDown) else "RabbitMQ or PostgreSQL"
        return f"{server} is not reachable now; nothing was done. Try again in a while."
    if kind is ErrorKind.INVALID:
        return clip(f"Invalid: {exc}", MESSAGE_LIMIT)
    if kind in {ErrorKind.NOT_FOUND, ErrorKind.CONFLICT, ErrorKind.FAILED}:
        return clip(f"Not done: {exc}", MESSAGE_LIMIT)
    return "Something went wrong inside the bot; nothing is known to have been done. The server log has the details."
