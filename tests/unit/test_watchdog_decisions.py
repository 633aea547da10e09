"""The pure parts of the watchdog's sweeps: which chains are lost, whether an abandoned run is retried and as
what, when pruning is due, which stored rows are bad. No servers."""

from __future__ import annotations

import uuid
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import retry_policy
from shared.store.jobs import BadJob, JobRow, checked_rows
from shared.store.runs import RunRow
from shared.vocabulary import ReseedReason, RunStatus, TriggerSource
from shared.watchdog.abandoned import next_attempt, should_retry
from shared.watchdog.pruning import Pruning
from shared.watchdog.reseed import LostChains, lost_chains, reseed_reason
from tests.support import rows
from tests.support.logcapture import capture_logs

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
LOST_AFTER = timedelta(seconds=60)
LONG_AGO = NOW - timedelta(hours=1)


def job_row(job_id: str, **overrides: Any) -> JobRow:
    """An enabled 60 s interval chain job on a queue named like the job, due just now."""
    defaults = {"max_attempts": 3, "epoch": 4, "next_due_at": NOW, "created_at": NOW, "updated_at": NOW}
    return rows.job_row(job_id, **{**defaults, **overrides})


def run_row(**overrides: Any) -> RunRow:
    values: dict[str, Any] = {
        "run_id": uuid.UUID(int=7), "scope": "s", "job_id": "tick", "epoch": 4, "trigger_source": "scheduler",
        "scheduled_for": NOW, "attempt": 1, "status": RunStatus.ABANDONED, "worker": "w-dead",
        "next_posted_for": None, "params": {"k": 1},
    }  # fmt: skip
    values.update(overrides)
    return RunRow(**values)


# -- lost chains ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "lost"),
    [
        (job_row("tick", next_due_at=NOW - timedelta(seconds=61)), True),  # overdue past the threshold
        (job_row("tick", next_due_at=NOW - timedelta(seconds=59)), False),  # late, not lost yet
        (job_row("tick", next_due_at=NOW + timedelta(hours=1)), False),
        (job_row("tick", next_due_at=None, updated_at=NOW - timedelta(seconds=61)), True),  # never seeded
        (job_row("tick", next_due_at=None, updated_at=NOW - timedelta(seconds=5)), False),  # its seeder is on it
        (job_row("tick", next_due_at=None), False),  # written just now
        (job_row("tick", next_due_at=None, updated_at=LONG_AGO, enabled=False), False),  # paused: no chain expected
        (job_row("tick", next_due_at=None, updated_at=LONG_AGO, reschedule_mode="none"), False),  # no chain
        (job_row("tick", next_due_at=None, updated_at=LONG_AGO, queue="nobody-serves"), False),  # it waits queued
    ],
)
def test_lost_chains_are_enabled_served_chain_jobs_overdue_past_the_threshold(job: JobRow, lost: bool) -> None:
    assert lost_chains([job], {"tick"}, NOW, LOST_AFTER) == ([job] if lost else [])


def test_reseed_reason_tells_a_chain_never_seeded_from_an_overdue_one() -> None:
    assert reseed_reason(job_row("a", next_due_at=None)) is ReseedReason.NEVER_SEEDED
    assert reseed_reason(job_row("a", next_due_at=NOW)) is ReseedReason.OVERDUE


def test_a_bad_job_is_logged_once_and_once_more_when_it_is_good_again() -> None:
    sweep = LostChains("s", None, None, None, lost_after_sec=60, clock=lambda: NOW)  # type: ignore[arg-type]
    with capture_logs() as logs:
        sweep.note_bad([BadJob("broken", "ValueError: bad timezone")])
        sweep.note_bad([BadJob("broken", "ValueError: bad timezone")])
        sweep.note_bad([BadJob("broken", "ValueError: bad cron")])  # a different problem is news
        sweep.note_bad([])
        sweep.note_bad([])
    assert [(e["event"], e["job_id"]) for e in logs] == [
        ("job.definition_invalid", "broken"),
        ("job.definition_invalid", "broken"),
        ("job.definition_valid_again", "broken"),
    ]


def test_checked_rows_keeps_good_rows_and_names_the_bad_ones() -> None:
    good = job_row("good")
    values = {f.name: getattr(good, f.name) for f in fields(JobRow)}
    bad_tz = {**values, "job_id": "tz", "interval_seconds": None, "cron_expr": "0 * * * *", "timezone": "Mars/Base"}
    bad_cron = {**values, "job_id": "cron", "interval_seconds": None, "cron_expr": "every day", "timezone": "UTC"}
    rows, bad = checked_rows([values, bad_tz, bad_cron])  # type: ignore[list-item]
    assert rows == [good]
    assert [b.job_id for b in bad] == ["tz", "cron"]
    assert all(b.error for b in bad)


# -- abandoned runs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "job", "retry"),
    [
        (run_row(attempt=1), job_row("tick", max_attempts=3), True),
        (run_row(attempt=3), job_row("tick", max_attempts=3), False),  # no attempts left
        (run_row(attempt=1, epoch=3), job_row("tick", max_attempts=3), False),  # a replaced chain: stale epoch
        (run_row(attempt=1, epoch=None, trigger_source="manual"), job_row("tick", max_attempts=3), True),
        (run_row(attempt=1), None, False),  # the job is gone
    ],
)
def test_an_abandoned_run_is_retried_only_when_the_retry_policy_allows_and_the_epoch_is_current(
    row: RunRow, job: JobRow | None, retry: bool
) -> None:
    assert should_retry(row, job) is retry


def test_the_retry_of_an_abandoned_run_is_the_slot_s_next_attempt_under_the_policy_s_run_id() -> None:
    row = run_row(attempt=2)
    message = next_attempt(row, NOW)
    assert message.trigger_source == TriggerSource.RETRY
    assert (message.job_id, message.epoch, message.scheduled_for, message.params) == ("tick", 4, NOW, {"k": 1})
    assert message.attempt == 3
    assert message.run_id == retry_policy.retry_run_id("s", "tick", 4, NOW, row.run_id, 3)


# -- pruning --------------------------------------------------------------------------------------------------


def test_pruning_is_due_first_then_once_per_period() -> None:
    clock = iter([100.0, 200.0, 3701.0, 3702.0]).__next__
    pruning = Pruning("s", 30.0, every_sec=3600.0, monotonic=clock)
    assert [pruning.due() for _ in range(4)] == [True, False, True, False]
