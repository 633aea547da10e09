"""When a job's slots fall: cron and interval schedules as pure functions of (schedule, time).

Nothing here does I/O or reads the clock: every function takes the instant it reasons about as an argument,
so workers, the seeder, the watchdog and the tests all compute the same slots. Every datetime going in must be
timezone-aware (a naive one raises ValueError); every datetime coming out is in UTC.

Interval schedules
    Fixed rate on a grid: slot k is at ``phase_ms + k * seconds * 1000`` milliseconds after the Unix epoch.
    The grid never drifts, however late a run starts. ``phase_ms`` is 0 for an aligned job, otherwise a
    stable hash of the job id (so a thousand one-second jobs do not all fire in the same millisecond).

Cron schedules
    A 5-field expression (minute hour day-of-month month day-of-week) naming wall-clock times in the job's
    IANA time zone, read and fired as Debian's cron (Vixie cron 3.0 with Debian's patches) does it:

    * Grammar: numbers, names (jan-dec, sun-sat, any case; 0 and 7 are Sunday), ranges ``a-b`` (``3-3`` is
      minute 3), steps ``*/n`` and ``a-b/n``, lists. Anything cron would refuse, or read differently from
      what it seems to say (``5/15``, of which cron silently keeps only the 5), is refused with one line
      naming the field. Our own parser reads the fields; croniter only walks the naive calendar, fed the
      expanded values, because croniter 7 reads ``3-3`` as ``*`` and treats ``*/3`` as a restricted day field.
    * Days: when both day-of-month and day-of-week are restricted a day matching either runs; a field whose
      text starts with ``*`` (``*/3`` too) counts as unrestricted, and then both must match.
      ``1 0 */3 * 2`` runs on Tuesdays whose day is 1, 4, 7, ...; ``1 0 1,15 * 2`` on the 1st, the 15th and
      every Tuesday.

    Daylight-saving transitions (offset changes of up to 3 hours), as Debian cron's clock handling does it:

    * Wildcard jobs, whose minute or hour field starts with ``*`` (``*/15``, ``* 2``, ``15 */7``), follow
      real time: a wall time that does not exist (spring-forward gap) does not fire; a wall time that happens
      twice (fall-back) fires at both occurrences. ``*/15 * * * *`` fires every 15 real minutes straight
      through both transitions; ``0 */2 * * *`` in America/New_York skips 02:00 on 2026-03-08.
    * Fixed-time jobs (neither field starts with ``*``) fire once per wall time named. A wall time inside
      the gap fires once, at the first instant after the gap (``30 2 * * *`` in America/New_York on
      2026-03-08 fires at 03:00 EDT = 07:00 UTC). A wall time that happens twice fires at its first
      occurrence only (``30 1 * * *`` on 2026-11-01 fires at 01:30 EDT = 05:30 UTC, not again at 06:30 UTC).
    * Slots are strictly increasing: several gap wall times that land on the same instant are one slot.

    A job may instead name its own rule (``dst_gap``, ``dst_overlap``; either one alone takes the other from
    the rule above for its kind of job): ``dst_gap = "shift_forward"`` fires a wall time inside a gap once,
    at the first instant after the gap, ``"skip"`` never fires it; ``dst_overlap = "first"`` fires a repeated
    wall time on its first pass, ``"second"`` on its second, ``"both"`` on both. The rule above is
    (shift_forward, first) for fixed-time jobs and (skip, both) for wildcard jobs.

    tests/unit/test_cron_differential.py holds this to cronsim and to a transcription of cron's main loop.
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

from croniter import CroniterBadDateError, croniter

__all__ = [
    "DST_GAPS",
    "DST_OVERLAPS",
    "RUN_ID_NAMESPACE",
    "CronSchedule",
    "IntervalSchedule",
    "Schedule",
    "backoff_delay",
    "derive_run_id",
    "describe",
    "dst_rule",
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
# A forward search starts again at most once or twice (the offset changes near its start or its end).
_MAX_RESTARTS = 8
# Any fixed naive instant works; a Monday in January keeps period_estimate free of calendar oddities.
_REFERENCE_NAIVE = datetime(2001, 1, 1)
_PERIOD_SAMPLES = 8

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# Longest number a field may hold: keeps int() away from absurd input; no field or step needs more.
_MAX_DIGITS = 6
# zoneinfo resolves these to files that depend on the machine (or are not places): never a job's zone.
_MACHINE_ZONES = frozenset({"localtime", "posixrules", "Factory"})


DST_GAPS = ("shift_forward", "skip")
"""What a wall time inside a spring-forward gap does: fire at the gap's end, or not at all."""
DST_OVERLAPS = ("first", "second", "both")
"""Which passes of a wall time that happens twice (fall-back) fire."""


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """Wall-clock times named by a 5-field cron expression in an IANA time zone. `dst_gap` and `dst_overlap`
    (None: Debian cron's rule for the kind of job, see the module doc) choose what gaps and repeats do."""

    expr: str
    timezone: str
    dst_gap: str | None = None
    dst_overlap: str | None = None

    def __post_init__(self) -> None:
        if self.dst_gap is not None and self.dst_gap not in DST_GAPS:
            raise ValueError(f"dst_gap must be one of {', '.join(DST_GAPS)}, got {self.dst_gap!r}")
        if self.dst_overlap is not None and self.dst_overlap not in DST_OVERLAPS:
            raise ValueError(f"dst_overlap must be one of {', '.join(DST_OVERLAPS)}, got {self.dst_overlap!r}")

    @property
    def own_dst_rule(self) -> bool:
        """Whether the job names its own daylight-saving rule (else Debian cron's applies)."""
        return self.dst_gap is not None or self.dst_overlap is not None


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
class _CronField:
    """One field's grammar: its name in messages, its values, the names standing for low, low + 1, ..."""

    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()

    @property
    def allowed(self) -> str:
        names = f" or {self.names[0]}-{self.names[-1]}" if self.names else ""
        return f"{self.low}-{self.high}{names}"


