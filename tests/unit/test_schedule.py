"""Slots of cron and interval schedules, and the pure run-time decisions: no servers, no clock."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from shared.schedule import (
    CronSchedule,
    IntervalSchedule,
    Schedule,
    backoff_delay,
    derive_run_id,
    describe,
    interval_phase_ms,
    is_misfire,
    make_schedule,
    next_slot,
    next_slots,
    period_estimate,
    previous_slot,
    slot_jitter,
    slots_between,
    validate_cron,
    validate_timezone,
)
from tests.unit.cron_reference import all_starts, debian_loop_slots, random_expression

MINUTE = timedelta(minutes=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: float = 0) -> datetime:
    whole = int(second)
    micro = round((second - whole) * 1_000_000)
    return datetime(year, month, day, hour, minute, whole, micro, tzinfo=UTC)


def cron(expr: str, zone: str = "UTC") -> CronSchedule:
    schedule = make_schedule(cron_expr=expr, timezone=zone, interval_seconds=None, job_id="j", align=False)
    assert isinstance(schedule, CronSchedule)
    return schedule


def epoch_ms(instant: datetime) -> int:
    return (instant - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


# --- cron in a time zone ------------------------------------------------------------------------------------


def test_weekday_0800_seoul_is_2300_utc_sunday_to_thursday() -> None:
    schedule = cron("0 8 * * 1-5", "Asia/Seoul")
    week = next_slots(schedule, utc(2026, 5, 3), 6)  # from Sunday 2026-05-03 00:00 UTC
    assert week == [
        utc(2026, 5, 3, 23),
        utc(2026, 5, 4, 23),
        utc(2026, 5, 5, 23),
        utc(2026, 5, 6, 23),
        utc(2026, 5, 7, 23),
        utc(2026, 5, 10, 23),
    ]
    assert [slot.strftime("%a") for slot in week] == ["Sun", "Mon", "Tue", "Wed", "Thu", "Sun"]
    seoul = ZoneInfo("Asia/Seoul")
    assert [slot.astimezone(seoul).strftime("%a %H:%M") for slot in week] == [
        "Mon 08:00",
        "Tue 08:00",
        "Wed 08:00",
        "Thu 08:00",
        "Fri 08:00",
        "Mon 08:00",
    ]
    assert all(slot.tzinfo is UTC for slot in week)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Seoul"])
def test_quarter_past_minutes_cross_the_hour(zone: str) -> None:
    # Seoul is a whole number of hours from UTC, so minute fields give the same UTC minutes.
    slots = next_slots(cron("1,16,31,46 * * * *", zone), utc(2026, 5, 4, 9, 40), 6)
    assert slots == [
        utc(2026, 5, 4, 9, 46),
        utc(2026, 5, 4, 10, 1),
        utc(2026, 5, 4, 10, 16),
        utc(2026, 5, 4, 10, 31),
        utc(2026, 5, 4, 10, 46),
        utc(2026, 5, 4, 11, 1),
    ]


@pytest.mark.parametrize(
    ("expr", "zone", "after", "expected"),
    [
        # New York springs forward 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC).
        ("30 2 * * *", "America/New_York", utc(2026, 3, 7), utc(2026, 3, 7, 7, 30)),
        ("30 2 * * *", "America/New_York", utc(2026, 3, 8), utc(2026, 3, 8, 7, 0)),
        ("30 2 * * *", "America/New_York", utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)),
        ("30 2 * * *", "America/New_York", utc(2026, 3, 9), utc(2026, 3, 9, 6, 30)),
        # New York falls back 2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC): 01:xx happens twice.
        ("30 2 * * *", "America/New_York", utc(2026, 11, 1), utc(2026, 11, 1, 7, 30)),
        ("30 2 * * *", "America/New_York", utc(2026, 11, 1, 7, 30), utc(2026, 11, 2, 7, 30)),
        ("30 1 * * *", "America/New_York", utc(2026, 11, 1), utc(2026, 11, 1, 5, 30)),
        ("30 1 * * *", "America/New_York", utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)),
        # Berlin springs forward 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC).
        ("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28), utc(2026, 3, 28, 1, 30)),
        ("30 2 * * *", "Europe/Berlin", utc(2026, 3, 29), utc(2026, 3, 29, 1, 0)),
        ("30 2 * * *", "Europe/Berlin", utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)),
        # Berlin falls back 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC): 02:30 happens twice.
        ("30 2 * * *", "Europe/Berlin", utc(2026, 10, 25), utc(2026, 10, 25, 0, 30)),
        ("30 2 * * *", "Europe/Berlin", utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)),
        # Four wall times in the gap land on one instant: one slot, then the next day.
        ("0,15,30,45 2 * * *", "America/New_York", utc(2026, 3, 8), utc(2026, 3, 8, 7, 0)),
        ("0,15,30,45 2 * * *", "America/New_York", utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 0)),
        # The gap's 02:30 lands on the real 03:00: one slot, then 03:30 EDT.
        ("0,30 2,3 * * *", "America/New_York", utc(2026, 3, 8, 6, 59), utc(2026, 3, 8, 7, 0)),
        ("0,30 2,3 * * *", "America/New_York", utc(2026, 3, 8, 7, 0), utc(2026, 3, 8, 7, 30)),
        # An hour field starting with '*' (every other hour) makes a wildcard job, as in cron: 02:00 does
        # not exist that day and is skipped (it used to fire at 03:00 EDT), 04:00 EDT is next.
        ("0 */2 * * *", "America/New_York", utc(2026, 3, 8, 6, 0), utc(2026, 3, 8, 8, 0)),
        ("0 */2 * * *", "America/New_York", utc(2026, 3, 8, 7, 0), utc(2026, 3, 8, 8, 0)),
        # The cases. A minute field starting with '*' makes a wildcard job too: Chatham skips
        # 02:45-03:44 on 2026-09-27, so 02:51 does not fire; the next slot is 02:00 the next day.
        ("*/17 2 * * *", "Pacific/Chatham", utc(2026, 9, 26, 13, 34), utc(2026, 9, 26, 13, 49)),
        ("*/17 2 * * *", "Pacific/Chatham", utc(2026, 9, 26, 13, 49), utc(2026, 9, 27, 12, 15)),
        # Santiago skips 00:00-00:59 on 2026-09-06: 00:15 does not fire, 07:15 -03 does.
        ("15 */7 * * *", "America/Santiago", utc(2026, 9, 6, 3, 50), utc(2026, 9, 6, 10, 15)),
        # Lord Howe skips 02:00-02:29 on 2026-10-04: 02:01 does not fire, 04:01 +11 does.
        ("1 */2 * * *", "Australia/Lord_Howe", utc(2026, 10, 3, 14, 1), utc(2026, 10, 3, 17, 1)),
        # A fixed time in Lord Howe's half-hour gap fires at its end, 02:30 +11.
        ("15 2 * * *", "Australia/Lord_Howe", utc(2026, 10, 3, 14, 1), utc(2026, 10, 3, 15, 30)),
    ],
)
def test_daylight_saving_transitions(expr: str, zone: str, after: datetime, expected: datetime) -> None:
    assert next_slot(cron(expr, zone), after) == expected


def test_wildcard_job_fires_a_repeated_wall_time_twice() -> None:
    # Chatham goes back from 03:45 to 02:45 on 2026-04-05 (14:00 UTC): 02:52, 03:00 and 03:26 happen twice.
    schedule = cron("*/26 1-19 * * */3", "Pacific/Chatham")
    slots = slots_between(schedule, utc(2026, 4, 4, 13), utc(2026, 4, 4, 15, 10))
    assert slots == [
        utc(2026, 4, 4, 13, 7),
        utc(2026, 4, 4, 13, 15),
        utc(2026, 4, 4, 13, 41),
        utc(2026, 4, 4, 14, 7),
        utc(2026, 4, 4, 14, 15),
        utc(2026, 4, 4, 14, 41),
        utc(2026, 4, 4, 15, 7),
    ]
    chatham = ZoneInfo("Pacific/Chatham")
    assert [slot.astimezone(chatham).strftime("%H:%M") for slot in slots] == [
        "02:52",
        "03:00",
        "03:26",
        "02:52",
        "03:00",
        "03:26",
        "03:52",
    ]


def test_fixed_job_fires_a_repeated_wall_time_once() -> None:
    # The same night, '0,26,52 2-3 * * *' names the same wall times but neither field starts with '*'.
    slots = slots_between(cron("0,26,52 2-3 * * *", "Pacific/Chatham"), utc(2026, 4, 4, 13), utc(2026, 4, 4, 15, 10))
    assert slots == [utc(2026, 4, 4, 13, 7), utc(2026, 4, 4, 13, 15), utc(2026, 4, 4, 13, 41), utc(2026, 4, 4, 15, 7)]


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        # croniter 7 reads a one-value range as '*': '3-3' is minute 3, not every minute.
        ("3-3 * * * *", utc(2026, 5, 4, 10), [utc(2026, 5, 4, 10, 3), utc(2026, 5, 4, 11, 3)]),
        (
            "9,34 0 20-20 * *",
            utc(2026, 5, 4),
            [utc(2026, 5, 20, 0, 9), utc(2026, 5, 20, 0, 34), utc(2026, 6, 20, 0, 9)],
        ),
        ("7-7/10 * * * *", utc(2026, 5, 4, 10), [utc(2026, 5, 4, 10, 7), utc(2026, 5, 4, 11, 7)]),
        # Both day fields restricted: either matches (the 1st, the 15th, every Tuesday).
        (
            "1 0 1,15 * 2",
            utc(2026, 3, 1),
            [utc(2026, 3, 1, 0, 1), utc(2026, 3, 3, 0, 1), utc(2026, 3, 10, 0, 1), utc(2026, 3, 15, 0, 1)],
        ),
        # A day field starting with '*' counts as unrestricted: both must match (Tuesdays on day 1, 4, 7, ...).
        ("1 0 */3 * 2", utc(2026, 3, 1), [utc(2026, 3, 10, 0, 1), utc(2026, 3, 31, 0, 1), utc(2026, 4, 7, 0, 1)]),
        # The 1st when it is a Sunday, Tuesday, Thursday or Saturday.
        ("1 0 1 * */2", utc(2026, 3, 1), [utc(2026, 3, 1, 0, 1), utc(2026, 8, 1, 0, 1), utc(2026, 9, 1, 0, 1)]),
        # A restricted field that covers every day ORs into every day.
        ("0 12 1-31 * mon", utc(2026, 3, 1), [utc(2026, 3, 1, 12), utc(2026, 3, 2, 12), utc(2026, 3, 3, 12)]),
        # Names in any case, 7 is Sunday.
        ("0 9 * JAN,jul Sun", utc(2026, 6, 30), [utc(2026, 7, 5, 9), utc(2026, 7, 12, 9)]),
        ("0 9 * * 5-7", utc(2026, 5, 4), [utc(2026, 5, 8, 9), utc(2026, 5, 9, 9), utc(2026, 5, 10, 9)]),
    ],
)
def test_fields_read_as_cron_reads_them(expr: str, after: datetime, expected: list[datetime]) -> None:
    assert next_slots(cron(expr), after, len(expected)) == expected


def test_one_1_star_3_2_in_new_york_waits_for_a_tuesday() -> None:
    # The example: not Saturday 2026-03-07 (day 7), but Tuesday 2026-03-10 (day 10 = 1 + 3 * 3).
    assert next_slot(cron("1 * */3 * 2", "America/New_York"), utc(2026, 3, 6, 17)) == utc(2026, 3, 10, 4, 1)


def test_frequent_job_fires_every_15_real_minutes_through_both_passes_of_the_repeated_hour() -> None:
    slots = slots_between(cron("*/15 * * * *", "America/New_York"), utc(2026, 11, 1, 5), utc(2026, 11, 1, 7, 30))
    assert slots == [utc(2026, 11, 1, 5) + index * timedelta(minutes=15) for index in range(11)]
    new_york = ZoneInfo("America/New_York")
    walls = [slot.astimezone(new_york).strftime("%H:%M %Z") for slot in slots]
    assert walls[:8] == [
        "01:00 EDT",
        "01:15 EDT",
        "01:30 EDT",
        "01:45 EDT",
        "01:00 EST",
        "01:15 EST",
        "01:30 EST",
        "01:45 EST",
    ]


def test_frequent_job_skips_the_missing_hour_without_duplicates() -> None:
    slots = slots_between(cron("*/15 * * * *", "America/New_York"), utc(2026, 3, 8, 5), utc(2026, 3, 8, 8, 30))
    # No wall time 02:xx exists that day, and in real time the slots stay 15 minutes apart.
    assert slots == [utc(2026, 3, 8, 5) + index * timedelta(minutes=15) for index in range(15)]
    new_york = ZoneInfo("America/New_York")
    assert not [slot for slot in slots if slot.astimezone(new_york).hour == 2]
    assert len(set(slots)) == len(slots)


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (utc(2026, 1, 31, 23, 55), utc(2026, 2, 1)),
        (utc(2026, 1, 31, 23, 57, 30), utc(2026, 2, 1)),
        (utc(2026, 12, 31, 23, 55), utc(2027, 1, 1)),
        (utc(2028, 2, 28, 23, 58), utc(2028, 2, 29)),
    ],
)
def test_every_five_minutes_crosses_month_and_year(after: datetime, expected: datetime) -> None:
    assert next_slot(cron("*/5 * * * *"), after) == expected


def test_minutely_job_costs_one_croniter_step_away_from_transitions(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = 0
    real_get_next = croniter.get_next

    def counting_get_next(self: croniter, *args: object, **kwargs: object) -> object:
        nonlocal steps
        steps += 1
        return real_get_next(self, *args, **kwargs)

    monkeypatch.setattr(croniter, "get_next", counting_get_next)
    schedule = cron("* * * * *")
    next_slot(schedule, utc(2026, 5, 4, 10))  # parse and cache the expression first
    steps = 0
    assert next_slot(schedule, utc(2026, 5, 4, 10, 0, 30)) == utc(2026, 5, 4, 10, 1)
    assert steps == 1


def test_cron_accepts_aware_input_in_any_zone_and_answers_in_utc() -> None:
    seoul_time = datetime(2026, 5, 4, 18, 40, tzinfo=ZoneInfo("Asia/Seoul"))  # 09:40 UTC
    slot = next_slot(cron("*/5 * * * *"), seoul_time)
    assert slot == utc(2026, 5, 4, 9, 45)
    assert slot.tzinfo is UTC


# --- interval grid ------------------------------------------------------------------------------------------


def aligned(seconds: int) -> IntervalSchedule:
    schedule = make_schedule(cron_expr=None, timezone="UTC", interval_seconds=seconds, job_id="j", align=True)
    assert isinstance(schedule, IntervalSchedule)
    return schedule


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (utc(2026, 5, 4, 10, 2, 3), utc(2026, 5, 4, 10, 5)),
        (utc(2026, 5, 4, 10, 5), utc(2026, 5, 4, 10, 10)),  # exactly on a slot: the following one
        (utc(2026, 5, 4, 10, 4, 59.999999), utc(2026, 5, 4, 10, 5)),
        (utc(2026, 5, 4, 10, 5, 0.000001), utc(2026, 5, 4, 10, 10)),
        (utc(1969, 12, 31, 23, 58), utc(1970, 1, 1)),  # before the epoch the grid goes on
    ],
)
def test_aligned_interval_slots_are_multiples_of_the_period(after: datetime, expected: datetime) -> None:
    slot = next_slot(aligned(300), after)
    assert slot == expected
    assert epoch_ms(slot) % 300_000 == 0


def test_unaligned_phase_is_a_stable_hash_within_the_period() -> None:
    phase = interval_phase_ms("buy-scanner", 300, align=False)
    # A literal: the same value in every process and on every machine (Python's hash() would not be).
    assert phase == 288_847
    assert interval_phase_ms("buy-scanner", 300, align=False) == phase
    assert interval_phase_ms("buy-scanner", 300, align=True) == 0
    assert all(0 <= interval_phase_ms(f"job-{index}", 300, False) < 300_000 for index in range(200))
    schedule = make_schedule(cron_expr=None, timezone="UTC", interval_seconds=300, job_id="buy-scanner", align=False)
    assert schedule == IntervalSchedule(seconds=300, phase_ms=phase)
    slot = next_slot(schedule, utc(2026, 5, 4, 10))
    assert epoch_ms(slot) % 300_000 == phase
    assert next_slot(schedule, slot) == slot + timedelta(seconds=300)


def test_interval_never_drifts_over_ten_thousand_steps() -> None:
    schedule = IntervalSchedule(seconds=7, phase_ms=1_234)
    first = next_slot(schedule, utc(2026, 5, 4))
    current = first
    for _ in range(9_999):
        current = next_slot(schedule, current)
    assert current == first + 9_999 * timedelta(seconds=7)
    assert (epoch_ms(current) - 1_234) % 7_000 == 0


def test_thousand_one_second_jobs_spread_over_the_second() -> None:
    phases = [interval_phase_ms(f"job-{index:04d}", 1, False) for index in range(1_000)]
    per_ms = Counter(phases)
    # 1000 hashes into 1000 milliseconds: about 632 distinct values is what a uniform hash gives
    # (1 - 1/e); what matters is that no instant gets a crowd and every part of the second gets its share.
    assert len(per_ms) >= 600
    assert max(per_ms.values()) <= 8
    per_tenth = Counter(phase // 100 for phase in phases)
    assert all(70 <= per_tenth[tenth] <= 130 for tenth in range(10))
    # With more room than jobs nearly every job gets its own millisecond.
    assert len({interval_phase_ms(f"job-{index:04d}", 5, False) for index in range(1_000)}) >= 900


# --- previous slot, ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "at", "expected"),
    [
        (aligned(300), utc(2026, 5, 4, 10, 5), utc(2026, 5, 4, 10, 5)),
        (aligned(300), utc(2026, 5, 4, 10, 9, 59), utc(2026, 5, 4, 10, 5)),
        (IntervalSchedule(5, 123), utc(2026, 5, 4, 10, 0, 0.1229), utc(2026, 5, 4, 9, 59, 55.123)),
        (cron("0 8 * * 1-5", "Asia/Seoul"), utc(2026, 5, 10, 12), utc(2026, 5, 7, 23)),
        (cron("0 8 * * 1-5", "Asia/Seoul"), utc(2026, 5, 7, 23), utc(2026, 5, 7, 23)),
        (cron("*/15 * * * *", "America/New_York"), utc(2026, 11, 1, 6, 10), utc(2026, 11, 1, 6)),
        # 01:30 happens twice that night, the specific-hours job fired only at the first one.
        (cron("30 1 * * *", "America/New_York"), utc(2026, 11, 1, 6, 45), utc(2026, 11, 1, 5, 30)),
        (cron("30 2 * * *", "America/New_York"), utc(2026, 3, 8, 7, 10), utc(2026, 3, 8, 7)),
        (cron("0 0 29 2 *"), utc(2025, 1, 1), utc(2024, 2, 29)),
        (cron("0 0 29 2 *"), utc(2026, 6, 1), None),  # the last one is more than 400 days back
    ],
)
def test_previous_slot_is_the_latest_at_or_before(schedule: Schedule, at: datetime, expected: datetime) -> None:
    assert previous_slot(schedule, at) == expected


def test_previous_and_next_slot_bracket_the_time() -> None:
    schedule = cron("7,37 * * * *", "Europe/Berlin")
    at = utc(2026, 10, 25, 0, 50)
    before, after = previous_slot(schedule, at), next_slot(schedule, at)
    assert before is not None
    assert before <= at < after
    assert next_slot(schedule, before) == after


@pytest.mark.parametrize(
    "schedule",
    [aligned(60), cron("* * * * *"), cron("* * * * *", "Asia/Seoul")],
    ids=["interval", "cron-utc", "cron-seoul"],
)
def test_slots_between_includes_both_ends(schedule: Schedule) -> None:
    slots = slots_between(schedule, utc(2026, 5, 4, 10), utc(2026, 5, 4, 10, 3))
    assert slots == [utc(2026, 5, 4, 10, minute) for minute in range(4)]
    assert slots_between(schedule, utc(2026, 5, 4, 10, 0, 1), utc(2026, 5, 4, 10, 2, 59)) == [
        utc(2026, 5, 4, 10, 1),
        utc(2026, 5, 4, 10, 2),
    ]
    assert slots_between(schedule, utc(2026, 5, 4, 10, 3), utc(2026, 5, 4, 10)) == []
    assert slots_between(schedule, utc(2026, 5, 4, 10), utc(2026, 5, 4, 10, 3), limit=4) == slots


@pytest.mark.parametrize("schedule", [aligned(60), cron("* * * * *")], ids=["interval", "cron"])
def test_slots_between_refuses_more_than_the_limit(schedule: Schedule) -> None:
    with pytest.raises(ValueError, match="more than 3 slots between"):
        slots_between(schedule, utc(2026, 5, 4, 10), utc(2026, 5, 4, 10, 3), limit=3)


def test_slots_between_has_a_default_limit() -> None:
    with pytest.raises(ValueError, match="more than 10000 slots"):
        slots_between(aligned(60), utc(2026, 1, 1), utc(2027, 1, 1))
    assert len(slots_between(aligned(60), utc(2026, 1, 1), utc(2026, 1, 1) + 9_999 * MINUTE)) == 10_000


def test_next_slots_counts() -> None:
    assert next_slots(aligned(60), utc(2026, 5, 4), 0) == []
    assert next_slots(aligned(60), utc(2026, 5, 4), 2) == [utc(2026, 5, 4, 0, 1), utc(2026, 5, 4, 0, 2)]
    with pytest.raises(ValueError, match="n must be >= 0"):
        next_slots(aligned(60), utc(2026, 5, 4), -1)


# --- validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("61 * * * *", "minute field '61' is not understood (allowed 0-59"),
        ("0 25 * * *", "hour field '25'"),
        ("0 0 32 * *", "day-of-month field '32'"),
        ("0 0 * 13 *", "month field '13'"),
        ("0 0 * * 8", "day-of-week field '8'"),
        ("*/0 * * * *", "minute field '*/0'"),
        ("0 8 * * mon-xyz", "day-of-week field 'mon-xyz'"),
        ("H * * * *", "minute field 'H'"),
        ("* * * *", "has 4 fields; expected 5: minute hour day-of-month month day-of-week"),
        ("0 0 * * * *", "has 6 fields; expected 5"),
        ("", "has 0 fields"),
        ("@daily", "is an alias; write the 5 fields"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
        # cron would keep the 5 and silently drop the step; croniter and cronsim read 5-59/15.
        ("5/15 * * * *", "minute field '5/15' is not understood (allowed 0-59, combined with ',', '-', '/' or '*'): "),
        ("5/15 * * * *", "a step needs a range or '*' before it, such as '5-59/15'"),
        ("0 5-3 * * *", "hour field '5-3' is not understood (allowed 0-23, combined with ',', '-', '/' or '*'): "),
        ("0 5-3 * * *", "the range '5-3' runs backwards"),
        ("0 8 * * sat-sun", "day-of-week field 'sat-sun'"),
        ("*/0 * * * *", "a step must be 1 or more"),
        ("61 * * * *", "61 is outside 0-59"),
        ("1,,2 * * * *", "a value is missing"),
        ("*-5 * * * *", "minute field '*-5'"),
        ("0 0 * * 1-", "a value is missing"),
        ("0 0 * * mon-xyz", "'xyz' is not a value cron knows"),
        ("0 0 * january *", "month field 'january'"),
        ("0 0 * * jan", "day-of-week field 'jan'"),
        ("0 0 */mon * *", "'mon' is not a step cron knows"),
        # Extensions of other tools that cron refuses.
        ("0 0 L * *", "day-of-month field 'L' is not understood (allowed 1-31"),
        ("0 0 LW * *", "day-of-month field 'LW'"),
        ("0 0 15W * *", "day-of-month field '15W'"),
        ("0 0 ? * 1", "day-of-month field '?'"),
        ("0 0 * * 1#2", "day-of-week field '1#2'"),
        ("0 0 * * 5L", "day-of-week field '5L'"),
        ("0 0 * * 1-5 2026", "has 6 fields"),
        ("0 0 1 1 ０", "day-of-week field '０'"),  # a full-width digit is not a number to cron
        ("9999999 * * * *", "minute field '9999999'"),
    ],
)
def test_bad_cron_expressions_are_refused_with_a_readable_reason(expr: str, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        validate_cron(expr)
    message = str(caught.value)
    assert fragment in message
    assert repr(expr) in message


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("  0 8 * * 1-5 \n", "0 8 * * 1-5"),
        ("0 8 * * mon-fri", "0 8 * * mon-fri"),
        ("0 0 29 2 *", "0 0 29 2 *"),  # leap days only: rare, not never
        ("0 0 30 2 1", "0 0 30 2 1"),  # both day fields restricted: Mondays in February
        ("3-3 * * * *", "3-3 * * * *"),
        ("*/90 * * * *", "*/90 * * * *"),  # a step past the end keeps the first value, as in cron
        ("0 0-23/6 1,15 JAN-Jun,dec */2", "0 0-23/6 1,15 JAN-Jun,dec */2"),
        ("*/5,7 * * * 0-7", "*/5,7 * * * 0-7"),
    ],
)
def test_good_cron_expressions_are_returned_stripped(expr: str, expected: str) -> None:
    assert validate_cron(expr) == expected


@pytest.mark.parametrize(
    "name", ["Mars/Olympus_Mons", "asia/seoul", "", "../etc/passwd", "/etc/localtime", "localtime"]
)
def test_unknown_time_zones_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=f"unknown time zone {name!r}"):
        validate_timezone(name)


@pytest.mark.parametrize("name", ["UTC", "Asia/Seoul", "America/New_York", "Europe/Berlin"])
def test_known_time_zones_pass(name: str) -> None:
    assert validate_timezone(name) == name


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"cron_expr": "0 8 * * *", "interval_seconds": 60}, "sets both cron_expr and interval_seconds"),
        ({"cron_expr": None, "interval_seconds": None}, "sets neither cron_expr nor interval_seconds"),
        ({"cron_expr": None, "interval_seconds": 0}, "interval_seconds must be a whole number >= 1, got 0"),
        ({"cron_expr": None, "interval_seconds": -5}, "got -5"),
        ({"cron_expr": "0 8 * * * *", "interval_seconds": None}, "has 6 fields"),
        ({"cron_expr": "0 8 * * *", "interval_seconds": None, "timezone": "Asia/Sejong"}, "'Asia/Sejong'"),
    ],
)
def test_make_schedule_refuses_bad_definitions(kwargs: dict[str, object], fragment: str) -> None:
    arguments: dict[str, object] = {"timezone": "UTC", "job_id": "buy-scanner", "align": False} | kwargs
    with pytest.raises(ValueError) as caught:
        make_schedule(**arguments)  # type: ignore[arg-type]
    assert fragment in str(caught.value)


def test_make_schedule_builds_a_validated_cron_schedule() -> None:
    schedule = make_schedule(
        cron_expr=" 0 8 * * 1-5 ", timezone="Asia/Seoul", interval_seconds=None, job_id="j", align=False
    )
    assert schedule == CronSchedule(expr="0 8 * * 1-5", timezone="Asia/Seoul")


@pytest.mark.parametrize(("seconds", "phase_ms"), [(0, 0), (5, 5_000), (5, -1)])
def test_interval_schedule_refuses_an_impossible_grid(seconds: int, phase_ms: int) -> None:
    with pytest.raises(ValueError):
        IntervalSchedule(seconds=seconds, phase_ms=phase_ms)


def naive_calls() -> list[Callable[[datetime], object]]:
    schedule = aligned(60)
    aware = utc(2026, 5, 4)
    return [
        lambda naive: next_slot(schedule, naive),
        lambda naive: next_slot(cron("* * * * *"), naive),
        lambda naive: previous_slot(schedule, naive),
        lambda naive: slots_between(schedule, naive, aware),
        lambda naive: slots_between(schedule, aware, naive),
        lambda naive: is_misfire(naive, aware, 5),
        lambda naive: is_misfire(aware, naive, 5),
        lambda naive: slot_jitter("j", naive, 5),
        lambda naive: derive_run_id("s", "j", 1, naive, 1),
    ]


@pytest.mark.parametrize("call", naive_calls())
def test_naive_datetimes_are_refused(call: Callable[[datetime], object]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        call(datetime(2026, 5, 4, 10))


# --- describe, period -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "words"),
    [
        (IntervalSchedule(5, 123), "every 5 s (phase 0.123 s)"),
        (IntervalSchedule(300, 0), "every 5 min"),
        (IntervalSchedule(90, 0), "every 90 s"),
        (IntervalSchedule(7_200, 0), "every 2 h"),
        (IntervalSchedule(86_400, 0), "every 1 d"),
        (IntervalSchedule(300, 288_847), "every 5 min (phase 288.847 s)"),
        (CronSchedule("0 8 * * 1-5", "Asia/Seoul"), "cron '0 8 * * 1-5' in Asia/Seoul"),
    ],
)
def test_describe_in_words(schedule: Schedule, words: str) -> None:
    assert describe(schedule) == words


@pytest.mark.parametrize(
    ("schedule", "period"),
    [
        (IntervalSchedule(300, 17), timedelta(minutes=5)),
        (CronSchedule("*/15 * * * *", "America/New_York"), timedelta(minutes=15)),
        (CronSchedule("0 8 * * 1-5", "Asia/Seoul"), timedelta(days=1)),
        (CronSchedule("0 9,17 * * *", "UTC"), timedelta(hours=8)),
        (CronSchedule("30 2 * * 0", "Europe/Berlin"), timedelta(days=7)),
        (CronSchedule("0 0 1 * *", "UTC"), timedelta(days=28)),
    ],
)
def test_period_estimate(schedule: Schedule, period: timedelta) -> None:
    assert period_estimate(schedule) == period


# --- run-time decisions -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("late", "grace", "misfire"),
    [
        (timedelta(0), 0, False),
        (timedelta(seconds=30), 30, False),
        (timedelta(seconds=30, microseconds=1), 30, True),
        (timedelta(milliseconds=100), 0.1, False),
        (timedelta(milliseconds=101), 0.1, True),
        (timedelta(seconds=-5), 0, False),  # early is never a misfire
        (timedelta(days=3650), float("inf"), False),
    ],
)
def test_is_misfire_only_beyond_the_grace(late: timedelta, grace: float, misfire: bool) -> None:
    slot = utc(2026, 5, 4, 10)
    assert is_misfire(slot, slot + late, grace) is misfire


def test_is_misfire_refuses_a_negative_grace() -> None:
    with pytest.raises(ValueError, match="grace_sec must be >= 0"):
        is_misfire(utc(2026, 5, 4), utc(2026, 5, 4), -1)


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (1, 0.0, 1.0),
        (1, 0.5, 1.5),
        (2, 0.0, 2.0),
        (3, 0.0, 4.0),
        (3, 0.999, 7.996),
        (6, 0.0, 30.0),  # 64 capped at 60, half fixed
        (6, 1.0, 60.0),
        (5_000, 0.5, 45.0),  # a runaway attempt count is the cap, not an OverflowError
    ],
)
def test_backoff_delay_values(attempt: int, rand: float, expected: float) -> None:
    assert backoff_delay(attempt, base_sec=2, cap_sec=60, rand=rand) == pytest.approx(expected)


def test_backoff_delay_grows_within_its_bounds_and_never_passes_the_cap() -> None:
    base, cap = 0.5, 30.0
    previous_low = 0.0
    for attempt in range(1, 40):
        step = min(cap, base * 2 ** (attempt - 1))
        low = backoff_delay(attempt, base, cap, 0.0)
        high = backoff_delay(attempt, base, cap, 0.999_999)
        assert low == pytest.approx(step / 2)
        assert low <= high < step or step == 0
        assert high <= cap
        assert low >= previous_low  # the shortest wait never shrinks as attempts grow
        previous_low = low
    assert backoff_delay(39, base, cap, 0.0) == cap / 2


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "rand", "expected"),
    [(1, -3.0, 60.0, 0.5, 0.0), (4, 2.0, -1.0, 0.5, 0.0), (1, 0.0, 60.0, 0.9, 0.0)],
)
def test_backoff_delay_is_never_negative(attempt: int, base: float, cap: float, rand: float, expected: float) -> None:
    assert backoff_delay(attempt, base, cap, rand) == expected


@pytest.mark.parametrize(("attempt", "rand"), [(0, 0.5), (-1, 0.5), (1, -0.1), (1, 1.5)])
def test_backoff_delay_refuses_bad_arguments(attempt: int, rand: float) -> None:
    with pytest.raises(ValueError):
        backoff_delay(attempt, 1.0, 10.0, rand)


def test_slot_jitter_is_deterministic_and_in_range() -> None:
    slots = [utc(2026, 5, 4, 10, minute) for minute in range(60)]
    jitters = [slot_jitter("buy-scanner", slot, 10.0) for slot in slots]
    assert jitters == [slot_jitter("buy-scanner", slot, 10.0) for slot in slots]
    assert all(timedelta(0) <= jitter < timedelta(seconds=10) for jitter in jitters)
    assert len(set(jitters)) > 50  # differs from slot to slot
    assert slot_jitter("buy-scanner", slots[0], 10.0) != slot_jitter("sell-scanner", slots[0], 10.0)
    # A literal: every worker computes the same delay for the same slot.
    assert slot_jitter("buy-scanner", utc(2026, 3, 8, 7), 10.0) == timedelta(seconds=3, microseconds=83_067)


@pytest.mark.parametrize("jitter_sec", [0.0, -1.0, 0.0000001])
def test_slot_jitter_is_zero_without_room(jitter_sec: float) -> None:
    assert slot_jitter("buy-scanner", utc(2026, 5, 4), jitter_sec) == timedelta(0)


RUN_SLOT = utc(2026, 3, 8, 7)


def test_run_id_is_the_same_on_every_machine() -> None:
    run_id = derive_run_id("real", "buy-scanner", 3, RUN_SLOT, 1)
    assert run_id == uuid.UUID("1721f181-cf3c-5e75-8548-ad296df923ee")
    assert run_id.version == 5
    # The same instant written in another zone, or differing below a millisecond, is the same slot.
    eastern = RUN_SLOT.astimezone(timezone(timedelta(hours=-5)))
    assert derive_run_id("real", "buy-scanner", 3, eastern, 1) == run_id
    assert derive_run_id("real", "buy-scanner", 3, RUN_SLOT + timedelta(microseconds=400), 1) == run_id


@pytest.mark.parametrize(
    ("scope", "job_id", "epoch", "slot", "attempt"),
    [
        ("mock", "buy-scanner", 3, RUN_SLOT, 1),
        ("real", "sell-scanner", 3, RUN_SLOT, 1),
        ("real", "buy-scanner", 4, RUN_SLOT, 1),
        ("real", "buy-scanner", 3, RUN_SLOT + timedelta(milliseconds=1), 1),
        ("real", "buy-scanner", 3, RUN_SLOT, 2),
    ],
)
def test_run_id_changes_with_every_part(scope: str, job_id: str, epoch: int, slot: datetime, attempt: int) -> None:
    assert derive_run_id(scope, job_id, epoch, slot, attempt) != derive_run_id("real", "buy-scanner", 3, RUN_SLOT, 1)


# --- property: no slot is skipped, near transitions or anywhere ------------------------------------------------


def wall_matcher(expr: str) -> Callable[[datetime], bool]:
    """A naive-time matcher for plain expressions (numbers, ranges, steps), written independently of croniter."""
    fields = croniter.expand(expr)[0]

    def allowed(index: int, everything: range) -> set[int]:
        return set(everything) if fields[index] == ["*"] else {int(value) for value in fields[index]}

    minutes, hours = allowed(0, range(60)), allowed(1, range(24))
    days, months = allowed(2, range(1, 32)), allowed(3, range(1, 13))
    weekdays = {day % 7 for day in allowed(4, range(7))}
    either_day = fields[2] != ["*"] and fields[4] != ["*"]  # Vixie cron: both restricted means OR

    def matches(wall: datetime) -> bool:
        if wall.minute not in minutes or wall.hour not in hours or wall.month not in months:
            return False
        day_ok, weekday_ok = wall.day in days, wall.isoweekday() % 7 in weekdays
        return (day_ok or weekday_ok) if either_day else (day_ok and weekday_ok)

    return matches


def is_reference_slot(instant: datetime, zone: ZoneInfo, matches: Callable[[datetime], bool], wildcard: bool) -> bool:
    """The module's DST rules restated per real minute (zones whose transitions fall on whole minutes)."""
    wall = instant.astimezone(zone).replace(tzinfo=None, fold=0)
    if wildcard:
        return matches(wall)
    if matches(wall) and wall.replace(tzinfo=zone).astimezone(UTC) == instant:
        return True  # an ordinary wall time, or the first pass of a repeated one
    jump = instant.astimezone(zone).utcoffset() - (instant - MINUTE).astimezone(zone).utcoffset()  # type: ignore[operator]
    # A gap ends at this instant: it carries every wall time the clocks skipped.
    return jump > timedelta(0) and any(matches(wall - jump + index * MINUTE) for index in range(jump // MINUTE))


# Wildcard jobs: the minute or the hour field starts with '*' (cron's MIN_STAR / HR_STAR).
WILDCARD = [
    "* * * * *",
    "*/15 * * * *",
    "7,37 * * * *",
    "0 * * * *",
    "59 * * * *",
    "30 * * * 1-5",
    "*/20 2 * * *",
    "0 */2 * * *",
]
FIXED = ["30 2 * * *", "30 1 * * *", "0,30 1-3 * * *", "15 0 * * *", "0,20,40 2 * * *", "0 0-22/2 * * *"]
TRANSITIONS = {
    "America/New_York": [utc(2026, 3, 8, 7), utc(2026, 11, 1, 6)],
    "Europe/Berlin": [utc(2026, 3, 29, 1), utc(2026, 10, 25, 1)],
    "Australia/Lord_Howe": [utc(2026, 4, 4, 15), utc(2026, 10, 3, 15, 30)],  # half-hour DST
    "America/Santiago": [utc(2026, 4, 5, 3), utc(2026, 9, 6, 4)],  # transitions at midnight
    "Pacific/Chatham": [utc(2026, 4, 4, 14), utc(2026, 9, 26, 14)],  # at 02:45 / 03:45 local
    "Asia/Seoul": [utc(2026, 5, 4)],
    "UTC": [utc(2026, 12, 31, 23)],
}


@st.composite
def cron_cases(draw: st.DrawFn) -> tuple[str, str, datetime]:
    expr = draw(st.sampled_from(WILDCARD + FIXED))
    zone = draw(st.sampled_from(sorted(TRANSITIONS)))
    anchor = draw(st.sampled_from(TRANSITIONS[zone]))
    shift = draw(st.integers(min_value=-26 * 3600 * 1000, max_value=26 * 3600 * 1000))
    on_minute = draw(st.booleans())
    after = anchor + timedelta(milliseconds=shift)
    return expr, zone, after.replace(second=0, microsecond=0) if on_minute else after


@settings(max_examples=100, deadline=None, database=None, derandomize=True)
@given(cron_cases())
def test_next_and_previous_slot_skip_no_slot(case: tuple[str, str, datetime]) -> None:
    expr, zone_name, after = case
    zone, matches, wildcard = ZoneInfo(zone_name), wall_matcher(expr), expr in WILDCARD
    schedule = CronSchedule(expr, zone_name)
    slot = next_slot(schedule, after)
    assert slot > after
    # Brute force: no real minute between `after` and the answer is a slot, and the answer is one.
    minute = after.replace(second=0, microsecond=0) + MINUTE
    while minute < slot:
        assert not is_reference_slot(minute, zone, matches, wildcard), minute
        minute += MINUTE
    assert is_reference_slot(slot, zone, matches, wildcard)
    before = previous_slot(schedule, after)
    assert before is not None
    assert before <= after
    assert is_reference_slot(before, zone, matches, wildcard)
    minute = before + MINUTE
    while minute <= after:
        assert not is_reference_slot(minute, zone, matches, wildcard), minute
        minute += MINUTE


# --- property: previous_slot and slots_between agree with next_slot and with cron's loop ----------------------


@st.composite
def generated_cases(draw: st.DrawFn) -> tuple[str, str, datetime]:
    """A generated expression (tests/unit/cron_reference.py), a zone and an instant near one of its transitions."""
    rng = random.Random(draw(st.integers(min_value=0, max_value=2**32)))
    expr = random_expression(rng)
    try:
        validate_cron(expr)
    except ValueError:
        reject()
    zone, start = draw(st.sampled_from(all_starts()))
    shift = draw(st.integers(min_value=-3 * 3600 * 1000, max_value=3 * 3600 * 1000))
    return expr, zone, start + timedelta(milliseconds=shift)


@settings(max_examples=150, deadline=None, database=None, derandomize=True)
@given(generated_cases())
def test_previous_slot_and_slots_between_agree_with_next_slot(case: tuple[str, str, datetime]) -> None:
    expr, zone, at = case
    schedule = CronSchedule(expr, zone)
    following = next_slot(schedule, at)
    latest = previous_slot(schedule, at)
    assert previous_slot(schedule, following) == following
    if latest is not None:
        assert latest <= at < following
        # Nothing in between: the slot after the latest one is the one after `at`.
        assert next_slot(schedule, latest) == following
        earlier = previous_slot(schedule, latest - timedelta(microseconds=1))
        if earlier is not None:
            assert earlier < latest
            assert next_slot(schedule, earlier) == latest
    # slots_between is next_slot iterated, both ends included.
    window_end = at + timedelta(hours=6)
    chained: list[datetime] = []
    current = next_slot(schedule, at - timedelta(microseconds=1))
    while current <= window_end:
        chained.append(current)
        current = next_slot(schedule, current)
    assert slots_between(schedule, at, window_end, limit=100_000) == chained


@settings(max_examples=60, deadline=None, database=None, derandomize=True)
@given(generated_cases())
def test_slots_and_previous_slot_match_crons_main_loop(case: tuple[str, str, datetime]) -> None:
    expr, zone, at = case
    schedule = CronSchedule(expr, zone)
    start, end = at - timedelta(hours=4), at + timedelta(hours=4)
    loop = debian_loop_slots(expr, zone, start, end)
    assert slots_between(schedule, start + timedelta(microseconds=1), end, limit=100_000) == loop
    earlier = [slot for slot in loop if slot <= at]
    if earlier:
        assert previous_slot(schedule, at) == earlier[-1]
    else:
        latest = previous_slot(schedule, at)
        assert latest is None or latest <= start


def test_a_remembered_cron_validation_still_refuses_each_time() -> None:
    """validate_cron remembers valid expressions only: a bad one raises on every call, a non-string too."""
    assert validate_cron(" 5 4 * * * ") == validate_cron("5 4 * * *") == "5 4 * * *"
    for _ in range(2):
        with pytest.raises(ValueError, match="minute"):
            validate_cron("61 4 * * *")
        with pytest.raises(ValueError, match="string"):
            validate_cron(["5", "4"])  # type: ignore[arg-type]
