"""Independent references for cron slots, for the differential and property tests of shared/schedule.py.

Two oracles, neither sharing code with the framework:

* ``cronsim_slots``: cronsim (by the makers of Healthchecks), which follows Debian's cron, DST quirks included.
* ``debian_loop_slots``: a line-by-line transcription of the main loop of Debian's cron (cron.c: virtual time,
  the four kinds of wake-up, ``find_jobs`` with its wildcard / fixed-time split), run one real minute at a
  time. Slow, so it covers a window around each start; it is the arbiter where cronsim itself is known to
  differ from cron (see ``cronsim_is_known_wrong``).

Plus the generator of random expressions and the zones, transitions and start instants the tests use.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

MINUTE = timedelta(minutes=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_NAIVE = datetime(1970, 1, 1)

# Zones with hard transitions: half-hour DST (Lord_Howe), odd offsets (Chatham +12:45/+13:45), midnight
# transitions (Santiago, Havana, Asuncion), negative DST (Dublin), Ramadan pauses (Casablanca), two-hour DST
# (Troll), date-line neighbours, and zones with no DST at all.
ZONES = (
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Santiago",
    "Europe/Dublin",
    "Asia/Seoul",
    "Africa/Casablanca",
    "Antarctica/Troll",
    "America/Havana",
    "UTC",
    "Europe/London",
    "Australia/Adelaide",
    "America/St_Johns",
    "America/Nuuk",
    "America/Scoresbysund",
    "Pacific/Auckland",
    "Pacific/Norfolk",
    "Asia/Jerusalem",
    "Asia/Gaza",
    "Africa/Cairo",
    "Asia/Beirut",
    "Europe/Chisinau",
    "America/Asuncion",
    "America/Los_Angeles",
    "Asia/Kathmandu",
    "Asia/Kolkata",
    "Pacific/Kiritimati",
    "Pacific/Apia",
)
YEARS = (2026, 2027)
# Around each transition: both sides, on and off whole minutes, and far enough to cross it with a few slots.
AROUND = tuple(
    timedelta(seconds=seconds)
    for seconds in (-3 * 3600 - 420, -3600, -1800, -61, -1, 0, 30, 60, 1799, 3600, 2 * 3600 + 59, 3 * 3600 + 3)
)
# For zones without transitions in YEARS: month and year ends, a leap day, a weekday morning.
PLAIN_STARTS = (
    datetime(2026, 1, 31, 23, 58, 30),
    datetime(2026, 12, 31, 23, 0),
    datetime(2027, 2, 28, 12, 0),
    datetime(2028, 2, 28, 23, 59, 59),
    datetime(2026, 5, 4, 7, 59),
)


# --- transitions and starts ---------------------------------------------------------------------------------


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


@cache
def transitions(zone_name: str, years: tuple[int, ...] = YEARS) -> tuple[datetime, ...]:
    """Every instant in `years` at which the zone's UTC offset changes (to the second), in UTC."""
    zone = ZoneInfo(zone_name)
    found: list[datetime] = []
    current = datetime(min(years), 1, 1, tzinfo=UTC)
    end = datetime(max(years) + 1, 1, 1, tzinfo=UTC)
    step = timedelta(hours=1)
    while current < end:
        following = current + step
        if _offset(zone, current) != _offset(zone, following):
            low, high = current, following
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                middle = middle.replace(microsecond=0)
                if _offset(zone, middle) == _offset(zone, low):
                    low = middle
                else:
                    high = middle
            found.append(high)
        current = following
    return tuple(found)


def start_instants(zone_name: str) -> list[datetime]:
    """Start instants on both sides of every transition of the zone in YEARS (or plain ones if it has none)."""
    changes = transitions(zone_name)
    if not changes:
        zone = ZoneInfo(zone_name)
        return [naive.replace(tzinfo=zone).astimezone(UTC) for naive in PLAIN_STARTS]
    return [change + delta for change in changes for delta in AROUND]


