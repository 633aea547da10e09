"""A cron job's own daylight-saving rule (dst_gap, dst_overlap) and the zone transitions `status` shows.

The default (no rule named) is held to cronsim, and the explicit rule evaluator, given the values that name the
default, to the default's own code path; each explicit rule to slots derived by hand, named by date, in the
hard zones: Lord Howe (30 minutes), Chatham (+12:45/+13:45), Troll (2 hours), Santiago (midnight), Casablanca
(clocks back in February), Dublin (negative DST: winter is the "daylight saving" offset in the tz data).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from scheduler_seed.status import dst_lines
from shared import schedule
from shared.control.status import job_status
from shared.definitions import load_definition
from shared.dst import around_transition, next_transition
from shared.errors import ConfigError
from shared.schedule import CronSchedule, next_slot, next_slots, previous_slot
from tests.support.rows import job_row
from tests.unit.cron_reference import cronsim_is_known_wrong, cronsim_slots, start_instants

HARD_ZONES = (
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Antarctica/Troll",
    "America/Santiago",
    "Africa/Casablanca",
    "Europe/Dublin",
)
EXPRESSIONS = ("30 2 * * *", "45 1 * * *", "0 0 * * *", "30 23 * * *", "15 * * * *", "*/30 * * * *", "0 3 * * *")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def debian_rule(expr: str) -> tuple[str, str]:
    wildcard = expr.split()[0].startswith("*") or expr.split()[1].startswith("*")
    return ("skip", "both") if wildcard else ("shift_forward", "first")


@pytest.mark.parametrize("zone", HARD_ZONES)
def test_default_rule_matches_cronsim_around_every_transition(zone: str) -> None:
    compared = 0
    for start in start_instants(zone):
        for expr in EXPRESSIONS:
            if cronsim_is_known_wrong(expr, zone):
                continue
            theirs = cronsim_slots(expr, zone, start, 6)
            if theirs is None:
                continue
            assert next_slots(CronSchedule(expr, zone), start, 6) == theirs, (expr, zone, start)
            compared += 1
    assert compared >= 20


@pytest.mark.parametrize("zone", HARD_ZONES)
def test_rule_evaluator_given_the_default_values_gives_the_default_slots(zone: str) -> None:
    for start in start_instants(zone):
        for expr in EXPRESSIONS:
            gap, overlap = debian_rule(expr)
            ruled = CronSchedule(expr, zone, gap, overlap)
            assert ruled.own_dst_rule
            assert next_slots(ruled, start, 8) == next_slots(CronSchedule(expr, zone), start, 8), (expr, zone, start)


# (zone, expr, rule, after, expected first slots): derived by hand from the transitions in the comments
GAPS = [
    # Lord Howe, 2026-10-04 02:00 +10:30 -> 02:30 +11 (15:30 UTC on 10-03): 02:15 does not exist that night
    ("Australia/Lord_Howe", "15 2 * * *", "shift_forward", utc(2026, 10, 3), [utc(2026, 10, 3, 15, 30)]),
    ("Australia/Lord_Howe", "15 2 * * *", "skip", utc(2026, 10, 3), [utc(2026, 10, 4, 15, 15)]),
    # Chatham, 2026-09-27 02:45 +12:45 -> 03:45 +13:45 (14:00 UTC on 09-26): 03:00 does not exist
    ("Pacific/Chatham", "0 3 * * *", "shift_forward", utc(2026, 9, 26), [utc(2026, 9, 26, 14)]),
    ("Pacific/Chatham", "0 3 * * *", "skip", utc(2026, 9, 26), [utc(2026, 9, 27, 13, 15)]),
    # Troll, 2026-03-29 01:00 +00 -> 03:00 +02 (01:00 UTC): 01:00 and 02:00 both land on the gap's end, once
    ("Antarctica/Troll", "0 1,2 * * *", "shift_forward", utc(2026, 3, 28, 12),
     [utc(2026, 3, 29, 1), utc(2026, 3, 29, 23)]),
    ("Antarctica/Troll", "0 1,2 * * *", "skip", utc(2026, 3, 28, 12), [utc(2026, 3, 29, 23), utc(2026, 3, 30, 0)]),
    # Santiago, 2026-09-06 00:00 -04 -> 01:00 -03 (04:00 UTC): midnight does not exist
    ("America/Santiago", "0 0 * * *", "shift_forward", utc(2026, 9, 5, 12), [utc(2026, 9, 6, 4), utc(2026, 9, 7, 3)]),
    ("America/Santiago", "0 0 * * *", "skip", utc(2026, 9, 5, 12), [utc(2026, 9, 7, 3)]),
    # Casablanca, 2026-03-22 02:00 +00 -> 03:00 +01 (02:00 UTC)
    ("Africa/Casablanca", "30 2 * * *", "shift_forward", utc(2026, 3, 21, 12), [utc(2026, 3, 22, 2)]),
    ("Africa/Casablanca", "30 2 * * *", "skip", utc(2026, 3, 21, 12), [utc(2026, 3, 23, 1, 30)]),
    # Dublin, 2026-03-29 01:00 GMT -> 02:00 IST (01:00 UTC); a wildcard job with shift_forward gets 01:15 at 01:00
    ("Europe/Dublin", "15 * * * *", "shift_forward", utc(2026, 3, 29),
     [utc(2026, 3, 29, 0, 15), utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 15)]),
    ("Europe/Dublin", "15 * * * *", "skip", utc(2026, 3, 29), [utc(2026, 3, 29, 0, 15), utc(2026, 3, 29, 1, 15)]),
]  # fmt: skip


@pytest.mark.parametrize(("zone", "expr", "gap", "after", "expected"), GAPS)
def test_gap_rule(zone: str, expr: str, gap: str, after: datetime, expected: list[datetime]) -> None:
    assert next_slots(CronSchedule(expr, zone, dst_gap=gap), after, len(expected)) == expected


OVERLAPS = [
    # Lord Howe, 2026-04-05 02:00 +11 -> 01:30 +10:30 (15:00 UTC on 04-04): 01:45 happens at 14:45 and 15:15 UTC
    ("Australia/Lord_Howe", "45 1 * * *", "first", [utc(2026, 4, 4, 14, 45), utc(2026, 4, 5, 15, 15)]),
    ("Australia/Lord_Howe", "45 1 * * *", "second", [utc(2026, 4, 4, 15, 15), utc(2026, 4, 5, 15, 15)]),
    ("Australia/Lord_Howe", "45 1 * * *", "both", [utc(2026, 4, 4, 14, 45), utc(2026, 4, 4, 15, 15)]),
    # Chatham, 2026-04-05 03:45 +13:45 -> 02:45 +12:45 (14:00 UTC on 04-04): 03:00 at 13:15 and 14:15 UTC
    ("Pacific/Chatham", "0 3 * * *", "first", [utc(2026, 4, 4, 13, 15), utc(2026, 4, 5, 14, 15)]),
    ("Pacific/Chatham", "0 3 * * *", "second", [utc(2026, 4, 4, 14, 15), utc(2026, 4, 5, 14, 15)]),
    ("Pacific/Chatham", "0 3 * * *", "both", [utc(2026, 4, 4, 13, 15), utc(2026, 4, 4, 14, 15)]),
    # Troll, 2026-10-25 03:00 +02 -> 01:00 +00 (01:00 UTC): 02:30 at 00:30 and 02:30 UTC, two hours apart
    ("Antarctica/Troll", "30 2 * * *", "first", [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 2, 30)]),
    ("Antarctica/Troll", "30 2 * * *", "second", [utc(2026, 10, 25, 2, 30), utc(2026, 10, 26, 2, 30)]),
    ("Antarctica/Troll", "30 2 * * *", "both", [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2, 30)]),
    # Santiago, 2026-04-05 00:00 -03 -> 23:00 -04 on 04-04 (03:00 UTC): 23:30 of 04-04 at 02:30 and 03:30 UTC
    ("America/Santiago", "30 23 * * *", "first", [utc(2026, 4, 5, 2, 30), utc(2026, 4, 6, 3, 30)]),
    ("America/Santiago", "30 23 * * *", "second", [utc(2026, 4, 5, 3, 30), utc(2026, 4, 6, 3, 30)]),
    # Casablanca, 2026-02-15 03:00 +01 -> 02:00 +00 (02:00 UTC): 02:30 at 01:30 and 02:30 UTC
    ("Africa/Casablanca", "30 2 * * *", "first", [utc(2026, 2, 15, 1, 30), utc(2026, 2, 16, 2, 30)]),
    ("Africa/Casablanca", "30 2 * * *", "second", [utc(2026, 2, 15, 2, 30), utc(2026, 2, 16, 2, 30)]),
    # Dublin, 2026-10-25 02:00 IST -> 01:00 GMT (01:00 UTC): a wildcard job keeps only the first pass of 01:xx
    ("Europe/Dublin", "*/30 * * * *", "first", [utc(2026, 10, 25, 0), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2)]),
    ("Europe/Dublin", "*/30 * * * *", "second",
     [utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 1), utc(2026, 10, 25, 1, 30)]),
    ("Europe/Dublin", "*/30 * * * *", "both", [utc(2026, 10, 25, 0), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1)]),
]  # fmt: skip


@pytest.mark.parametrize(("zone", "expr", "overlap", "expected"), OVERLAPS)
def test_overlap_rule(zone: str, expr: str, overlap: str, expected: list[datetime]) -> None:
    plan = CronSchedule(expr, zone, dst_overlap=overlap)
    after = expected[0] - timedelta(minutes=1)
    assert next_slots(plan, after, len(expected)) == expected
    # previous_slot walks the same slots backwards
    assert previous_slot(plan, expected[-1]) == expected[-1]
    assert previous_slot(plan, expected[-1] - timedelta(seconds=1)) == expected[-2]


def test_second_pass_is_found_from_between_the_passes() -> None:
    # a chain message for the first 01:45 of Lord Howe's fall-back night, posted after it: the second pass is next
    plan = CronSchedule("45 1 * * *", "Australia/Lord_Howe", dst_overlap="both")
    assert next_slot(plan, utc(2026, 4, 4, 14, 45)) == utc(2026, 4, 4, 15, 15)


@pytest.mark.parametrize("zone", HARD_ZONES)
def test_next_transition_is_the_first_offset_change(zone: str) -> None:
    found = next_transition(zone, utc(2026, 1, 1))
    assert found is not None
    assert found.at > utc(2026, 1, 1)
    second = timedelta(seconds=1)
    assert (found.at - second).astimezone(ZoneInfo(zone)).utcoffset() == found.offset_before
    assert found.at.astimezone(ZoneInfo(zone)).utcoffset() == found.offset_after
    assert found.offset_before != found.offset_after
    # nothing changes between the start and the transition (sampled hourly)
    probe = utc(2026, 1, 1)
    while probe < found.at - second:
        assert probe.astimezone(ZoneInfo(zone)).utcoffset() == found.offset_before, probe
        probe += timedelta(hours=1)


def test_transitions_named_by_date() -> None:
    lord_howe = next_transition("Australia/Lord_Howe", utc(2026, 6, 1))
    assert lord_howe is not None
    assert (lord_howe.at, lord_howe.shift, lord_howe.kind) == (utc(2026, 10, 3, 15, 30), timedelta(minutes=30), "gap")
    troll = next_transition("Antarctica/Troll", utc(2026, 6, 1))
    assert troll is not None
    assert (troll.at, troll.shift, troll.kind) == (utc(2026, 10, 25, 1), timedelta(hours=-2), "overlap")
    assert next_transition("UTC", utc(2026, 1, 1)) is None
    assert next_transition("Asia/Seoul", utc(2026, 1, 1)) is None


def test_slots_around_the_next_transition() -> None:
    plan = CronSchedule("30 2 * * *", "Antarctica/Troll", dst_overlap="both")
    around = around_transition(plan, utc(2026, 10, 20))
    assert around is not None
    assert around.transition.at == utc(2026, 10, 25, 1)
    assert around.before == (utc(2026, 10, 23, 0, 30), utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30))
    assert around.after == (utc(2026, 10, 25, 2, 30), utc(2026, 10, 26, 2, 30), utc(2026, 10, 27, 2, 30))
    interval = schedule.make_schedule(cron_expr=None, timezone="UTC", interval_seconds=60, job_id="j", align=True)
    assert around_transition(interval, utc(2026, 10, 20)) is None


def test_definition_takes_the_rule_for_cron_jobs_only() -> None:
    job = load_definition({"job_id": "j", "cron_expr": "30 2 * * *", "timezone": "Europe/Dublin", "dst_gap": "skip"})
    plan = job.schedule()
    assert isinstance(plan, CronSchedule)
    assert (plan.dst_gap, plan.dst_overlap) == ("skip", None)
    with pytest.raises(ConfigError, match="dst_gap and dst_overlap apply to cron_expr schedules only"):
        load_definition({"job_id": "j", "interval_seconds": 60, "dst_overlap": "both"})
    with pytest.raises(ConfigError, match="dst_overlap"):
        load_definition({"job_id": "j", "cron_expr": "0 * * * *", "dst_overlap": "last"})
    assert schedule.describe(plan) == "cron '30 2 * * *' in Europe/Dublin (dst_gap skip)"
    with pytest.raises(ValueError, match="dst_gap must be one of"):
        CronSchedule("0 * * * *", "UTC", dst_gap="later")


def test_status_table_notes_a_transition_within_35_days_only() -> None:
    row = job_row("troll", cron_expr="30 2 * * *", timezone="Antarctica/Troll", interval_seconds=None)
    near = job_status(row, 0, utc(2026, 10, 20))
    assert near.dst is not None and near.dst.at == utc(2026, 10, 25, 1) and near.dst.dst_overlap == "first"
    (line,) = dst_lines([near], utc(2026, 10, 20))
    assert line.startswith("DST troll: Antarctica/Troll clocks go back 2") and "2026-10-25 01:00" in line
    assert "rule first" in line
    assert dst_lines([job_status(row, 0, utc(2026, 9, 1))], utc(2026, 9, 1)) == []
    assert job_status(job_row("tick"), 0, utc(2026, 10, 20)).dst is None  # an interval job
    paused = job_row("off", cron_expr="30 2 * * *", timezone="Antarctica/Troll", interval_seconds=None, enabled=False)
    assert job_status(paused, 0, utc(2026, 10, 20)).dst is None
