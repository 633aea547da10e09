"""The soak's checker on synthetic histories: it passes a clean one and catches each kind of violation
(a slot run twice, an overlap, a lost slot), while excusing what a fault window or a policy explains."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.definitions import JobDefinition, load_definition
from shared.events.decide import event_run_id
from shared.events.envelope import outcome_message_id
from shared.retry_policy import PARAMS_INVALID
from tests.chaos.checker import check, main
from tests.chaos.faultlog import Event, FaultLog
from tests.chaos.history import Execution, History, LogEvent, Run, dump_runs
from tests.chaos.jobset import write_jobs_file
from tests.chaos.timeline import Limits

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
END = 30  # the observation ends 30 s after the seed; slots up to 27 s (END - settle) must have run
WORKER = "chaos_worker-host-100-aaaaaa"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job(job_id: str = "tick", **extra: Any) -> JobDefinition:
    return load_definition({"job_id": job_id, "interval_seconds": 1, "align": True, **extra})


def row(
    job_id: str,
    slot: float,
    *,
    attempt: int = 1,
    status: str = "succeeded",
    start: float = 0.01,
    duration: float = 0.2,
    period: float = 1,
    worker: str = WORKER,
) -> Run:
    started = None if status in ("skipped_locked", "skipped_misfire") else at(slot + start)
    return Run(
        run_id=f"{job_id}/{slot:g}/{attempt}",
        job_id=job_id,
        epoch=1,
        trigger_source="scheduler" if attempt == 1 else "retry",
        scheduled_for=at(slot),
        attempt=attempt,
        status=status,
        worker=worker,
        claimed_at=at(slot + start / 2),
        started_at=started,
        finished_at=at(slot + start + duration),
        next_posted_for=at(slot + period),
    )


def gap(job_id: str, slot: float, status: str = "missed", error: str = "chain lost (overdue)") -> Run:
    """A gap row of the slot ledger: the slot did not run (paused, missed, jumped over)."""
    return replace(
        row(job_id, slot), status=status, started_at=None, claimed_at=at(slot + 0.5), finished_at=at(slot + 0.5),
        next_posted_for=None, worker=None, error=error,
    )  # fmt: skip


def every(job_id: str, period: int = 1, first: int = 1, last: int = END - 1, skip: tuple[int, ...] = ()) -> list[Run]:
    return [row(job_id, s, period=period) for s in range(first, last + 1, period) if s not in skip]


def events(*extra: Event) -> list[Event]:
    return [Event("seed", at(0), at(0), detail={"file": "jobs.toml"}), *extra, Event("soak_end", at(END), at(END))]


def history(jobs: list[JobDefinition], runs: list[Run], *extra: Event, **kw: Any) -> History:
    return History("chaos", {j.job_id: j for j in jobs}, events(*extra), runs, **kw)


def kinds(report: Any) -> list[str]:
    return sorted(v.kind for v in report.violations)


def test_a_clean_history_passes_and_counts_every_due_slot_once() -> None:
    report = check(history([job()], every("tick")))
    assert report.ok, report.violations
    tick = report.jobs["tick"]
    assert tick.due == tick.ran == tick.ran_once == END - 3
    assert report.totals()["lateness_ms"]["p50"] == pytest.approx(10.0, abs=0.1)


def test_two_executions_of_one_slot_at_once_are_a_slot_run_twice() -> None:
    runs = every("tick")
    copy = Execution("tick/5/1", "tick", at(5), 1, "scheduler", 100, at(5.01), at(5.3), "succeeded")
    other = Execution("tick/5/1", "tick", at(5), 1, "scheduler", 200, at(5.05), at(5.4), "succeeded")
    report = check(history([job()], runs, executions=[copy, other]))
    assert kinds(report) == ["overlap", "slot_run_twice"]  # two at once is also more than max_parallel = 1
    twice = next(v for v in report.violations if v.kind == "slot_run_twice")
    assert twice.detail["why"] == ["again_after_success", "concurrent", "same_attempt_twice"]
    assert report.jobs["tick"].ran_twice == 1


def test_a_retry_of_a_slot_that_had_succeeded_is_a_slot_run_twice() -> None:
    runs = [*every("tick"), row("tick", 5, attempt=2, start=3.5)]  # attempt 1 succeeded at 5.01, attempt 2 at 8.5
    report = check(history([job()], runs))
    assert kinds(report) == ["slot_run_twice"]
    assert report.violations[0].detail["why"] == ["again_after_success"]


def test_a_retry_after_a_failure_is_not_a_duplicate() -> None:
    runs = [r if r.scheduled_for != at(5) else replace(r, status="failed") for r in every("tick")]
    report = check(history([job(max_attempts=2)], [*runs, row("tick", 5, attempt=2, start=0.8)]))
    assert report.ok, report.violations


def test_overlapping_runs_of_a_max_parallel_1_job_are_caught() -> None:
    runs = [r if r.scheduled_for != at(5) else replace(r, finished_at=at(6.5)) for r in every("tick")]
    report = check(history([job()], runs))
    assert kinds(report) == ["overlap"]
    assert report.violations[0].detail["runs"] == ["tick/5/1", "tick/6/1"]
    assert report.violations[0].detail["overlap_ms"] == pytest.approx(200, abs=1)  # 6.01 until slot 6 ends


def test_two_jobs_of_one_lock_group_running_at_once_are_caught() -> None:
    group = {"interval_seconds": 2, "lock_group": "grp", "queue": "grp"}
    jobs = [job("ga", **group), job("gb", **group)]
    runs = every("ga", 2, first=2) + [row("gb", s, period=2, start=0.5) for s in range(2, END, 2)]
    assert check(history(jobs, runs)).ok
    runs = [r if r.run_id != "ga/10/1" else replace(r, finished_at=at(10.6)) for r in runs]  # gb starts at 10.5
    report = check(history(jobs, runs))
    assert kinds(report) == ["overlap"] and report.violations[0].detail["lock"] == "grp"


def test_max_parallel_two_allows_two_at_once_but_not_three() -> None:
    long = [replace(r, finished_at=r.scheduled_for + timedelta(seconds=1.5)) for r in every("wide")]
    assert check(history([job("wide", max_parallel=2)], long)).ok
    longer = [replace(r, finished_at=r.scheduled_for + timedelta(seconds=2.5)) for r in every("wide")]
    report = check(history([job("wide", max_parallel=2)], longer))
    assert report.violations and set(kinds(report)) == {"overlap"}


def test_a_slot_with_no_record_is_lost_and_has_no_ledger_row() -> None:
    report = check(history([job()], every("tick", skip=(10,))))
    assert kinds(report) == ["lost_slot", "no_ledger_row"] and report.jobs["tick"].no_ledger_row == 1
    lost = next(v for v in report.violations if v.kind == "lost_slot")
    assert lost.detail == {"slot": "2026-01-05T12:00:10.000000Z", "cause": "gap", "jumped_by": None}
    outage = Event("pg_outage", at(9), at(12))
    report = check(history([job()], every("tick", skip=(10,)), outage))
    assert kinds(report) == ["no_ledger_row"]  # a window excuses the loss, never a slot the ledger does not name


def test_a_missed_row_outside_every_window_is_a_lost_slot_the_ledger_names() -> None:
    report = check(history([job()], [*every("tick", skip=(10,)), gap("tick", 10)]))
    assert kinds(report) == ["lost_slot"] and report.violations[0].detail["cause"] == "missed"
    assert report.jobs["tick"].no_ledger_row == 0


def test_a_gap_row_is_not_a_claim_stuck_before_its_start() -> None:
    report = check(history([job()], [*every("tick", skip=(5,)), gap("tick", 5)]), Limits(grace_sec=5, claim_sec=10))
    assert kinds(report) == ["lost_slot"] and report.violations[0].detail["cause"] == "missed"
    assert [f.kind for f in report.findings] == []


def test_a_slot_jumped_over_by_a_late_run_is_lost_and_says_so() -> None:
    runs = [r if r.scheduled_for != at(9) else replace(r, next_posted_for=at(11)) for r in every("tick", skip=(10,))]
    jumped = gap("tick", 10, "skipped_misfire", "jumped over: the message of slot 9 came 1.2 s late")
    report = check(history([job()], [*runs, jumped]))
    assert kinds(report) == ["lost_slot"]
    assert report.violations[0].detail["cause"] == "jumped" and report.violations[0].detail["jumped_by"] == "tick/9/1"


def test_slots_lost_inside_a_fault_window_plus_grace_are_excused() -> None:
    outage = Event("pg_outage", at(9), at(12))
    lost = (10, 11, 12, 13, 14)
    runs = [*every("tick", skip=lost), *(gap("tick", s) for s in lost)]  # the reseed wrote `missed` rows
    report = check(history([job()], runs, outage), Limits(grace_sec=5))
    assert report.ok, report.violations
    assert report.jobs["tick"].lost_in_window == 5 and report.lost_in_window_by_cause == {"pg_outage": 5}


def test_a_slot_lost_after_the_grace_is_a_violation() -> None:
    outage = Event("pg_outage", at(9), at(12))
    runs = [*every("tick", skip=(10, 18)), gap("tick", 10), gap("tick", 18)]
    report = check(history([job()], runs, outage), Limits(grace_sec=5))
    assert kinds(report) == ["lost_slot"] and report.violations[0].detail["slot"].endswith(":18.000000Z")


def test_a_window_never_excuses_a_slot_run_twice() -> None:
    outage = Event("amqp_restart", at(4), at(8))
    copies = [
        Execution("tick/5/1", "tick", at(5), 1, "scheduler", 100, at(5.01), at(5.3), "succeeded"),
        Execution("tick/5/1", "tick", at(5), 1, "scheduler", 200, at(7.0), at(7.3), "succeeded"),
    ]
    report = check(history([job()], every("tick"), outage, executions=copies))
    assert kinds(report) == ["slot_run_twice"]


def test_the_same_attempt_again_after_its_process_was_killed_is_a_take_over_not_a_duplicate() -> None:
    kill = Event("worker_kill", at(5.2), at(8), detail={"pid": 100, "killed_at": "2026-01-05T12:00:05.200000Z"})
    executions = [
        Execution("tick/5/1", "tick", at(5), 1, "scheduler", 100, at(5.01), None, None),  # killed mid-run
        Execution("tick/5/1", "tick", at(5), 1, "scheduler", 200, at(5.5), at(5.7), "succeeded"),
    ]
    report = check(history([job()], every("tick"), kill, executions=executions))
    assert report.ok, report.violations
    assert report.jobs["tick"].reruns_after_crash == 1


def test_a_paused_job_owes_no_run_but_a_paused_row_per_slot_and_a_run_while_paused_is_caught() -> None:
    pause = Event("pause", at(10), at(10.2), jobs=("tick",))
    resume = Event("resume", at(20), at(20.2), jobs=("tick",))
    paused = [gap("tick", s, "paused", "paused: soak storm") for s in range(10, 21)]
    runs = every("tick", last=9) + paused + every("tick", first=21)
    report = check(history([job()], runs, pause, resume))
    assert report.ok, report.violations
    assert report.jobs["tick"].due == 10 + 7  # 1..10 (10 was due before the pause returned), then 21..27
    caught_up = replace(row("tick", 20, start=0.5), trigger_source="manual")  # the catch-up of the last one
    report = check(history([job()], [*(r for r in runs if r.scheduled_for != at(20)), caught_up], pause, resume))
    assert report.ok, report.violations
    assert report.jobs["tick"].caught_up == 0  # slot 20 belongs to the pause (not due): a run of it is no stray
    without = [r for r in runs if r.scheduled_for != at(14)]
    report = check(history([job()], without, pause, resume))
    assert kinds(report) == ["no_ledger_row"] and report.violations[0].detail["cause"] == "paused"
    report = check(history([job()], [*without, row("tick", 14)], pause, resume))
    assert kinds(report) == ["ran_while_paused"]


def test_set_moves_the_schedule_and_a_slot_of_the_old_schedule_after_it_is_off_schedule() -> None:
    change = Event("set", at(10), at(10.2), jobs=("tick",), changes={"interval_seconds": 2})
    replaced = gap("tick", 10, error="chain replaced (seed or set) while the message due 10 was on its way")
    runs = [*every("tick", last=9), replaced, *every("tick", 2, first=12)]
    report = check(history([job()], runs, change))
    assert report.ok, report.violations
    # the chain took the new schedule before the command returned: slot 10 of the old one was never in force
    report = check(history([job()], [r for r in runs if r is not replaced], change))
    assert report.ok and [f.kind for f in report.findings] == ["no_ledger_row_while_rescheduled"], report.violations
    report = check(history([job()], [*runs, row("tick", 15)], change))
    assert kinds(report) == ["off_schedule"]


def test_a_reseed_continues_the_grid_and_excuses_the_slot_in_flight() -> None:
    again = Event("reseed", at(10.1), at(10.6))
    report = check(history([job()], [*every("tick", skip=(10,)), gap("tick", 10)], again))
    assert report.ok, report.violations
    assert report.jobs["tick"].lost_in_window == 1


def test_slots_jumped_by_a_misfire_are_the_misfire_policy_not_a_loss() -> None:
    misfire = replace(row("tick", 10, status="skipped_misfire"), next_posted_for=at(15))
    jumped = [
        gap("tick", s, "skipped_misfire", "jumped over: the message of slot 10 came 4.5 s late") for s in range(11, 15)
    ]
    runs = [*every("tick", last=9), misfire, *jumped, *every("tick", first=15)]
    report = check(history([job()], runs))
    assert report.ok, report.violations
    assert (report.jobs["tick"].skipped, report.jobs["tick"].skipped_by_misfire) == (1, 4)


def test_an_abandoned_run_whose_promised_retry_never_came_is_caught() -> None:
    abandoned = replace(row("tick", 10), status="abandoned", finished_at=at(10.5))
    promise = LogEvent(at(10.5), "run.abandoned", "tick", {"run_id": "tick/10/1", "retry": True})
    runs = [r if r.scheduled_for != at(10) else abandoned for r in every("tick")]
    report = check(history([job(max_attempts=2)], runs, log_events=[promise]))
    assert kinds(report) == ["retry_missing"]
    report = check(history([job(max_attempts=2)], [*runs, row("tick", 10, attempt=2, start=0.6)], log_events=[promise]))
    assert report.ok and report.jobs["tick"].abandoned_retried == 1


def test_a_run_abandoned_after_the_end_of_observation_owes_no_retry() -> None:
    """The workers stop after the soak's end: a claim the watchdog abandons then has nobody to run its retry."""
    abandoned = replace(row("tick", END - 2), status="abandoned", started_at=None, finished_at=at(END + 1))
    promise = LogEvent(at(END + 1), "run.abandoned", "tick", {"run_id": f"tick/{END - 2}/1", "retry": True})
    runs = [r if r.scheduled_for != at(END - 2) else abandoned for r in every("tick")]
    report = check(history([job(max_attempts=2)], runs, log_events=[promise]))
    assert report.ok, report.violations
    assert [f.kind for f in report.findings] == ["retry_missing_after_end"]


