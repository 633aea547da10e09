"""What a job's zone does next to its slots: the next daylight-saving transition and the fire times around it,
as `status` and the API show them. Pure: a job row and the time in, a plain dataclass out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared import dst, schedule
from shared.store.jobs import JobRow


@dataclass(frozen=True, slots=True)
class DstOutlook:
    """A cron job's next zone transition (UTC), the rule its slots follow there, and its slots either side."""

    zone: str
    at: datetime
    kind: str  # "gap" (clocks go forward) or "overlap" (clocks go back: wall times happen twice)
    shift_sec: int  # new UTC offset minus old, in seconds (negative: back)
    offset_before_sec: int
    offset_after_sec: int
    dst_gap: str  # the rule in force: the job's own, or Debian cron's for its kind of job
    dst_overlap: str
    slots_before: list[datetime]
    slots_after: list[datetime]


def outlook(row: JobRow, now: datetime) -> DstOutlook | None:
    """The outlook of an enabled cron job with a chain; None for others and for zones without transitions."""
    plan = row.schedule
    if not isinstance(plan, schedule.CronSchedule) or not row.has_chain or not row.enabled:
        return None
    around = dst.around_transition(plan, now)
    if around is None:
        return None
    change = around.transition
    gap, overlap = schedule.dst_rule(plan)
    return DstOutlook(
        zone=change.zone,
        at=change.at,
        kind=change.kind,
        shift_sec=int(change.shift.total_seconds()),
        offset_before_sec=int(change.offset_before.total_seconds()),
        offset_after_sec=int(change.offset_after.total_seconds()),
        dst_gap=gap,
        dst_overlap=overlap,
        slots_before=list(around.before),
        slots_after=list(around.after),
    )
