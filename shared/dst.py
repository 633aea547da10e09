"""A zone's next daylight-saving transition and a job's slots around it: pure functions of (zone, schedule, time).

`next_transition` scans the zone's UTC offset forward in steps shorter than any time between two transitions and
bisects the first step whose two ends differ down to the second the new offset starts. `around_transition` lists
a cron job's slots just before and just after that instant, with its own daylight-saving rule (dst_gap,
dst_overlap) applied, so `status` and the API can show what the next change does to the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from shared import schedule

# Transitions of one zone are months apart (a few days at the least, in the historical data); a week's step never
# steps over two of them, which would cancel out.
_STEP = timedelta(days=7)
_HORIZON = timedelta(days=400)
_SLOTS_EACH_SIDE = 3


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of a zone's UTC offset: from `at` on, `offset_after` applies instead of `offset_before`."""

    zone: str
    at: datetime  # UTC, whole seconds
    offset_before: timedelta
    offset_after: timedelta

    @property
    def shift(self) -> timedelta:
        """Positive: clocks go forward (a gap of wall times); negative: back (wall times happen twice)."""
        return self.offset_after - self.offset_before

    @property
    def kind(self) -> str:
        return "gap" if self.shift > timedelta(0) else "overlap"

    def wall(self, offset: timedelta) -> datetime:
        """The transition instant as a naive wall time under `offset`."""
        return (self.at + offset).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class AroundTransition:
    """A job's next zone transition and its slots either side of it (UTC)."""

    transition: Transition
    before: tuple[datetime, ...]
    after: tuple[datetime, ...]


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    return offset if offset is not None else timedelta(0)


def next_transition(zone_name: str, after: datetime, horizon: timedelta = _HORIZON) -> Transition | None:
    """The zone's first UTC-offset change strictly after `after` (aware), within `horizon`; None if none."""
    zone = ZoneInfo(schedule.validate_timezone(zone_name))
    if after.tzinfo is None:
        raise ValueError(f"after must be timezone-aware, got naive {after.isoformat()}")
    start = after.astimezone(UTC).replace(microsecond=0)
    offset = _offset(zone, start)
    low = start
    end = start + horizon
    while low < end:
        high = min(low + _STEP, end)
        if _offset(zone, high) != offset:
            return _bisect(zone_name, zone, low, high, offset)
        low = high
    return None


def _bisect(zone_name: str, zone: ZoneInfo, low: datetime, high: datetime, before: timedelta) -> Transition:
    """The first whole second in (low, high] whose offset differs from `before` (it differs at `high`)."""
    lo, hi = int(low.timestamp()), int(high.timestamp())
    while hi - lo > 1:
        middle = (lo + hi) // 2
        if _offset(zone, datetime.fromtimestamp(middle, UTC)) == before:
            lo = middle
        else:
            hi = middle
    at = datetime.fromtimestamp(hi, UTC)
    return Transition(zone_name, at, before, _offset(zone, at))


def around_transition(
    plan: schedule.Schedule | None, now: datetime, count: int = _SLOTS_EACH_SIDE
) -> AroundTransition | None:
    """For a cron job: its zone's next transition after `now` and up to `count` slots either side of it (the
    ones before not earlier than `now`). None for an interval job (absolute time: no transition applies), a job
    without a schedule, or a zone without a transition within the horizon."""
    if not isinstance(plan, schedule.CronSchedule):
        return None
    found = next_transition(plan.timezone, now)
    if found is None:
        return None
    before, after = _slots_around(plan, found, count)
    return AroundTransition(found, tuple(s for s in before if s >= now), after)


@lru_cache(maxsize=4096)
def _slots_around(
    plan: schedule.CronSchedule, change: Transition, count: int
) -> tuple[tuple[datetime, ...], tuple[datetime, ...]]:
    """The `count` slots before and after a transition: they depend on nothing else, and the slot search next to a
    transition is the slow one (a few ms), so `status` over many jobs computes each (schedule, transition) once."""
    point = change.at - timedelta(microseconds=1)
    after = tuple(schedule.next_slots(plan, point, count))
    before: list[datetime] = []
    while len(before) < count:
        slot = schedule.previous_slot(plan, point)
        if slot is None:
            break
        before.insert(0, slot)
        point = slot - timedelta(microseconds=1)
    return tuple(before), after