def all_starts(zones: tuple[str, ...] = ZONES) -> list[tuple[str, datetime]]:
    return [(zone, start) for zone in zones for start in start_instants(zone)]


# --- random expressions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] stands for low + i


MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
FIELDS = (
    FieldSpec(0, 59),
    FieldSpec(0, 23),
    FieldSpec(1, 31),
    FieldSpec(1, 12, MONTHS),
    FieldSpec(0, 7, DAYS),
)
# How likely each field is a plain '*': day fields mostly are, so most expressions fire often enough to meet a
# transition within 30 slots, and the rest still cover the day-of-month / day-of-week rules.
STAR_WEIGHT = (0.25, 0.3, 0.6, 0.7, 0.6)


def _value(rng: random.Random, spec: FieldSpec, value: int) -> str:
    if spec.names and value - spec.low < len(spec.names) and rng.random() < 0.4:
        name = spec.names[value - spec.low]
        return rng.choice((name, name.upper(), name.title()))
    return str(value)


def _small_step(rng: random.Random, spec: FieldSpec) -> int:
    if rng.random() < 0.8:
        return rng.randint(1, min(12, spec.high))
    return rng.randint(1, spec.high - spec.low + 2)


def _term(rng: random.Random, spec: FieldSpec) -> str:
    kind = rng.random()
    if kind < 0.3:
        return _value(rng, spec, rng.randint(spec.low, spec.high))
    first = rng.randint(spec.low, spec.high)
    # One-value ranges ('3-3') on purpose, often: croniter 7 read them as '*'.
    last = first if rng.random() < 0.25 else rng.randint(first, spec.high)
    text = f"{_value(rng, spec, first)}-{_value(rng, spec, last)}"
    if kind < 0.75:
        return text
    return f"{text}/{_small_step(rng, spec)}"


