"""When a job's slots fall: cron and interval schedules as pure functions of (schedule, time).

Nothing here does I/O or reads the clock: every function takes the instant it reasons about as an argument,
so workers, the seeder, the watchdog and the tests all compute the same slots. Every datetime going in must be
timezone-aware (a naive one raises ValueError); every datetime coming out is in UTC.

Interval schedules
    Fixed rate on a grid: slot k is at ``phase_ms + k * seconds * 1000`` milliseconds after the Unix epoch.
    The grid never drifts, however late a run starts. ``phase_ms`` is 0 for an aligned job, otherwise a
    stable hash of the job id (so a thousand one-second jobs do not all fire in the same millisecond).

Cron schedules
    A 5-field expression (minute hour day-of-month month day-of-week; croniter syntax, Vixie-cron OR rule
    when both day fields are restricted) naming wall-clock times in the job's IANA time zone.
    Daylight-saving transitions follow cronie:

    * Frequent jobs, whose hour field covers every hour (``*``, ``*/1``, ``0-23``), follow real elapsed time.
      A wall time that does not exist (spring-forward gap) does not fire; a wall time that happens twice
      (fall-back) fires at both occurrences. ``*/15 * * * *`` therefore fires every 15 real minutes
      straight through both transitions.
    * Every other job (specific hours) fires once per wall time named. A wall time inside the gap fires
      once, at the first instant after the gap (``30 2 * * *`` in America/New_York on 2026-03-08 fires at
      03:00 EDT = 07:00 UTC). A wall time that happens twice fires at its first occurrence only
      (``30 1 * * *`` on 2026-11-01 fires at 01:30 EDT = 05:30 UTC, not again at 06:30 UTC).
      Only the hour field decides: ``*/2`` (not every hour) is specific hours, and so is ``* 2 * * *``
      (cronie counts any minute or hour field that starts with ``*`` as frequent; we keep one simple rule).
    * Slots are strictly increasing: several gap wall times that land on the same instant are one slot.

    Offset changes of up to 3 hours are handled exactly, which covers every daylight-saving rule in the tz
    database; historical date-line moves of a whole day are not modelled.
    ``previous_slot`` looks back at most 400 days and answers None beyond that.

Run ids are uuid5 values under ``RUN_ID_NAMESPACE``, so every worker derives the same id for the same
(scope, job, epoch, slot, attempt): that is what makes a duplicate chain message collide on the primary key.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

__all__ = [
    "RUN_ID_NAMESPACE",
    "CronSchedule",
    "IntervalSchedule",
    "Schedule",
    "backoff_delay",
    "derive_run_id",
    "describe",
    "interval_phase_ms",
    "is_misfire",
    "make_schedule",
    "next_slot",
    "next_slots",
    "period_estimate",
    "previous_slot",
    "slot_jitter",
    "slots_between",
    "validate_cron",
    "validate_timezone",
]
# Never change this constant: run ids already stored in scheduler.job_runs were derived under it.
RUN_ID_NAMESPACE = uuid.UUID("8ed5a4f3-930f-4ae8-9f45-3f6e487fd412")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MINUTE = timedelta(minutes=1)
_ZERO = timedelta(0)
# How far around an instant we look for a UTC-offset change; also the largest change handled exactly.
_DST_WINDOW = timedelta(hours=3)
_PREVIOUS_HORIZON = timedelta(days=400)
# A minutely job scans about 2 * (offset change) / 1 min candidates near a transition; this only stops a bug.
_MAX_SCAN_STEPS = 5_000
# Any fixed naive instant works; a Monday in January keeps period_estimate free of calendar oddities.
_REFERENCE_NAIVE = datetime(2001, 1, 1)
_PERIOD_SAMPLES = 8

_CRON_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31 or L"),
    ("month", "1-12 or jan-dec"),
    ("day-of-week", "0-7 or sun-sat"),
)
# zoneinfo resolves these to files that depend on the machine (or are not places): never a job's zone.
_MACHINE_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """Wall-clock times named by a 5-field cron expression in an IANA time zone."""

    expr: str
    timezone: str


@dataclass(frozen=True, slots=True)
class IntervalSchedule:
    """A fixed-rate grid: slots at ``phase_ms + k * seconds * 1000`` ms after the Unix epoch."""

    seconds: int
    phase_ms: int

    def __post_init__(self) -> None:
        # Checked here because a zero period would divide by zero deep inside the grid arithmetic.
        _check_interval_seconds(self.seconds)
        if isinstance(self.phase_ms, bool) or not isinstance(self.phase_ms, int):
            raise ValueError(f"phase_ms must be an integer, got {self.phase_ms!r}")
        if not 0 <= self.phase_ms < self.seconds * 1000:
            raise ValueError(f"phase_ms must be in [0, {self.seconds * 1000}), got {self.phase_ms}")


Schedule = CronSchedule | IntervalSchedule


@dataclass(frozen=True, slots=True)
class _CronPlan:
    """A parsed expression: croniter parses slowly, so each expression is parsed once per process."""

    template: croniter
    frequent: bool

    def iterator(self, start: datetime) -> croniter:
        # A shallow copy is safe: croniter copies the expanded fields before changing them.
        it = copy.copy(self.template)
        it.set_current(start, force=True)
        return it


# --- validation -------------------------------------------------------------------------------------------


def validate_cron(expr: str) -> str:
    """Return `expr` stripped, or raise ValueError naming the expression and what is wrong with it."""
    if not isinstance(expr, str):
        raise ValueError(f"cron expression must be a string, got {type(expr).__name__}")
    text = expr.strip()
    fields = text.split()
    if len(fields) != len(_CRON_FIELDS):
        raise ValueError(_field_count_message(text, len(fields)))
    if not _expands(text):
        raise ValueError(_syntax_message(text, fields))
    if not _ever_fires(text):
        raise ValueError(
            f"cron expression {text!r} never fires: no calendar date matches its day-of-month, "
            "month and day-of-week fields (like February 30)"
        )
    return text


def validate_timezone(name: str) -> str:
    """Return `name` if zoneinfo knows it as an IANA time zone, else raise ValueError."""
    if not isinstance(name, str) or name in _MACHINE_ZONES:
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as 'Asia/Seoul' or 'UTC'")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as 'Asia/Seoul' or 'UTC'") from exc
    return name


def _field_count_message(text: str, count: int) -> str:
    expected = "minute hour day-of-month month day-of-week"
    if text.startswith("@"):
        return f"cron expression {text!r} is an alias; write the 5 fields ({expected}), e.g. '0 0 * * *'"
    return f"cron expression {text!r} has {count} fields; expected 5: {expected}"


def _expands(text: str) -> bool:
    try:
        croniter.expand(text)
    except (CroniterError, ValueError, TypeError, IndexError, KeyError):
        # croniter reports some malformed input as plain Python errors; all mean "not valid".
        return False
    return True


def _syntax_message(text: str, fields: list[str]) -> str:
    # Try each field on its own so the message can point at the one that is wrong.
    for index, (name, allowed) in enumerate(_CRON_FIELDS):
        probe = ["*"] * len(_CRON_FIELDS)
        probe[index] = fields[index]
        if not _expands(" ".join(probe)):
            return (
                f"cron expression {text!r} is not valid: {name} field {fields[index]!r} is not understood "
                f"(allowed {allowed}, combined with ',', '-', '/' or '*')"
            )
    return f"cron expression {text!r} is not valid: its fields cannot be combined"


def _ever_fires(text: str) -> bool:
    try:
        croniter(text, _REFERENCE_NAIVE).get_next(datetime)
    except CroniterBadDateError:
        return False
    return True


def _check_interval_seconds(seconds: int) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
        raise ValueError(f"interval_seconds must be a whole number >= 1, got {seconds!r}")


# --- construction -----------------------------------------------------------------------------------------


def interval_phase_ms(job_id: str, seconds: int, align: bool) -> int:
    """Offset of a job's interval grid from the epoch: 0 when aligned, else a stable hash of the job id."""
    _check_interval_seconds(seconds)
    if align:
        return 0
    # blake2b, not hash(): Python's string hash is salted per process, and every worker must agree.
    digest = hashlib.blake2b(job_id.encode("utf-8"), digest_size=8, person=b"sched-phase").digest()
    return int.from_bytes(digest, "big") % (seconds * 1000)


