"""The slot ledger's pure decisions: which slots of a job's schedule got no run, and which of them its catch-up
policy runs after all. No I/O here; `shared.ledger` records the rows and publishes the catch-up runs.

    gap_after       does a chain message that is about to post its next slot leave slots behind? (hot path: pure)
    gap_slots       the slots of a window, bounded, the most recent kept when there are too many
    gap_start       where a lost chain's or a pause's first unserved slot can be, from the job's next_due_at
    plan            the catch-up of a gap: which slots run (oldest first, spaced by the rate); the rest stay as
                    recorded (not run)

Catch-up policies (`catchup` in the definition):
    none    record the missed slots and go on at the next slot (the default, and the behaviour before policies)
    latest  run the most recent missed slot once
    all     run the `catchup_max` most recent missed slots, oldest first, never faster than
            `catchup_rate_per_sec`; the older ones stay recorded as not run
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared import schedule
from shared.definitions import Catchup

MAX_GAP_SLOTS = 10_000
"""At most this many gap rows per gap (a job paused for a year on a 1-second interval would name 31 million
slots): the most recent ones are recorded, and the log line says how many older slots were left without a row."""

_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Gap:
    """Slots that got no run, oldest first, and whether older ones were left out (`truncated`)."""

    slots: tuple[datetime, ...]
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class CatchupRun:
    slot: datetime
    delay_sec: float  # from now: 0 for the first, then spaced by 1 / rate


@dataclass(frozen=True, slots=True)
class CatchupPlan:
    runs: tuple[CatchupRun, ...]  # oldest slot first

    @property
    def slots(self) -> tuple[datetime, ...]:
        return tuple(r.slot for r in self.runs)


NO_CATCHUP = CatchupPlan(())


def gap_after(plan: schedule.Schedule | None, slot: datetime, now: datetime, own_missed: bool) -> bool:
    """Whether a chain message for `slot`, posting its next slot counted from `now`, leaves a gap: the slot
    itself did not run (`own_missed`: a misfire) or the schedule has slots in (slot, now] that nobody will post
    (the next slot is counted from now). One schedule computation, no I/O: the common path costs nothing more."""
    if own_missed:
        return True
    if plan is None or now - slot < min_spacing(plan):
        return False  # sooner than any two slots can be apart: nothing to compute
    return schedule.next_slot(plan, slot) <= now


def min_spacing(plan: schedule.Schedule) -> timedelta:
    """No two slots are closer: an interval's length; a minute for cron (its slots are whole minutes)."""
    if isinstance(plan, schedule.IntervalSchedule):
        return timedelta(seconds=plan.seconds)
    return timedelta(minutes=1)


def gap_slots(
    plan: schedule.Schedule, first: datetime, last: datetime, *, after: bool = False, limit: int = MAX_GAP_SLOTS
) -> Gap:
    """The slots s with first <= s <= last (first < s with `after`), oldest first. More than `limit`: the
    `limit` most recent (an interval schedule's window is moved up exactly; a cron one by its shortest period)."""
    start = first if after else first - _MICROSECOND
    if last <= start:
        return Gap(())
    truncated = False
    period = schedule.period_estimate(plan)
    if period * limit < last - start:
        start = max(start, last - period * limit)
        truncated = True
    slots: list[datetime] = []
    current = schedule.next_slot(plan, start)
    while current <= last:
        slots.append(current)
        current = schedule.next_slot(plan, current)
    if len(slots) > limit:
        slots, truncated = slots[-limit:], True
    return Gap(tuple(slots), truncated)


def gap_start(next_due_at: datetime | None, jitter_sec: float, fallback: datetime) -> datetime:
    """The earliest the first unserved slot can be: the chain's waiting message was due at `next_due_at`, which
    is its slot plus a jitter of at most `jitter_sec`. `fallback` when there was no waiting message."""
    if next_due_at is None:
        return fallback
    return next_due_at - timedelta(seconds=jitter_sec)


def plan(policy: Catchup | str, missed: Sequence[datetime], max_runs: int, rate_per_sec: float) -> CatchupPlan:
    """Which of the `missed` slots (any order) run after all, under the job's policy and bounds."""
    ordered = sorted(set(missed))
    policy = Catchup(policy)
    if not ordered or policy is Catchup.NONE:
        return NO_CATCHUP
    if max_runs < 1 or rate_per_sec <= 0:
        raise ValueError(f"catch-up bounds must be positive: max {max_runs}, rate {rate_per_sec}")
    chosen = ordered[-1:] if policy is Catchup.LATEST else ordered[-max_runs:]
    return CatchupPlan(tuple(CatchupRun(slot, i / rate_per_sec) for i, slot in enumerate(chosen)))


def wait_limit_sec(plan: CatchupPlan, timeout_sec: float, grace_sec: float) -> float:
    """How long after it is sent a catch-up run may still wait for its job's lock: its own delay, then as long as
    each run before it may take, plus the grace. Past that it expires and its slot stays recorded as not run."""
    if not plan.runs:
        return 0.0
    return plan.runs[-1].delay_sec + len(plan.runs) * timeout_sec + grace_sec