def _field(rng: random.Random, spec: FieldSpec, star_weight: float) -> str:
    kind = rng.random()
    if kind < star_weight:
        return "*"
    if kind < star_weight + (1 - star_weight) * 0.3:
        return f"*/{_small_step(rng, spec)}"
    terms = [_term(rng, spec) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
    if rng.random() < 0.05:
        terms.append(f"*/{_small_step(rng, spec)}")  # '*' inside a list: cron allows it, the field is not "starred"
    return ",".join(terms)


def random_expression(rng: random.Random) -> str:
    """One five-field expression in Debian cron's grammar (numbers, names, ranges, steps, lists, '*')."""
    return " ".join(_field(rng, spec, weight) for spec, weight in zip(FIELDS, STAR_WEIGHT, strict=True))


# --- oracle 1: cronsim ------------------------------------------------------------------------------------------


class CronsimStuck(Exception):
    """cronsim ran out of its budget of clock ticks without finding the slots asked for."""


class _BoundedCronSim(CronSim):
    """cronsim with a budget of clock ticks: in a zone it misreads its wildcard walk can cycle for ever
    ('*/9 23-23/3,17-18,0-6/3 * * *' in Pacific/Chatham)."""

    budget = 200_000

    def tick(self, seconds: int = 1) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise CronsimStuck
        super().tick(seconds)


def cronsim_slots(expr: str, zone_name: str, start: datetime, count: int) -> list[datetime] | None:
    """The first `count` instants strictly after `start` at which cronsim says cron runs; None if it refuses.

    cronsim answers aware datetimes in the zone. For a fixed-time job it walks naive wall time and resolves each
    match with fold=0, so from a start inside the second pass of a repeated hour it also yields matches from the
    first pass, which lie before the start: those are dropped (cron ran them then, and does not run them again).
    Raises CronsimStuck when cronsim does not get there.
    """
    zone = ZoneInfo(zone_name)
    try:
        iterator = _BoundedCronSim(cronsim_expression(expr), start.astimezone(zone))
    except CronSimError:
        return None
    slots: list[datetime] = []
    for found in iterator:
        instant = found.astimezone(UTC)
        if instant <= start or (slots and instant <= slots[-1]):
            continue
        slots.append(instant)
        if len(slots) == count:
            break
    return slots


def cronsim_expression(expr: str) -> str:
    """`expr` with each one-value range carrying a step (``19-19/10``) written as its value (``19``).

    cron reads ``a-a/n`` as the range a..a stepped by n, that is a alone; cronsim 2.x reads a one-value range
    with a step as ``a-max/n`` (19, 29, 39, 49, 59). Same meaning under cron, so the rewrite keeps the
    comparison honest while stepping round that cronsim bug (the '*' flags are unchanged).
    """
    fields = []
    for text, spec in zip(expr.split(), FIELDS, strict=True):
        items = []
        for item in text.split(","):
            body, slash, _ = item.partition("/")
            first, dash, last = body.partition("-")
            if slash and dash and _debian_number(first, spec) == _debian_number(last, spec):
                item = first
            items.append(item)
        fields.append(",".join(items))
    return " ".join(fields)


def cronsim_misreads_zone(zone_name: str) -> bool:
    """True if some transition of the zone in YEARS is one cronsim 2.x gets wrong for wildcard jobs.

    cronsim moves a wildcard job through real time in steps of whole hours and minutes from a wall hour or
    from a day's midnight it builds on the wall clock. That holds only where every clock change happens at a
    whole wall hour on both sides, by whole hours, and not at midnight going forward. Lord Howe (02:00 ->
    02:30), Chatham (02:45 -> 03:45) and the zones whose spring gap starts at midnight (Santiago, Havana,
    Cairo, Beirut, ...) break it: `45 * * * *` on Lord Howe misses the second 01:45 of the night clocks go
    back; `* 3 * * *` in Chatham misses 03:45-03:59 on the day clocks go forward; `*/7 */7 */2 */4 sat-7` in
    Santiago fires at 01:00 on 2027-09-05, a wall time it does not name. Debian's cron (wake-up "case 0" and
    "case 2" of its main loop) runs what the framework runs, as the loop transcription shows.
    """
    zone = ZoneInfo(zone_name)
    for change in transitions(zone_name):
        before, after = _offset(zone, change - MINUTE), _offset(zone, change)
        wall_before = (change + before).replace(tzinfo=None)
        wall_after = (change + after).replace(tzinfo=None)
        if wall_before.minute or wall_after.minute or (after - before) % timedelta(hours=1):
            return True
        if after > before and wall_before.hour == 0:
            return True
    return False


def is_wildcard(expr: str) -> bool:
    minute, hour = expr.split()[:2]
    return minute.startswith("*") or hour.startswith("*")


def cronsim_is_known_wrong(expr: str, zone_name: str) -> bool:
    """Where cronsim 2.x is known to differ from Debian's cron: wildcard jobs in the zones above."""
    return is_wildcard(expr) and cronsim_misreads_zone(zone_name)


# --- oracle 2: Debian's cron main loop --------------------------------------------------------------------------


@dataclass(frozen=True)
class DebianEntry:
    """A crontab entry's time fields as entry.c stores them: bit sets plus the four '*' flags."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0-7, 0 and 7 both set when either is (entry.c: "make sundays equivalent")
    starred: tuple[bool, ...]  # MIN_STAR, HR_STAR, DOM_STAR, (month), DOW_STAR

    @classmethod
    def parse(cls, expr: str) -> DebianEntry:
        """entry.c's get_list / get_range for well-formed input (the generator's): no error handling."""
        texts = expr.split()
        sets = [_debian_field(text, spec) for text, spec in zip(texts, FIELDS, strict=True)]
        if 0 in sets[4] or 7 in sets[4]:
            sets[4] |= {0, 7}
        minutes, hours, days, months, weekdays = (frozenset(values) for values in sets)
        return cls(minutes, hours, days, months, weekdays, tuple(text.startswith("*") for text in texts))

    @property
    def wildcard(self) -> bool:
        return self.starred[0] or self.starred[1]

    def matches(self, wall: datetime) -> bool:
        """find_jobs' test of one wall-clock minute."""
        weekday = wall.isoweekday() % 7
        day, dow = wall.day in self.days, weekday in self.weekdays
        either = not (self.starred[2] or self.starred[4])
        return (
            wall.minute in self.minutes
            and wall.hour in self.hours
            and wall.month in self.months
            and ((day or dow) if either else (day and dow))
        )


