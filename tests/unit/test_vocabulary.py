"""The run-status table: every status is reachable from a new row, finished runs stay finished, and the sets the
code uses agree with the table."""

from __future__ import annotations

from shared.vocabulary import (
    ACTIVE,
    EXECUTED,
    OWNED,
    RETRYABLE,
    REVIVABLE,
    TRANSITIONS,
    DropReason,
    ParkReason,
    RunStatus,
    may_move,
    sources,
)


def reachable() -> set[RunStatus]:
    seen: set[RunStatus] = set()
    todo = list(TRANSITIONS[None])
    while todo:
        status = todo.pop()
        if status not in seen:
            seen.add(status)
            todo.extend(TRANSITIONS[status])
    return seen


def test_the_table_names_every_status() -> None:
    assert set(TRANSITIONS) == {None, *RunStatus}


def test_every_status_is_reachable_from_a_new_row() -> None:
    assert reachable() == set(RunStatus)


def test_a_run_that_succeeded_failed_or_timed_out_never_changes() -> None:
    for status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT):
        assert TRANSITIONS[status] == frozenset(), status


def test_only_backfill_brings_a_slot_that_did_not_run_back() -> None:
    for status in REVIVABLE:
        assert TRANSITIONS[status] == {RunStatus.CLAIMED}


def test_every_active_run_can_end() -> None:
    for status in ACTIVE:
        assert any(to.terminal for to in TRANSITIONS[status]), status


def test_sets_agree_with_the_statuses() -> None:
    assert OWNED <= ACTIVE
    assert RETRYABLE <= EXECUTED
    assert not (REVIVABLE & EXECUTED)
    assert all(s.terminal for s in EXECUTED | REVIVABLE)
    assert may_move(None, RunStatus.CLAIMED) and not may_move(None, RunStatus.RUNNING)


def test_statuses_travel_to_sql_as_sorted_text() -> None:
    assert sources(OWNED) == ["claimed", "running"]


def test_reason_values_are_metric_label_safe() -> None:
    for value in [*DropReason, *ParkReason]:
        assert value.value.replace("_", "").isalpha() and value.value.islower()
