"""The bot's answers: short plain text from control-layer results and errors, within Telegram's limit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from scheduler_seed.server.telegram_replies import (
    MESSAGE_LIMIT,
    clip,
    failure,
    messages,
    queued,
    run_lines,
    status_lines,
    units,
)
from shared.control.errors import ActionFailed, DependencyDown, InvalidRequest, RunningNow, UnknownJob
from shared.control.results import JobStatus, RunQueued, RunRecord

NOW = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
RUN = uuid.UUID("12345678-1234-5678-1234-567812345678")


def job(job_id: str = "tick", **changes: object) -> JobStatus:
    values: dict[str, object] = {
        "job_id": job_id,
        "queue": job_id,
        "enabled": True,
        "pause_note": None,
        "schedule": "every 10 s",
        "timezone": "UTC",
        "next_slots": [NOW + timedelta(seconds=5)],
        "next_due_at": NOW + timedelta(seconds=5),
        "epoch": 3,
        "last_run_at": NOW - timedelta(seconds=5),
        "last_status": "succeeded",
        "last_error": None,
        "last_duration_ms": 120,
        "consecutive_failures": 0,
        "running": 0,
        "last_lateness_ms": 4,
    }
    values.update(changes)
    return JobStatus(**values)  # type: ignore[arg-type]


def test_a_status_line_says_enabled_schedule_last_status_failures_and_running() -> None:
    lines = status_lines(
        [
            job(),
            job("scan", last_status="failed", consecutive_failures=3, running=1),
            job("nightly", enabled=False, pause_note="holiday", next_slots=[], last_run_at=None, last_status=None),
        ],
        NOW,
    )
    assert lines == [
        "3 job(s), times in UTC:",
        "tick: on, every 10 s, last succeeded 5.0s ago, next 2026-11-22 10:00:05Z",
        "scan: on, every 10 s, last failed 5.0s ago, 3 failure(s) in a row, 1 running, next 2026-11-22 10:00:05Z",
        "nightly: PAUSED (holiday), every 10 s, never run",
    ]
    assert status_lines([], NOW) == ["No jobs in this scope."]


def test_messages_pack_lines_within_the_limit_and_say_how_many_were_left_out() -> None:
    lines = [f"job-{i:04d}: on, every 10 s" for i in range(2000)]
    packed = messages(lines, max_messages=3)
    assert len(packed) == 3 and all(units(text) <= MESSAGE_LIMIT for text in packed)
    shown = sum(len(text.splitlines()) for text in packed) - 1
    assert packed[-1].endswith(f"... and {2000 - shown} more line(s) not shown.")
    assert messages(["a", "b"]) == ["a\nb"]
    assert messages([]) == []


def test_a_long_line_is_clipped_counting_utf16_units_as_telegram_does() -> None:
    emoji = "\U0001f680" * 3000  # each counts two units
    (text,) = messages([emoji])
    assert units(text) <= MESSAGE_LIMIT and text.endswith("...")
    assert clip("a\nb   c") == "a b c"
    assert len(clip("x" * 1000, 50)) == 50


def test_runs_are_listed_newest_first_with_status_trigger_attempt_and_error() -> None:
    record = RunRecord(
        run_id=RUN,
        job_id="tick",
        epoch=3,
        trigger_source="manual",
        scheduled_for=NOW,
        attempt=2,
        status="failed",
        worker="w1",
        started_at=NOW,
        finished_at=NOW,
        duration_ms=1500,
        lateness_ms=3,
        error="RuntimeError: broker said no",
        params={},
    )
    assert run_lines("tick", [record], NOW) == [
        "Latest 1 run(s) of tick, times in UTC:",
        "2026-11-22 10:00:00Z failed in 1.5s, manual #2, run 12345678, error: RuntimeError: broker said no",
    ]
    assert run_lines("tick", [], NOW) == ["No runs of tick yet."]


def test_a_queued_run_says_when_no_worker_serves_its_queue() -> None:
    assert queued(RunQueued("tick", RUN, "mock.jobs.tick", True)) == f"Run {RUN} of tick queued."
    assert "No live worker consumes mock.jobs.tick now" in queued(RunQueued("tick", RUN, "mock.jobs.tick", False))


@pytest.mark.parametrize(
    ("error", "answer"),
    [
        (UnknownJob("mock", "ghost"), "Unknown job 'ghost'. /job status lists the jobs."),
        (
            RunningNow("tick", RUN, "running", "w1", NOW - timedelta(seconds=12)),
            f"tick is running now: run {RUN} (running on w1), started 2026-11-22 09:59:48Z (12s ago). "
            "Nothing was queued.",
        ),
        (
            DependencyDown("PostgreSQL", "postgresql://postgres:***@db:5432/x", "refused"),
            "PostgreSQL is not reachable now; nothing was done. Try again in a while.",
        ),
        (
            ConnectionRefusedError(111, "refused"),
            "RabbitMQ or PostgreSQL is not reachable now; nothing was done. Try again in a while.",
        ),
        (InvalidRequest("set tick: nothing to change"), "Invalid: set tick: nothing to change"),
        (ActionFailed("no outcome within 30 s"), "Not done: no outcome within 30 s"),
    ],
)
def test_each_kind_of_failure_is_a_plain_answer(error: BaseException, answer: str) -> None:
    assert failure(error, NOW) == answer


def test_a_bug_is_answered_without_its_details() -> None:
    answer = failure(KeyError("internal detail"), NOW)
    assert "internal detail" not in answer and "server log" in answer
