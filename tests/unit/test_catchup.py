"""The slot ledger's pure decisions (`shared.catchup`): gaps, their bounds, and the catch-up policies."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from shared import catchup, schedule
from shared.control.instants import later
from shared.definitions import Catchup

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
EVERY_10S = schedule.make_schedule(cron_expr=None, timezone="UTC", interval_seconds=10, job_id="j", align=True)
HOURLY = schedule.make_schedule(cron_expr="0 * * * *", timezone="UTC", interval_seconds=None, job_id="j", align=False)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("slot", "now", "own_missed", "gap"),
    [
        (at(0), at(3), False, False),  # on time: the next slot (10 s) is still ahead: the common path
        (at(0), at(9.999), False, False),
        (at(0), at(10), False, True),  # the next slot is due now: counted from now, it would be jumped
        (at(0), at(35), False, True),
        (at(0), at(3), True, True),  # the message itself misfired
    ],
)
def test_gap_after(slot: datetime, now: datetime, own_missed: bool, gap: bool) -> None:
    assert catchup.gap_after(EVERY_10S, slot, now, own_missed) is gap


@pytest.mark.parametrize("late_sec", [0, 59.9, 60, 3599.9, 3600, 5000])
def test_gap_after_agrees_with_the_schedule_for_cron(late_sec: float) -> None:
    expected = schedule.next_slot(HOURLY, T0) <= at(late_sec)
    assert catchup.gap_after(HOURLY, T0, at(late_sec), False) is expected


def test_no_schedule_has_no_gap() -> None:
    assert catchup.gap_after(None, at(0), at(100), False) is False


@pytest.mark.parametrize(
    ("first", "last", "after", "expected"),
    [
        (at(0), at(30), True, [at(10), at(20), at(30)]),  # after the late message's own slot, up to now
        (at(0), at(30), False, [at(0), at(10), at(20), at(30)]),  # from the first unserved slot
        (at(0), at(9), True, []),
        (at(5), at(5), False, []),
        (at(30), at(0), False, []),
    ],
)
def test_gap_slots(first: datetime, last: datetime, after: bool, expected: list[datetime]) -> None:
    gap = catchup.gap_slots(EVERY_10S, first, last, after=after)
    assert list(gap.slots) == expected and not gap.truncated


def test_a_long_gap_keeps_the_most_recent_slots_and_says_so() -> None:
    gap = catchup.gap_slots(EVERY_10S, at(0), at(10 * 1000), limit=5)
    assert list(gap.slots) == [at(10 * s) for s in range(996, 1001)] and gap.truncated
    cron = catchup.gap_slots(HOURLY, T0, T0 + timedelta(days=30), limit=3)
    assert list(cron.slots) == [T0 + timedelta(days=30, hours=-h) for h in (2, 1, 0)] and cron.truncated


def test_gap_start_allows_for_the_jitter_of_the_waiting_message() -> None:
    assert catchup.gap_start(at(12), 2.0, at(99)) == at(10)
    assert catchup.gap_start(None, 2.0, at(99)) == at(99)


MISSED = [at(30), at(10), at(20), at(0), at(10)]  # any order, a duplicate


@pytest.mark.parametrize(
    ("policy", "max_runs", "rate", "runs"),
    [
        (Catchup.NONE, 10, 1.0, []),
        (Catchup.LATEST, 10, 1.0, [(at(30), 0.0)]),
        (Catchup.ALL, 10, 2.0, [(at(0), 0.0), (at(10), 0.5), (at(20), 1.0), (at(30), 1.5)]),
        (Catchup.ALL, 2, 0.5, [(at(20), 0.0), (at(30), 2.0)]),  # the most recent within the bound, oldest first
        (Catchup.ALL, 1, 1.0, [(at(30), 0.0)]),
        ("latest", 3, 1.0, [(at(30), 0.0)]),
    ],
)
def test_plan(policy: Catchup | str, max_runs: int, rate: float, runs: list[tuple[datetime, float]]) -> None:
    plan = catchup.plan(policy, MISSED, max_runs, rate)
    assert [(r.slot, r.delay_sec) for r in plan.runs] == runs


def test_all_never_bursts_beyond_the_rate() -> None:
    plan = catchup.plan(Catchup.ALL, [at(10 * i) for i in range(50)], 20, 4.0)
    delays = [r.delay_sec for r in plan.runs]
    assert len(delays) == 20 and all(b - a >= 0.25 for a, b in itertools.pairwise(delays))


def test_nothing_missed_plans_nothing_and_bad_bounds_are_refused() -> None:
    assert catchup.plan(Catchup.ALL, [], 3, 1.0) == catchup.NO_CATCHUP
    with pytest.raises(ValueError, match="positive"):
        catchup.plan(Catchup.ALL, [at(0)], 0, 1.0)


def test_a_catch_up_may_wait_for_each_run_before_it() -> None:
    plan = catchup.plan(Catchup.ALL, MISSED, 3, 1.0)
    assert catchup.wait_limit_sec(plan, timeout_sec=60, grace_sec=5) == 2.0 + 3 * 60 + 5
    assert catchup.wait_limit_sec(catchup.NO_CATCHUP, 60, 5) == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2h", T0 + timedelta(hours=2)), ("+30m", T0 + timedelta(minutes=30)), ("now+1d", T0 + timedelta(days=1)),
     ("2026-03-02T08:00", datetime(2026, 3, 1, 23, tzinfo=UTC)),
     ("2026-03-02T08:00Z", datetime(2026, 3, 2, 8, tzinfo=UTC))],
)  # fmt: skip
def test_pause_until_reads_durations_ahead_and_times_in_the_jobs_zone(text: str, expected: datetime) -> None:
    assert later(text, T0, "Asia/Seoul") == expected


def test_pause_until_refuses_what_is_not_a_time() -> None:
    with pytest.raises(ValueError, match="not a time"):
        later("tomorrow", T0, "UTC")