_CRON_FIELDS = (
    _CronField("minute", 0, 59),
    _CronField("hour", 0, 23),
    _CronField("day-of-month", 1, 31),
    _CronField("month", 1, 12, _MONTH_NAMES),
    _CronField("day-of-week", 0, 7, _DAY_NAMES),
)


class _FieldError(ValueError):
    """What is wrong inside one field; validate_cron adds the expression and the field's name."""


@dataclass(frozen=True, slots=True)
class _CronFields:
    """An expression as cron reads it: each field's values, and which fields start with '*'.

    cron (entry.c) keeps one flag per field whose text starts with '*' (``*/3`` included): day-of-month and
    day-of-week are ORed only when neither is flagged, and a job whose minute or hour is flagged is a
    wildcard job, which follows real time across daylight-saving changes.
    """

    values: tuple[frozenset[int], ...]  # minute, hour, day-of-month, month, day-of-week (0-6, Sunday 0)
    starred: tuple[bool, ...]

    @property
    def wildcard(self) -> bool:
        return self.starred[0] or self.starred[1]

    def croniter_args(self) -> tuple[str, bool]:
        """An expression croniter reads as cron would (explicit values, never a range) and its day_or flag."""
        texts = [_croniter_values(values, spec) for values, spec in zip(self.values, _CRON_FIELDS, strict=True)]
        day_or = not (self.starred[2] or self.starred[4])
        if day_or and "*" in (texts[2], texts[4]):
            # Either field alone already matches every day, so their union does too. croniter would read a
            # lone '*' as "unrestricted" and keep only the other field.
            texts[2] = texts[4] = "*"
        return " ".join(texts), day_or


def _croniter_values(values: frozenset[int], spec: _CronField) -> str:
    top = 6 if spec.high == 7 else spec.high  # day-of-week values were folded to 0-6
    if len(values) == top - spec.low + 1:
        return "*"
    return ",".join(str(value) for value in sorted(values))


@dataclass(frozen=True, slots=True)
class _DstRule:
    """What gaps and repeated wall times do for one schedule (the defaults resolved)."""

    gap: str
    overlap: str

    @classmethod
    def of(cls, schedule: CronSchedule, wildcard: bool) -> _DstRule:
        return cls(
            schedule.dst_gap or ("skip" if wildcard else "shift_forward"),
            schedule.dst_overlap or ("both" if wildcard else "first"),
        )


@dataclass(frozen=True, slots=True)
class _CronPlan:
    """A parsed expression: croniter parses slowly, so each expression is parsed once per process."""

    template: croniter
    wildcard: bool

    def iterator(self, start: datetime) -> croniter:
        # A shallow copy is safe: croniter copies the expanded fields before changing them.
        it = copy.copy(self.template)
        it.set_current(start, force=True)
        return it