def test_a_failed_attempt_with_attempts_left_and_no_next_attempt_is_a_lost_retry() -> None:
    runs = [r if r.scheduled_for != at(5) else replace(r, status="failed") for r in every("tick")]
    assert kinds(check(history([job(max_attempts=2)], runs))) == ["failed_retry_missing"]
    assert check(history([job(max_attempts=1)], runs)).ok  # no attempts left: nothing owed
    permanent = [
        replace(r, error=f"{PARAMS_INVALID}: x is not an int") if r.scheduled_for == at(5) else r for r in runs
    ]
    assert check(history([job(max_attempts=2)], permanent)).ok  # a permanent error is not retried


def test_a_failure_close_to_the_end_of_observation_owes_no_retry_yet() -> None:
    runs = [r if r.scheduled_for != at(END - 5) else replace(r, status="timed_out") for r in every("tick")]
    report = check(history([job(max_attempts=2)], runs))
    assert report.ok, report.violations
    assert [f.kind for f in report.findings] == ["retry_not_owed_yet"]


def test_a_claim_that_never_started_is_a_lost_slot() -> None:
    stuck = replace(row("tick", 10), status="claimed", started_at=None, finished_at=None)
    runs = [r if r.scheduled_for != at(10) else stuck for r in every("tick")]
    report = check(history([job()], runs), Limits(grace_sec=5, claim_sec=10))
    assert kinds(report) == ["lost_slot"] and report.violations[0].detail["cause"] == "stuck_claim"
    assert [f.kind for f in report.findings] == ["stuck_claim"]