def make_schedule(
    *, cron_expr: str | None, timezone: str, interval_seconds: int | None, job_id: str, align: bool
) -> Schedule:
    """Build and validate a job's schedule from its definition; exactly one of cron_expr/interval_seconds.

    `timezone` is only used by cron schedules: an interval grid is in absolute time.
    """
    if cron_expr is not None and interval_seconds is not None:
        raise ValueError(f"job {job_id!r} sets both cron_expr and interval_seconds; set exactly one")
    if cron_expr is not None:
        return CronSchedule(expr=validate_cron(cron_expr), timezone=validate_timezone(timezone))
    if interval_seconds is not None:
        phase = interval_phase_ms(job_id, interval_seconds, align)
        return IntervalSchedule(seconds=interval_seconds, phase_ms=phase)
    raise ValueError(f"job {job_id!r} sets neither cron_expr nor interval_seconds; set exactly one")


# --- slots ------------------------------------------------------------------------------------------------


def next_slot(schedule: Schedule, after: datetime) -> datetime:
    """The first slot strictly after `after`, in UTC."""
    after = _as_utc(after, "after")
    if isinstance(schedule, IntervalSchedule):
        return _interval_next(schedule, after)
    return _cron_next(schedule, after)


def next_slots(schedule: Schedule, after: datetime, n: int) -> list[datetime]:
    """The first `n` slots strictly after `after`, in increasing order."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    slots: list[datetime] = []
    current = after
    for _ in range(n):
        current = next_slot(schedule, current)
        slots.append(current)
    return slots


def slots_between(schedule: Schedule, start: datetime, end: datetime, limit: int = 10_000) -> list[datetime]:
    """Every slot s with start <= s <= end (for backfill); ValueError if there are more than `limit`."""
    start, end = _as_utc(start, "start"), _as_utc(end, "end")
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if end < start:
        return []
    if isinstance(schedule, IntervalSchedule):
        return _interval_between(schedule, start, end, limit)
    slots: list[datetime] = []
    # Slots are whole minutes or seconds, so "after start minus 1 us" means "at or after start".
    current = next_slot(schedule, start - _MICROSECOND)
    while current <= end:
        if len(slots) == limit:
            raise _too_many(limit, start, end)
        slots.append(current)
        current = next_slot(schedule, current)
    return slots


def previous_slot(schedule: Schedule, at_or_before: datetime) -> datetime | None:
    """The latest slot <= `at_or_before`; None for a cron job with no slot in the 400 days before it."""
    at = _as_utc(at_or_before, "at_or_before")
    if isinstance(schedule, IntervalSchedule):
        return _interval_previous(schedule, at)
    return _cron_previous(schedule, at)


def period_estimate(schedule: Schedule) -> timedelta:
    """Typical time between slots, for alert thresholds and default grace.

    For cron: the shortest wall-clock gap between consecutive slots after a fixed reference date, so the
    answer never depends on today's date or on daylight-saving time.
    """
    if isinstance(schedule, IntervalSchedule):
        return timedelta(seconds=schedule.seconds)
    it = _plan(schedule.expr).iterator(_REFERENCE_NAIVE)
    slots: list[datetime] = [it.get_next(datetime) for _ in range(_PERIOD_SAMPLES + 1)]
    return min(later - earlier for earlier, later in itertools.pairwise(slots))


def describe(schedule: Schedule) -> str:
    """The schedule in words, for a status table: "every 5 min", "cron '0 8 * * 1-5' in Asia/Seoul"."""
    if isinstance(schedule, CronSchedule):
        return f"cron {schedule.expr!r} in {schedule.timezone}"
    every = f"every {_duration_words(schedule.seconds)}"
    if schedule.phase_ms:
        return f"{every} (phase {schedule.phase_ms / 1000:.3f} s)"
    return every


def _duration_words(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _too_many(limit: int, start: datetime, end: datetime) -> ValueError:
    return ValueError(
        f"more than {limit} slots between {start.isoformat()} and {end.isoformat()}; "
        "narrow the range or raise the limit"
    )


# --- run-time decisions -----------------------------------------------------------------------------------


def is_misfire(slot: datetime, now: datetime, grace_sec: float) -> bool:
    """True when the run starts more than `grace_sec` after its slot (exactly at the grace is on time)."""
    if math.isnan(grace_sec) or grace_sec < 0:
        raise ValueError(f"grace_sec must be >= 0, got {grace_sec}")
    lateness = _as_utc(now, "now") - _as_utc(slot, "slot")
    return lateness / timedelta(seconds=1) > grace_sec


def slot_jitter(job_id: str, slot: datetime, jitter_sec: float) -> timedelta:
    """A delay in [0, jitter_sec) that is the same for the same (job, slot) on every worker."""
    if not math.isfinite(jitter_sec):
        raise ValueError(f"jitter_sec must be a finite number of seconds, got {jitter_sec}")
    total_us = int(jitter_sec * 1_000_000) if jitter_sec > 0 else 0
    if total_us <= 0:
        return _ZERO
    key = f"{job_id}/{_render_ms(_as_utc(slot, 'slot'))}".encode()
    digest = hashlib.blake2b(key, digest_size=8, person=b"sched-jitter").digest()
    return timedelta(microseconds=int.from_bytes(digest, "big") % total_us)


def backoff_delay(attempt: int, base_sec: float, cap_sec: float, rand: float) -> float:
    """Seconds to wait before attempt `attempt` + 1 after attempt `attempt` (>= 1) failed.

    Exponential ``base * 2**(attempt - 1)`` capped at `cap_sec`, with equal jitter: half the delay is
    fixed and half is scaled by `rand` (the caller's random number in [0, 1)), so retries of many jobs
    spread out but none comes back sooner than half its step. Never negative, never above the cap.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if not 0.0 <= rand <= 1.0:
        raise ValueError(f"rand must be in [0, 1), got {rand}")
    # The exponent is clamped so a runaway attempt count gives the cap instead of an OverflowError.
    step = max(0.0, base_sec) * 2.0 ** min(attempt - 1, 1000)
    delay = min(max(0.0, cap_sec), step)
    return delay / 2 + rand * delay / 2


def derive_run_id(scope: str, job_id: str, epoch: int, slot: datetime, attempt: int) -> uuid.UUID:
    """The run id of one chain attempt: identical for identical inputs on every machine."""
    name = f"{scope}/{job_id}/{epoch}/{_render_ms(_as_utc(slot, 'slot'))}/{attempt}"
    return uuid.uuid5(RUN_ID_NAMESPACE, name)


def _render_ms(slot: datetime) -> str:
    return slot.isoformat(timespec="milliseconds")


# --- instants and zones -----------------------------------------------------------------------------------


def _as_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _to_us(instant: datetime) -> int:
    return (instant - _EPOCH) // _MICROSECOND


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(validate_timezone(name))


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    """The naive wall-clock time of `instant` in `zone` (fold cleared, so it compares as a plain time)."""
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def _floor_minute(naive: datetime) -> datetime:
    return naive.replace(second=0, microsecond=0)


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    return offset if offset is not None else _ZERO


def _offset_swing(zone: ZoneInfo, instants: tuple[datetime, ...]) -> timedelta:
    """How much the zone's UTC offset varies across `instants` (zero: no transition nearby)."""
    offsets = [_offset(zone, instant) for instant in instants]
    return max(offsets) - min(offsets)


def _first_instant(naive: datetime, zone: ZoneInfo) -> datetime:
    return naive.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _instants(naive: datetime, zone: ZoneInfo, frequent: bool) -> tuple[datetime, ...]:
    """The instants at which the wall time `naive` fires, by the daylight-saving rules of the module doc."""
    # PEP 495: fold=0 applies the offset in force before a transition, fold=1 the one after. They agree
    # for an ordinary time, fold=0 is earlier for a repeated time and later for a time in a gap.
    early = _first_instant(naive, zone)
    late = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if early == late:
        return (early,)
    if early < late:
        return (early, late) if frequent else (early,)
    return () if frequent else (_transition_instant(late, early, zone),)


def _transition_instant(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The first instant in (before, after] whose offset is the one in force at `after` (whole seconds)."""
    target = _offset(zone, after)
    low, high = _to_us(before) // 1_000_000, _to_us(after) // 1_000_000
    for _ in range(64):  # bisection over at most a few hours of seconds: ~15 rounds
        if high - low <= 1:
            break
        middle = (low + high) // 2
        if _offset(zone, _from_us(middle * 1_000_000)) == target:
            high = middle
        else:
            low = middle
    return _from_us(high * 1_000_000)


# --- interval arithmetic (integer microseconds; the grid itself is whole milliseconds) ---------------------


def _interval_next(schedule: IntervalSchedule, after: datetime) -> datetime:
    period, phase = schedule.seconds * 1_000_000, schedule.phase_ms * 1000
    index = (_to_us(after) - phase) // period + 1
    return _from_us(phase + index * period)


def _interval_previous(schedule: IntervalSchedule, at: datetime) -> datetime:
    period, phase = schedule.seconds * 1_000_000, schedule.phase_ms * 1000
    index = (_to_us(at) - phase) // period
    return _from_us(phase + index * period)


def _interval_between(schedule: IntervalSchedule, start: datetime, end: datetime, limit: int) -> list[datetime]:
    period, phase = schedule.seconds * 1_000_000, schedule.phase_ms * 1000
    first = -((phase - _to_us(start)) // period)  # ceiling division
    last = (_to_us(end) - phase) // period
    if last - first + 1 > limit:
        raise _too_many(limit, start, end)
    return [_from_us(phase + index * period) for index in range(first, last + 1)]


# --- cron search --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _plan(expr: str) -> _CronPlan:
    text = validate_cron(expr)
    hours = croniter.expand(text)[0][1]
    return _CronPlan(template=croniter(text, _REFERENCE_NAIVE), frequent=hours == ["*"] or len(hours) == 24)


def _step(it: croniter, forward: bool) -> datetime | None:
    """The next (or previous) naive wall time the expression names, None when croniter finds none."""
    try:
        found: datetime = it.get_next(datetime) if forward else it.get_prev(datetime)
    except CroniterBadDateError:
        return None
    return found


def _cron_next(schedule: CronSchedule, after: datetime) -> datetime:
    plan, zone = _plan(schedule.expr), _zone(schedule.timezone)
    # croniter's first wall time after ours; with no offset change nearby it is the answer (the hot path).
    candidate = _step(plan.iterator(_floor_minute(_wall(after, zone))), forward=True)
    if candidate is None:
        raise ValueError(f"cron expression {schedule.expr!r} has no slot after {after.isoformat()}")
    instant = _first_instant(candidate, zone)
    probes = (after, after + _DST_WINDOW, instant - _DST_WINDOW, instant, instant + _DST_WINDOW)
    swing = _offset_swing(zone, probes)
    if not swing:
        return instant
    return _scan_forward(schedule, plan, zone, after, swing + _MINUTE)


def _scan_forward(
    schedule: CronSchedule, plan: _CronPlan, zone: ZoneInfo, after: datetime, margin: timedelta
) -> datetime:
    """Earliest slot after `after` near an offset change, where wall order and time order disagree.

    A wall time up to `margin` before ours may still lie ahead (fall-back repeats it), and a later wall
    time can lie before an earlier one, so scan from `margin` back until wall times pass the best
    instant found by `margin`.
    """
    it = plan.iterator(_floor_minute(_wall(after, zone)) - margin)
    best: datetime | None = None
    for _ in range(_MAX_SCAN_STEPS):
        naive = _step(it, forward=True)
        if naive is None or (best is not None and naive >= _wall(best, zone) + margin):
            break
        for instant in _instants(naive, zone, plan.frequent):
            if instant > after and (best is None or instant < best):
                best = instant
    else:
        raise RuntimeError(f"cron search for {schedule!r} after {after.isoformat()} did not converge")
    if best is None:
        raise ValueError(f"cron expression {schedule.expr!r} has no slot after {after.isoformat()}")
    return best


def _cron_previous(schedule: CronSchedule, at: datetime) -> datetime | None:
    plan, zone = _plan(schedule.expr), _zone(schedule.timezone)
    candidate = _step(plan.iterator(_floor_minute(_wall(at, zone)) + _MINUTE), forward=False)
    if candidate is None:
        return None
    instant = _first_instant(candidate, zone)
    probes = (at - _DST_WINDOW, at, instant - _DST_WINDOW, instant, instant + _DST_WINDOW)
    swing = _offset_swing(zone, probes)
    found = _scan_backward(plan, zone, at, swing + _MINUTE) if swing else instant
    if found is None or found < at - _PREVIOUS_HORIZON:
        return None
    return found


def _scan_backward(plan: _CronPlan, zone: ZoneInfo, at: datetime, margin: timedelta) -> datetime | None:
    """Latest slot <= `at` near an offset change: the mirror image of _scan_forward."""
    it = plan.iterator(_floor_minute(_wall(at, zone)) + _MINUTE + margin)
    oldest = _wall(at, zone) - _PREVIOUS_HORIZON - margin
    best: datetime | None = None
    # Unlike the forward scan, running out of steps has an honest answer here: no slot in the horizon.
    for _ in range(_MAX_SCAN_STEPS):
        naive = _step(it, forward=False)
        if naive is None or naive < oldest or (best is not None and naive <= _wall(best, zone) - margin):
            break
        for instant in _instants(naive, zone, plan.frequent):
            if instant <= at and (best is None or instant > best):
                best = instant
    return best