# --- validation -------------------------------------------------------------------------------------------


def validate_cron(expr: str) -> str:
    """Return `expr` stripped, or raise ValueError naming the expression and what is wrong with it."""
    if isinstance(expr, str):
        _valid_cron(expr)  # a file of 10,000 jobs repeats its expressions, and seeding validates each twice
    else:
        _parse_cron(expr)  # raises: not a string
    return expr.strip()


@lru_cache(maxsize=4096)
def _valid_cron(expr: str) -> None:
    """`_parse_cron` of a valid expression, remembered (an invalid one raises, and is not)."""
    _parse_cron(expr)


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


def _parse_cron(expr: str) -> _CronFields:
    """Read `expr` with Debian cron's grammar, or raise ValueError naming the field at fault."""
    if not isinstance(expr, str):
        raise ValueError(f"cron expression must be a string, got {type(expr).__name__}")
    text = expr.strip()
    fields = text.split()
    if len(fields) != len(_CRON_FIELDS):
        raise ValueError(_field_count_message(text, len(fields)))
    values: list[frozenset[int]] = []
    for field, spec in zip(fields, _CRON_FIELDS, strict=True):
        try:
            values.append(_parse_field(field, spec))
        except _FieldError as exc:
            raise ValueError(
                f"cron expression {text!r} is not valid: {spec.name} field {field!r} is not understood "
                f"(allowed {spec.allowed}, combined with ',', '-', '/' or '*'): {exc}"
            ) from None
    parsed = _CronFields(values=tuple(values), starred=tuple(field.startswith("*") for field in fields))
    if not _ever_fires(parsed):
        raise ValueError(
            f"cron expression {text!r} never fires: no calendar date matches its day-of-month, "
            "month and day-of-week fields (like February 30)"
        )
    return parsed


def _parse_field(text: str, spec: _CronField) -> frozenset[int]:
    values: set[int] = set()
    for term in text.split(","):
        values.update(_parse_term(term, spec))
    if spec.high == 7:
        return frozenset(value % 7 for value in values)  # 7 is Sunday too
    return frozenset(values)


def _parse_term(term: str, spec: _CronField) -> range:
    """One list item: ``*``, ``*/n``, ``a``, ``a-b`` or ``a-b/n`` (entry.c's get_range)."""
    body, slash, step_text = term.partition("/")
    step = _parse_number(step_text, "step") if slash else 1
    if step == 0:
        raise _FieldError("a step must be 1 or more")
    if body == "*":
        return range(spec.low, spec.high + 1, step)
    first_text, dash, last_text = body.partition("-")
    first = _parse_value(first_text, spec)
    if not dash:
        if slash:
            # cron keeps the value and silently drops the step; other tools read 'a-max/n'.
            raise _FieldError(f"a step needs a range or '*' before it, such as '{first}-{spec.high}/{step}'")
        return range(first, first + 1)
    last = _parse_value(last_text, spec)
    if last < first:
        raise _FieldError(f"the range {body!r} runs backwards")
    return range(first, last + 1, step)


def _parse_value(text: str, spec: _CronField) -> int:
    if spec.names and text.lower() in spec.names:
        return spec.low + spec.names.index(text.lower())
    value = _parse_number(text, "value")
    if not spec.low <= value <= spec.high:
        raise _FieldError(f"{value} is outside {spec.low}-{spec.high}")
    return value


def _parse_number(text: str, what: str) -> int:
    if not text:
        raise _FieldError(f"a {what} is missing")
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS:
        raise _FieldError(f"{text!r} is not a {what} cron knows")
    return int(text)


def _ever_fires(parsed: _CronFields) -> bool:
    try:
        _croniter_for(parsed).get_next(datetime)
    except CroniterBadDateError:
        return False
    return True


