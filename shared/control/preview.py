"""Previews of a change: which of a job's next slots a `set` would add and take away, changing nothing.

`diff_slots` is pure: the next N slots of the schedule in force and of the changed one in, the difference out.
Two lists of N slots cover different spans (a job going from hourly to every 5 minutes: 10 slots are 10 hours
against 50 minutes), so the comparison stops at the earlier of the two last slots (`horizon`): past it one side
has not been listed, and a slot there is neither "new" nor "gone".

`preview_set` reads the stored row, applies the changes as `set` would (validated the same way: the same
InvalidDefinition for a bad value) and returns the difference. It writes no row, no audit entry and no message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared import schedule
from shared.control import audit, jobs
from shared.control.api import Control
from shared.control.errors import InvalidRequest
from shared.definitions import JobDefinition
from shared.store import jobs as jobs_store

DEFAULT_COUNT = 10
MAX_COUNT = 1000


@dataclass(frozen=True, slots=True)
class SlotDiff:
    """The next slots before and after a change, and what differs up to `horizon` (None: either side is empty,
    and then every slot listed on the other side differs)."""

    before: list[datetime]
    after: list[datetime]
    appear: list[datetime]
    disappear: list[datetime]
    horizon: datetime | None

    @property
    def unchanged(self) -> bool:
        return not self.appear and not self.disappear


@dataclass(frozen=True, slots=True)
class SetPreview:
    """What `set JOB ...` would do, computed without doing it."""

    job_id: str
    changes: dict[str, Any]  # the fields that would change: name -> [stored value, new value]
    enabled: bool
    schedule_before: str
    schedule_after: str
    slots: SlotDiff


def diff_slots(before: list[datetime], after: list[datetime]) -> SlotDiff:
    """The slots in `after` and not in `before` (appear), and the other way round (disappear), both up to the
    earlier of the two last slots; both lists in increasing order."""
    horizon = min(before[-1], after[-1]) if before and after else None
    old, new = set(before), set(after)
    appear = [s for s in after if s not in old and (horizon is None or s <= horizon)]
    disappear = [s for s in before if s not in new and (horizon is None or s <= horizon)]
    return SlotDiff(list(before), list(after), appear, disappear, horizon)


def upcoming(plan: schedule.Schedule | None, runs_chain: bool, now: datetime, count: int) -> list[datetime]:
    """The next `count` slots after `now`; none for a job without a running chain (paused, by hand only)."""
    if plan is None or not runs_chain:
        return []
    return schedule.next_slots(plan, now, count)


def check_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise InvalidRequest(f"preview count must be a whole number from 1 to {MAX_COUNT}, got {count!r}", "count")
    return count


def _runs_chain(definition: JobDefinition) -> bool:
    return definition.enabled and definition.has_chain


async def preview_set(
    conn: asyncpg.Connection, scope: str, job_id: str, changes: Mapping[str, Any], now: datetime, count: int
) -> SetPreview:
    """What `set` with `changes` would change in the job's next `count` slots (reads only)."""
    check_count(count)
    if not changes:
        raise InvalidRequest(f"set {job_id}: nothing to change", "changes")
    row = await jobs.existing(conn, scope, job_id)
    target = jobs.changed_definition(row, changes)
    stored = jobs_store.declared(row.definition()) if _valid(row) else row.raw_definition()
    wanted = jobs_store.declared(target)
    before, after = audit.difference(stored, wanted)
    assert before is not None and after is not None
    changed = {name: [before[name], after[name]] for name in after}
    old_slots = upcoming(row.schedule if _valid(row) else None, row.enabled and row.has_chain, now, count)
    new_slots = upcoming(target.schedule(), _runs_chain(target), now, count)
    return SetPreview(
        job_id=job_id,
        changes=changed,
        enabled=target.enabled,
        schedule_before=_words(row.schedule if _valid(row) else None),
        schedule_after=_words(target.schedule()),
        slots=diff_slots(old_slots, new_slots),
    )


def _valid(row: jobs_store.JobRow) -> bool:
    """Whether the stored definition still validates (one refused by newer rules can be repaired by `set`)."""
    try:
        row.definition()
        row.schedule  # noqa: B018 - builds the schedule, which may refuse a stored expression
    except ValueError:
        return False
    return True


def _words(plan: schedule.Schedule | None) -> str:
    return "on event or by hand" if plan is None else schedule.describe(plan)


async def preview(control: Control, job_id: str, changes: Mapping[str, Any], count: int = DEFAULT_COUNT) -> SetPreview:
    """`preview_set` over the control's connection, now: what `control.set(job_id, changes)` would change."""
    conn = await control.session.db()
    return await preview_set(conn, control.scope, job_id, changes, datetime.now(UTC), count)
