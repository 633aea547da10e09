"""Differential test: the cron slots of shared/schedule.py against two independent references of Debian's cron.

Thousands of generated expressions (steps, ranges including one-value ones, lists, names, ``*/N`` everywhere),
in zones with hard transitions, from start instants on both sides of every transition of 2026 and 2027, 30
forward slots each. Every case is compared with cronsim. cronsim itself misreads wildcard jobs in the few zones
whose clocks change by half an hour, at :45 or at midnight (tests/unit/cron_reference.py); there, and only
there, a difference is settled by a transcription of cron's own main loop, run over every differing slot.
Every tenth case is also held to the loop over 30 hours. Zero failures, fixed seed. More cases by hand, either way:

    CRON_DIFF_CASES=50000 CRON_DIFF_SEED=7 .venv/bin/python -m pytest tests/unit/test_cron_differential.py
    .venv/bin/python -m tests.unit.test_cron_differential --cases 50000 --seed 7
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.schedule import CronSchedule, make_schedule, next_slots, slots_between, validate_cron
from tests.unit.cron_reference import (
    CronsimStuck,
    all_starts,
    cronsim_is_known_wrong,
    cronsim_slots,
    debian_loop_slots,
    random_expression,
)

CASES = int(os.environ.get("CRON_DIFF_CASES", "3000"))
SEED = int(os.environ.get("CRON_DIFF_SEED", "20260308"))
SLOTS = 30
LOOP_EVERY = 10
LOOP_SPAN = timedelta(hours=30)
# Where the loop settles a difference it walks a day either side of each slot in question, or this far from
# the start when cronsim gave nothing to compare (minute by minute: about 15 ms a day).
SETTLE_MARGIN = timedelta(days=1)
ARBITRATION_SPAN = timedelta(days=10)
MICROSECOND = timedelta(microseconds=1)


@dataclass
class Report:
    cases: int = 0
    slots: int = 0
    cronsim_agreed: int = 0
    cronsim_refused: int = 0  # cronsim refuses some OR-ed day fields cron accepts ('0 0 30 2 1'): loop only
    arbitrated: int = 0  # cronsim wrong in a zone it misreads, and cron's loop sides with us
    cronsim_stuck: int = 0  # cronsim found nothing within its tick budget (a zone it misreads): loop only
    loop_checked: int = 0
    failures: list[str] = field(default_factory=list)

    def summary(self, seconds: float) -> str:
        return (
            f"{self.cases} cases, {self.slots} slots in {seconds:.1f} s: cronsim agreed on {self.cronsim_agreed}, "
            f"refused {self.cronsim_refused}, stuck {self.cronsim_stuck}; "
            f"{self.arbitrated} cronsim misreadings settled by cron's loop; "
            f"{self.loop_checked} cases checked against the loop; {len(self.failures)} failures"
        )


def _walls(slots: list[datetime], zone: ZoneInfo) -> str:
    return ", ".join(f"{s:%Y-%m-%d %H:%M}Z={s.astimezone(zone):%H:%M%z}" for s in slots)


def _describe(
    expr: str, zone_name: str, start: datetime, ours: list[datetime], theirs: list[datetime], who: str
) -> str:
    zone = ZoneInfo(zone_name)
    k = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs)))
    return (
        f"{expr!r} in {zone_name} after {start.isoformat()}: slot {k} differs from {who}\n"
        f"  ours:   {_walls(ours[k : k + 3], zone)}\n  {who}: {_walls(theirs[k : k + 3], zone)}"
    )


def _loop_disagreement(schedule: CronSchedule, start: datetime, end: datetime) -> str | None:
    ours = slots_between(schedule, start + MICROSECOND, end, limit=100_000)
    loop = debian_loop_slots(schedule.expr, schedule.timezone, start, end)
    if ours == loop:
        return None
    return _describe(schedule.expr, schedule.timezone, start, ours, loop, "loop")


def _mismatch(ours: list[datetime], theirs: list[datetime]) -> list[datetime]:
    """Slots only one side has, up to where both lists reach (one slot missed shifts every later index)."""
    horizon = min(ours[-1], theirs[-1])
    return sorted({slot for slot in ours if slot <= horizon} ^ {slot for slot in theirs if slot <= horizon})


def _settle(schedule: CronSchedule, start: datetime, ours: list[datetime], theirs: list[datetime]) -> str | None:
    """Hold our slots to cron's loop around each slot cronsim disagrees on (from the start if it gave none)."""
    if not theirs:
        return _loop_disagreement(schedule, start, min(ours[-1], start + ARBITRATION_SPAN))
    covered = start - SETTLE_MARGIN
    for slot in _mismatch(ours, theirs):
        if slot <= covered:
            continue
        covered = slot + SETTLE_MARGIN
        failure = _loop_disagreement(schedule, max(start, slot - SETTLE_MARGIN), covered)
        if failure is not None:
            return failure
    return None