def _croniter_for(parsed: _CronFields) -> croniter:
    text, day_or = parsed.croniter_args()
    return croniter(text, _REFERENCE_NAIVE, day_or=day_or)


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
    *,
    cron_expr: str | None,
    timezone: str,
    interval_seconds: int | None,
    job_id: str,
    align: bool,
    dst_gap: str | None = None,
    dst_overlap: str | None = None,
) -> Schedule:
    """Build and validate a job's schedule from its definition; exactly one of cron_expr/interval_seconds.

    `timezone`, `dst_gap` and `dst_overlap` are only used by cron schedules: an interval grid is in absolute time.
    """
    if cron_expr is not None and interval_seconds is not None:
        raise ValueError(f"job {job_id!r} sets both cron_expr and interval_seconds; set exactly one")
    if cron_expr is not None:
        return CronSchedule(validate_cron(cron_expr), validate_timezone(timezone), dst_gap, dst_overlap)
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
        named = [
            f"{name} {value}"
            for name, value in (("dst_gap", schedule.dst_gap), ("dst_overlap", schedule.dst_overlap))
            if value
        ]
        rule = f" ({', '.join(named)})" if named else ""
        return f"cron {schedule.expr!r} in {schedule.timezone}{rule}"
    every = f"every {_duration_words(schedule.seconds)}"
    if schedule.phase_ms:
        return f"{every} (phase {schedule.phase_ms / 1000:.3f} s)"
    return every


def dst_rule(schedule: CronSchedule) -> tuple[str, str]:
    """The (dst_gap, dst_overlap) a cron schedule fires by: its own, or Debian cron's for its kind of job."""
    rule = _DstRule.of(schedule, _plan(schedule.expr).wildcard)
    return rule.gap, rule.overlap


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


def _instants(naive: datetime, zone: ZoneInfo, rule: _DstRule) -> tuple[datetime, ...]:
    """The instants at which the wall time `naive` fires, by the daylight-saving rule of the schedule."""
    # PEP 495: fold=0 applies the offset in force before a transition, fold=1 the one after. They agree
    # for an ordinary time, fold=0 is earlier for a repeated time and later for a time in a gap.
    early = _first_instant(naive, zone)
    late = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if early == late:
        return (early,)
    if early < late:
        return {"first": (early,), "second": (late,)}.get(rule.overlap, (early, late))
    return () if rule.gap == "skip" else (_transition_instant(late, early, zone),)


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
    parsed = _parse_cron(expr)
    return _CronPlan(template=_croniter_for(parsed), wildcard=parsed.wildcard)


def _step(it: croniter, forward: bool) -> datetime | None:
    """The next (or previous) naive wall time the expression names, None when croniter finds none."""
    try:
        found: datetime = it.get_next(datetime) if forward else it.get_prev(datetime)
    except CroniterBadDateError:
        return None
    return found


def _cron_next(schedule: CronSchedule, after: datetime) -> datetime:
    plan, zone = _plan(schedule.expr), _zone(schedule.timezone)
    if schedule.own_dst_rule:
        return _ruled_next(schedule, plan, zone, after)
    if plan.wildcard:
        return _wildcard_next(schedule, plan, zone, after)
    return _fixed_next(schedule, plan, zone, after)


def _fixed_next(schedule: CronSchedule, plan: _CronPlan, zone: ZoneInfo, after: datetime) -> datetime:
    """A fixed-time job's first slot after `after`: its next wall time beyond the highest the clock has shown.

    This is cron's virtual time: each wall time fires once, when the clock first reaches it, so a time in a
    gap fires at the gap's end and a repeated time only on its first pass. One croniter step.
    """
    wall = _wall(after, zone)
    earlier = after - _DST_WINDOW
    if _offset(zone, earlier) > _offset(zone, after):
        # Clocks went back within the window: the wall times up to where they stood have fired already.
        change = _transition_instant(earlier, after, zone)
        wall = max(wall, _wall(change - _MICROSECOND, zone))
    candidate = _next_wall(schedule, plan, wall)
    return _instants(candidate, zone, _DstRule.of(schedule, wildcard=False))[0]


def _wildcard_next(schedule: CronSchedule, plan: _CronPlan, zone: ZoneInfo, after: datetime) -> datetime:
    """A wildcard job's first slot after `after`: the first later instant whose wall time matches.

    Away from offset changes that is one croniter step (the hot path of every chain message). Across one,
    the search starts again where the new offset begins, so skipped wall times never fire and repeated
    ones fire on both passes.
    """
    start, inclusive = after, False
    for _ in range(_MAX_RESTARTS):
        offset = _offset(zone, start)
        wall = _wall(start, zone)
        # Inclusive: a wall time equal to the restart instant's own counts (a whole minute after the change).
        candidate = _next_wall(schedule, plan, wall - _MICROSECOND if inclusive else wall)
        instant = (candidate - offset).replace(tzinfo=UTC)
        restart = _restart_point(zone, start, instant, offset)
        if restart is None:
            return instant
        start, inclusive = restart, True
    raise RuntimeError(f"cron search for {schedule!r} after {after.isoformat()} did not converge")