def _debian_number(text: str, spec: FieldSpec) -> int:
    if text.isdigit():
        return int(text)
    return spec.low + spec.names.index(text.lower())


def _debian_field(text: str, spec: FieldSpec) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        body, _, step = item.partition("/")
        if body == "*":
            first, last = spec.low, spec.high
        else:
            first_text, _, last_text = body.partition("-")
            first = _debian_number(first_text, spec)
            last = _debian_number(last_text, spec) if last_text else first
        values.update(range(first, last + 1, int(step) if step else 1))
    return values


class DebianCron:
    """One crontab entry under Debian cron's clock handling (cron.c, main loop), one real minute at a time.

    Clocks are in minutes: ``clock`` is the wall-clock minute of a real minute (``(time + gmtoff) / 60``),
    ``virtual`` is the wall minute whose jobs have all run.
    """

    def __init__(self, expr: str, zone_name: str) -> None:
        self.entry = DebianEntry.parse(expr)
        self.zone = ZoneInfo(zone_name)

    def _find_jobs(self, wall_minute: int, do_wild: bool, do_fixed: bool) -> bool:
        selected = do_wild if self.entry.wildcard else do_fixed
        return selected and self.entry.matches(EPOCH_NAIVE + wall_minute * MINUTE)

    def _clock(self, instant: datetime) -> int:
        seconds = (instant - EPOCH) // timedelta(seconds=1) + _offset(self.zone, instant) // timedelta(seconds=1)
        return seconds // 60

    def run(self, begin: datetime, end: datetime) -> Iterator[datetime]:
        """The real minutes in (begin, end] at which the job runs, cron having been up since `begin`."""
        now = begin.replace(second=0, microsecond=0)
        running = virtual = self._clock(now)
        while now < end:
            now += MINUTE
            clock = self._clock(now)
            if clock == running:
                continue  # cron sleeps until the wall minute changes
            running = clock
            fired, virtual = self._wake(running, virtual)
            if fired and now <= end:
                yield now

    def _wake(self, running: int, virtual: int) -> tuple[bool, int]:
        diff = running - virtual
        if diff == 1:  # the shortcut for the common case
            return self._find_jobs(running, True, True), running
        if 0 < diff <= 5:  # case 1: woke up late, run every missed minute
            fired = any(self._find_jobs(minute, True, True) for minute in range(virtual + 1, running + 1))
            return fired, running
        if 5 < diff <= 180:  # case 2: clocks jumped forward (DST begins)
            fired = self._find_jobs(running, True, False)
            fired |= any(self._find_jobs(minute, False, True) for minute in range(virtual + 1, running + 1))
            return fired, running
        if -180 < diff <= 0:  # case 0: clocks went back; wildcard jobs only, virtual time waits
            return self._find_jobs(running, True, False), virtual
        return self._find_jobs(running, True, True), running  # the clock moved a lot: start afresh


# Long enough that cron's virtual clock has settled before the start (clock changes are under 3 hours).
WARM_UP = timedelta(hours=4)


def debian_loop_slots(expr: str, zone_name: str, start: datetime, end: datetime) -> list[datetime]:
    """The instants in (start, end] at which Debian's cron runs `expr`, cron having been up for hours."""
    cron = DebianCron(expr, zone_name)
    return [instant for instant in cron.run(start - WARM_UP, end) if instant > start]
