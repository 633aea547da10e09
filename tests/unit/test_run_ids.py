"""Retry run ids: the worker and the watchdog must name attempt N+1 of a run the same way."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from shared.retry_policy import retry_run_id as next_attempt_run_id
from shared.schedule import derive_run_id

SLOT = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


def test_slot_runs_derive_every_attempt_from_the_slot() -> None:
    first = derive_run_id("s", "job", 3, SLOT, 1)
    assert next_attempt_run_id("s", "job", 3, SLOT, first, 2) == derive_run_id("s", "job", 3, SLOT, 2)
    assert next_attempt_run_id("s", "job", 3, SLOT, uuid.uuid4(), 2) == derive_run_id("s", "job", 3, SLOT, 2)


def test_manual_runs_chain_from_the_previous_run_id() -> None:
    first = uuid.UUID("00000000-0000-4000-8000-000000000001")
    second = next_attempt_run_id("s", "job", None, SLOT, first, 2)
    assert second == uuid.uuid5(first, "attempt-2")
    assert next_attempt_run_id("s", "job", None, SLOT, second, 3) != second
    assert next_attempt_run_id("s", "job", None, SLOT, first, 2) == second  # stable