def check_case(expr: str, zone_name: str, start: datetime, with_loop: bool, report: Report) -> None:
    """Compare one (expression, zone, start) with the references; record what was checked and what failed."""
    schedule = make_schedule(cron_expr=expr, timezone=zone_name, interval_seconds=None, job_id="j", align=False)
    assert isinstance(schedule, CronSchedule)
    ours = next_slots(schedule, start, SLOTS)
    report.cases += 1
    report.slots += len(ours)
    try:
        theirs = cronsim_slots(expr, zone_name, start, SLOTS)
    except CronsimStuck:
        theirs = []
    failure: str | None = None
    if theirs == ours:
        report.cronsim_agreed += 1
    elif theirs is not None and not cronsim_is_known_wrong(expr, zone_name):
        failure = _describe(expr, zone_name, start, ours, theirs, "cronsim")
    else:
        # cronsim refused, got stuck or misread a zone it is known to misread: cron's loop settles it, around
        # every slot where the two differ (they can be months after the start for a sparse expression).
        report.cronsim_refused += theirs is None
        report.arbitrated += theirs is not None and theirs != []
        report.cronsim_stuck += theirs == []
        failure = _settle(schedule, start, ours, theirs or [])
        report.loop_checked += 1
    if failure is None and with_loop:
        failure = _loop_disagreement(schedule, start, start + LOOP_SPAN)
        report.loop_checked += 1
    if failure is not None:
        report.failures.append(failure)


def accepted_expression(rng: random.Random) -> str:
    """A generated expression the framework accepts (a few name no date at all, like '* * 31 feb *')."""
    while True:
        expr = random_expression(rng)
        try:
            return validate_cron(expr)
        except ValueError:
            continue


def run(cases: int, seed: int) -> Report:
    rng = random.Random(seed)
    starts = all_starts()
    report = Report()
    for index in range(cases):
        zone_name, start = starts[index % len(starts)]
        check_case(accepted_expression(rng), zone_name, start, index % LOOP_EVERY == 0, report)
    return report


def test_cron_slots_match_debian_cron_for_generated_expressions() -> None:
    began = time.perf_counter()
    report = run(CASES, SEED)
    print(report.summary(time.perf_counter() - began))
    assert report.failures == [], "\n".join(report.failures[:10])
    assert report.cases == CASES
    # Nearly every case agrees with cronsim itself, not only with our own transcription of cron's loop.
    assert report.cronsim_agreed >= 0.97 * CASES


def test_every_start_instant_is_used() -> None:
    starts = all_starts()
    assert len(starts) <= CASES  # each (zone, transition side) gets at least one expression
    assert len({zone for zone, _ in starts}) >= 25
    assert all(start.tzinfo is UTC for _, start in starts)


@pytest.mark.parametrize(
    ("expr", "zone", "start"),
    [
        # cronsim misses the second 01:45 of the night Lord Howe goes back half an hour; cron runs it.
        ("45 * * * *", "Australia/Lord_Howe", datetime(2026, 4, 4, 14, 40, tzinfo=UTC)),
        # cronsim misses 03:45-03:59 of the day Chatham skips 02:45-03:44; cron runs them.
        ("* 3 * * *", "Pacific/Chatham", datetime(2026, 9, 26, 13, 58, 59, tzinfo=UTC)),
        # cronsim fires at 01:00, right after Santiago's midnight gap; the job names 00:xx and 07:xx only.
        ("*/7 */7 */2 */4 sat-7", "America/Santiago", datetime(2027, 9, 5, 0, 53, tzinfo=UTC)),
        # cronsim cycles for ever here (stopped by its tick budget); cron's loop is the only reference.
        ("*/9 23-23/3,17-18,0-6/3 * * *", "Pacific/Chatham", datetime(2027, 4, 3, 14, tzinfo=UTC)),
        # cronsim misses 05:00 +11 right after Lord Howe's spring gap, 6 months and 22 slots after the start.
        ("41,0 */5 * oct-12/10,oct 5-6,0,sun-Sat/7", "Australia/Lord_Howe", datetime(2026, 4, 4, 15, 1, tzinfo=UTC)),
    ],
)
def test_known_cronsim_misreadings_are_settled_by_crons_loop(expr: str, zone: str, start: datetime) -> None:
    assert cronsim_is_known_wrong(expr, zone)
    report = Report()
    check_case(expr, zone, start, with_loop=True, report=report)
    assert report.failures == []
    assert report.loop_checked >= 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=CASES)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    report = run(args.cases, args.seed)
    for failure in report.failures[:20]:
        print(failure, file=sys.stderr)
    print(report.summary(time.perf_counter() - began))
    return 1 if report.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
