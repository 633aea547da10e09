"""The decisions of the overlap policies beyond skip and buffer_one (cancel_other, buffer_all), without servers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared import decisions
from shared.decisions import Action, Decision
from shared.definitions import load_definition
from shared.errors import ConfigError
from shared.vocabulary import TRANSITIONS, RunStatus
from tests.unit.test_decisions import SLOT, on_existing, row


@pytest.mark.parametrize(
    ("overlap", "taken", "action", "reason"),
    [
        ("skip", False, Action.SKIP_LOCKED, "lock_busy"),
        ("buffer_one", False, Action.BUFFER, "lock_busy"),
        ("buffer_one", True, Action.SKIP_LOCKED, "lock_busy"),
        ("buffer_all", False, Action.BUFFER, "lock_busy"),
        ("buffer_all", True, Action.SKIP_LOCKED, "buffer_full"),
        ("cancel_other", False, Action.BUFFER, "cancel_requested"),
        ("cancel_other", True, Action.SKIP_LOCKED, "lock_busy"),  # a slot already waits to replace the run
    ],
)
def test_when_locked(overlap: str, taken: bool, action: Action, reason: str) -> None:
    assert decisions.when_locked(overlap, taken) == Decision(action, reason)
    assert decisions.when_locked(overlap, taken, wait_for_lock=True) == Decision(Action.BUFFER, "queued")


@pytest.mark.parametrize(
    ("overlap", "waiting", "buffer_max", "room"),
    [
        ("buffer_all", 0, 3, True),
        ("buffer_all", 2, 3, True),
        ("buffer_all", 3, 3, False),
        ("buffer_one", 0, 3, True),  # buffer_max is buffer_all's: the others keep one
        ("buffer_one", 1, 3, False),
        ("cancel_other", 1, 10, False),
    ],
)
def test_buffer_room(overlap: str, waiting: int, buffer_max: int, room: bool) -> None:
    assert decisions.buffer_room(overlap, waiting, buffer_max) is room


def test_only_a_waiting_cancel_other_slot_asks_the_run_to_stop() -> None:
    assert decisions.asks_cancel("cancel_other", Decision(Action.BUFFER, "cancel_requested"))
    assert decisions.asks_cancel("cancel_other", Decision(Action.BUFFER, "still_locked"))
    assert not decisions.asks_cancel("cancel_other", Decision(Action.SKIP_LOCKED, "lock_busy"))
    assert not decisions.asks_cancel("buffer_one", Decision(Action.BUFFER, "lock_busy"))


def _on_buffered(lock_free: bool, earlier: bool, late_sec: float = 0.0) -> Decision:
    existing = row(RunStatus.BUFFERED, scheduled_for=SLOT - timedelta(seconds=late_sec))
    return on_existing(existing, lock_free=lock_free, earlier_waiting=earlier)


def test_buffer_all_runs_its_waiting_slots_in_slot_order() -> None:
    assert _on_buffered(lock_free=True, earlier=False) == Decision(Action.PROMOTE, "buffered_ran")
    assert _on_buffered(lock_free=True, earlier=True) == Decision(Action.BUFFER, "waits_its_turn")
    assert _on_buffered(lock_free=False, earlier=False) == Decision(Action.BUFFER, "still_locked")
    # past the grace a slot gives up, its turn or not
    assert _on_buffered(lock_free=True, earlier=True, late_sec=60).action is Action.GIVE_UP


def test_cancelled_is_a_terminal_status_reached_only_from_a_run_its_worker_holds() -> None:
    assert RunStatus.CANCELLED.terminal
    assert TRANSITIONS[RunStatus.CANCELLED] == frozenset()
    assert {before for before, after in TRANSITIONS.items() if RunStatus.CANCELLED in after} == {
        RunStatus.RUNNING,
        RunStatus.ABANDONED,
        RunStatus.CLAIMED,  # only by the run's own worker, when PostgreSQL lost its start in a crash
    }


def test_definitions_take_the_new_policies() -> None:
    job = load_definition({"job_id": "j", "interval_seconds": 5, "overlap": "buffer_all", "buffer_max": 3})
    assert (job.overlap.value, job.buffer_max) == ("buffer_all", 3)
    assert load_definition({"job_id": "j", "interval_seconds": 5, "overlap": "cancel_other"}).buffer_max == 10
    with pytest.raises(ConfigError, match="buffer_max"):
        load_definition({"job_id": "j", "interval_seconds": 5, "overlap": "buffer_all", "buffer_max": 0})
    with pytest.raises(ConfigError, match="overlap"):
        load_definition({"job_id": "j", "interval_seconds": 5, "overlap": "cancel_all"})
