"""What the lost-retry sweep does with an overdue retry (shared.watchdog.retries.fate): pure, no servers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.messages import JobMessage, retry_message
from shared.store.retries import OwedRetry
from shared.watchdog.retries import MAX_REPOSTS, Fate, fate, stored_message
from tests.support.rows import job_row

SLOT = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 12, 2, 10, 5, tzinfo=UTC)


def owed(message: JobMessage | dict[str, Any], arrived: bool = False, reposts: int = 0) -> OwedRetry:
    body = message.model_dump(mode="json") if isinstance(message, JobMessage) else message
    return OwedRetry(uuid.uuid4(), SLOT, "j", body, arrived, reposts)


def a_retry(epoch: int | None = 1) -> JobMessage:
    return retry_message("s", "j", epoch, SLOT, 1, {"x": 1}, uuid.uuid4(), NOW)


def test_a_retry_whose_attempt_arrived_is_settled_whatever_the_job() -> None:
    entry = owed(a_retry(), arrived=True)
    assert fate(entry, stored_message(entry), None)[0] is Fate.ARRIVED


@pytest.mark.parametrize(
    ("job", "epoch", "why"),
    [
        (None, 1, "deleted"),
        (job_row("j", enabled=False), 1, "paused"),
        (job_row("j", epoch=2), 1, "reseeded"),
    ],
)
def test_a_retry_the_job_changed_under_is_moot(job: Any, epoch: int, why: str) -> None:
    entry = owed(a_retry(epoch))
    what, reason = fate(entry, stored_message(entry), job)
    assert what is Fate.MOOT and why in reason


def test_a_retry_of_a_manual_run_is_not_moot_for_a_reseeded_job() -> None:
    """A run outside the chain (no epoch) is retried whatever the chain's epoch."""
    entry = owed(a_retry(epoch=None))
    assert fate(entry, stored_message(entry), job_row("j", epoch=7))[0] is Fate.REPOST


def test_a_lost_retry_is_published_again_up_to_the_bound() -> None:
    message = a_retry()
    assert fate(owed(message, reposts=MAX_REPOSTS - 1), message, job_row("j"))[0] is Fate.REPOST
    assert fate(owed(message, reposts=MAX_REPOSTS), message, job_row("j"))[0] is Fate.GIVEN_UP


def test_a_stored_message_that_no_longer_validates_is_moot_not_an_error() -> None:
    entry = owed({"job_id": "j", "attempt": 0})
    assert stored_message(entry) is None
    assert fate(entry, None, job_row("j"))[0] is Fate.MOOT


def test_the_stored_message_is_the_retry_published() -> None:
    message = a_retry()
    entry = owed(message)
    assert stored_message(entry) == message


def test_a_retry_of_a_queue_no_live_worker_consumes_waits() -> None:
    """It may be waiting in the work queue: publishing copies would only pile up."""
    message = a_retry()
    assert fate(owed(message), message, job_row("j"), consumed=False)[0] is Fate.WAIT
