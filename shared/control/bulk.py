"""Bulk operations: `pause`, `resume` and `run-now` on every job a label selector picks (`shared.labels`).

Each job is acted on through `Control`, one after the other, exactly as if named alone: its own chain change,
its own audit row. A job that fails (running now, a dependency down half-way) is reported in its own result and
the others still go; the caller sees one result per job. A selector that picks no job is not an error: the
result is empty and says so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared import labels
from shared.control.api import Control
from shared.control.errors import InvalidRequest, kind_of
from shared.control.instants import later
from shared.control.results import JobStatus
from shared.store.jobs import JobRow

ACTIONS = ("pause", "resume", "run-now")


@dataclass(frozen=True, slots=True)
class BulkItem:
    """One job's result: `ok`, or the error kind (`shared.control.errors.ErrorKind`) and message."""

    job_id: str
    ok: bool
    detail: str = ""  # what happened (an epoch, a run id), or the error
    error_kind: str | None = None
    run_id: str | None = None  # run-now: the run queued


@dataclass(frozen=True, slots=True)
class BulkResult:
    action: str
    selector: str
    items: list[BulkItem]

    @property
    def failed(self) -> list[BulkItem]:
        return [item for item in self.items if not item.ok]


def parse(text: str) -> labels.Selector:
    """The selector, or InvalidRequest (field `selector`) naming the bad term."""
    try:
        return labels.parse_selector(text)
    except labels.SelectorError as exc:
        raise InvalidRequest(str(exc), "selector") from None


def pick(rows: Sequence[JobRow], selector: labels.Selector) -> list[JobRow]:
    """The rows whose labels the selector matches, in the given order."""
    return [row for row in rows if selector.matches(row.labels)]


def pick_statuses(statuses: Sequence[JobStatus], selector: labels.Selector) -> list[JobStatus]:
    return [status for status in statuses if selector.matches(status.labels)]


async def apply(
    control: Control,
    action: str,
    selector_text: str,
    *,
    note: str | None = None,
    until: str | None = None,
    params: Mapping[str, Any] | None = None,
    queue: bool = False,
) -> BulkResult:
    """`action` (one of ACTIONS) on every job the selector picks; one BulkItem per job, failures included.
    `until` (pause only): as `pause --until`, a time without an offset read in each job's own time zone."""
    if action not in ACTIONS:
        raise InvalidRequest(f"bulk action must be one of {', '.join(ACTIONS)}, got {action!r}", "action")
    selector = parse(selector_text)
    if until is not None:
        _until(until, "UTC")  # a text that is no time at all: one error before any job changes
    chosen = pick(await control.jobs(), selector)
    items = [await _one(control, action, row, note, until, params, queue) for row in chosen]
    return BulkResult(action, str(selector), items)


def _until(text: str, timezone: str) -> datetime:
    try:
        return later(text, datetime.now(UTC), timezone)
    except ValueError as exc:
        raise InvalidRequest(f"pause --until: {exc}", "until") from None


async def _one(
    control: Control,
    action: str,
    row: JobRow,
    note: str | None,
    until: str | None,
    params: Mapping[str, Any] | None,
    queue: bool,
) -> BulkItem:
    job_id = row.job_id
    steps: dict[str, Callable[[], Awaitable[BulkItem]]] = {
        "pause": lambda: _pause(control, job_id, note, None if until is None else _until(until, row.timezone)),
        "resume": lambda: _resume(control, job_id),
        "run-now": lambda: _run_now(control, job_id, params, queue),
    }
    try:
        return await steps[action]()
    except Exception as exc:
        kind = kind_of(exc)
        if kind is None:
            raise  # a bug: not one job's failure to report
        return BulkItem(job_id, False, str(exc), kind.value)


async def _pause(control: Control, job_id: str, note: str | None, until: datetime | None) -> BulkItem:
    result = await control.pause(job_id, note=note, until=until)
    ends = "" if until is None else f", resumes by itself at {until.isoformat()}"
    return BulkItem(job_id, True, f"paused (epoch {result.epoch}{ends})")


async def _resume(control: Control, job_id: str) -> BulkItem:
    result = await control.resume(job_id)
    first = "no chain" if result.first_slot is None else f"next slot {result.first_slot.isoformat()}"
    return BulkItem(job_id, True, f"resumed (epoch {result.epoch}, {first})")


async def _run_now(control: Control, job_id: str, params: Mapping[str, Any] | None, queue: bool) -> BulkItem:
    queued = await control.run_now(job_id, params, queue=queue)
    live = "" if queued.worker_live else "; no live worker consumes its queue now"
    return BulkItem(job_id, True, f"queued on {queued.routing_key}{live}", run_id=str(queued.run_id))