def _restart_point(zone: ZoneInfo, start: datetime, end: datetime, offset: timedelta) -> datetime | None:
    """None if `offset` holds from `start` to `end`, else an instant before which (after `start`) no slot lies.

    Only the stretches within _DST_WINDOW of either end are probed: an offset that differs only in between
    (by less than the window) maps that stretch to wall times between the two ends', where nothing matches.
    """
    near = min(end, start + _DST_WINDOW)
    if _offset(zone, near) != offset:
        return _transition_instant(start, near, zone)
    if end == near:
        return None
    far = max(near, end - _DST_WINDOW)
    if _offset(zone, far) != offset:
        return far
    if _offset(zone, end) != offset:
        return _transition_instant(far, end, zone)
    return None


def _ruled_next(schedule: CronSchedule, plan: _CronPlan, zone: ZoneInfo, after: datetime) -> datetime:
    """The first slot after `after` of a job with its own daylight-saving rule: the earliest instant > `after`
    among the instants of the wall times the expression names (`_instants`).

    Away from offset changes that is the first wall time after `after`'s own. Near one, wall times from one
    window before `after`'s are read too (a repeated wall time's second pass, or a gap's end, can come after
    `after` although its wall time is earlier), and the walk goes on one window past the best instant found,
    beyond which no wall time maps to an earlier instant (offsets change by less than the window).
    """
    rule = _DstRule.of(schedule, plan.wildcard)
    near_after = _offset_swing(zone, (after - _DST_WINDOW, after, after + _DST_WINDOW)) != _ZERO
    wall = _wall(after, zone)
    it = plan.iterator(_floor_minute(wall - _DST_WINDOW) - _MINUTE if near_after else _floor_minute(wall))
    best: datetime | None = None
    best_near = False
    for _ in range(_MAX_SCAN_STEPS):
        naive = _step(it, forward=True)
        if naive is None:
            break
        if best is not None and (not best_near or naive > _wall(best, zone) + _DST_WINDOW):
            return best
        for instant in _instants(naive, zone, rule):
            if instant > after and (best is None or instant < best):
                best = instant
                best_near = _offset_swing(zone, (best - _DST_WINDOW, best, best + _DST_WINDOW)) != _ZERO
    if best is None:
        raise ValueError(f"cron expression {schedule.expr!r} has no slot after {after.isoformat()}")
    return best


def _next_wall(schedule: CronSchedule, plan: _CronPlan, wall: datetime) -> datetime:
    """The first whole-minute wall time after `wall` that the expression names."""
    found = _step(plan.iterator(_floor_minute(wall)), forward=True)
    if found is None:
        raise ValueError(f"cron expression {schedule.expr!r} has no slot after {wall.isoformat()} (wall time)")
    return found


def _cron_previous(schedule: CronSchedule, at: datetime) -> datetime | None:
    plan, zone = _plan(schedule.expr), _zone(schedule.timezone)
    candidate = _step(plan.iterator(_floor_minute(_wall(at, zone)) + _MINUTE), forward=False)
    if candidate is None:
        return None
    instant = _first_instant(candidate, zone)
    probes = (at - _DST_WINDOW, at, instant - _DST_WINDOW, instant, instant + _DST_WINDOW)
    swing = _offset_swing(zone, probes)
    rule = _DstRule.of(schedule, plan.wildcard)
    found = _scan_backward(plan, zone, at, swing + _MINUTE, rule) if swing else instant
    if found is None or found < at - _PREVIOUS_HORIZON:
        return None
    return found


def _scan_backward(plan: _CronPlan, zone: ZoneInfo, at: datetime, margin: timedelta, rule: _DstRule) -> datetime | None:
    """Latest slot <= `at` near an offset change: the mirror image of _scan_forward."""
    it = plan.iterator(_floor_minute(_wall(at, zone)) + _MINUTE + margin)
    oldest = _wall(at, zone) - _PREVIOUS_HORIZON - margin
    best: datetime | None = None
    # Unlike the forward scan, running out of steps has an honest answer here: no slot in the horizon.
    for _ in range(_MAX_SCAN_STEPS):
        naive = _step(it, forward=False)
        if naive is None or naive < oldest or (best is not None and naive <= _wall(best, zone) - margin):
            break
        for instant in _instants(naive, zone, rule):
            if instant <= at and (best is None or instant > best):
                best = instant
    return best