def test_a_failed_check_of_the_soak_is_a_violation() -> None:
    failed = Event("soak_check", at(25), at(25), ok=False, detail={"name": "one_chain_per_job"})
    assert kinds(check(history([job()], every("tick"), failed))) == ["soak_check"]


def test_recovery_is_the_first_success_after_each_fault() -> None:
    outage = Event("pg_outage", at(9), at(12.5))
    report = check(history([job()], every("tick", skip=(10, 11, 12)), outage))
    (entry,) = report.recovery
    assert (entry["kind"], entry["recovered"], entry["max_sec"]) == ("pg_outage", 1, pytest.approx(0.51))


def test_the_command_line_writes_the_report_and_exits_1_on_a_violation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs_file = write_jobs_file(tmp_path / "jobs.toml", [job()])
    log = FaultLog(tmp_path / "faults.jsonl")
    for event in events():
        log.write(replace(event, detail={"file": str(jobs_file)}) if event.kind == "seed" else event)
    argv = ["--scope", "chaos", "--faults", str(log.path), "--out", str(tmp_path / "report.json")]
    dump_runs(tmp_path / "clean.jsonl", every("tick"), {"tick": 1})
    assert main([*argv, "--runs", str(tmp_path / "clean.jsonl")]) == 0
    assert "OK: no slot ran twice" in capsys.readouterr().out
    dump_runs(tmp_path / "lost.jsonl", every("tick", skip=(7,)), {"tick": 1})
    assert main([*argv, "--runs", str(tmp_path / "lost.jsonl")]) == 1
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] is False and sorted(v["kind"] for v in report["violations"]) == ["lost_slot", "no_ledger_row"]
    assert "VIOLATIONS: 2" in capsys.readouterr().out


# -- event-triggered jobs: each (job, event) once, none lost outside windows ------------------------------------


def upstream_runs() -> list[Run]:
    """`tick` every second, each run with a real run id (outcome event ids derive from it)."""
    return [replace(r, run_id=str(uuid.uuid5(uuid.NAMESPACE_URL, r.run_id))) for r in every("tick")]


def event_row(upstream: Run, job_id: str = "evt") -> Run:
    event = outcome_message_id(uuid.UUID(upstream.run_id), "succeeded")
    assert upstream.finished_at is not None
    start = upstream.finished_at + timedelta(seconds=0.3)
    return Run(str(event_run_id("chaos", job_id, event)), job_id, None, "event", start, 1, "succeeded", WORKER,
               start, start, start + timedelta(seconds=0.1))  # fmt: skip


def follower() -> JobDefinition:
    return job("evt", triggers_on=["job.tick.succeeded"])


def test_every_upstream_success_running_its_subscriber_once_passes() -> None:
    ups = upstream_runs()
    report = check(history([job(), follower()], [*ups, *every("evt"), *(event_row(u) for u in ups)]))
    assert report.ok, report.violations
    assert report.events["evt"]["expected"] == report.events["evt"]["ran_once"] == len(ups)


def test_an_event_with_no_run_outside_every_window_is_lost_and_inside_one_excused() -> None:
    ups = upstream_runs()
    runs = [*ups, *every("evt"), *(event_row(u) for u in ups if u.scheduled_for != at(10))]
    report = check(history([job(), follower()], runs))
    assert kinds(report) == ["event_lost"] and report.events["evt"]["lost"] == 1
    outage = Event("pg_outage", at(9), at(10.5), detail={})
    report = check(history([job(), follower()], runs, outage))
    assert report.ok, report.violations
    assert report.events["evt"]["lost_in_window"] == 1


def test_an_event_run_twice_is_caught() -> None:
    ups = upstream_runs()
    twice = event_row(ups[4])
    copies = [
        Execution(twice.run_id, "evt", twice.scheduled_for, 1, "event", 100, at(40), at(40.1), "succeeded"),
        Execution(twice.run_id, "evt", twice.scheduled_for, 1, "event", 200, at(41), at(41.1), "succeeded"),
    ]
    runs = [*ups, *every("evt"), *(event_row(u) for u in ups)]
    report = check(history([job(), follower()], runs, executions=copies))
    assert "event_ran_twice" in kinds(report) and report.events["evt"]["ran_twice"] == 1


def test_seeding_the_file_again_may_leave_an_unchanged_job_on_its_epoch() -> None:
    again = Event("reseed", at(10.1), at(10.6))
    for final in (1, 2):  # unchanged since the first seed, or changed (a `set` in between) and bumped
        report = check(history([job()], every("tick"), again, final_epochs={"tick": final}))
        assert report.ok and [f.kind for f in report.findings] == [], report.findings
    report = check(history([job()], every("tick"), again, final_epochs={"tick": 3}))
    assert [f.kind for f in report.findings] == ["epoch_unexplained"]
