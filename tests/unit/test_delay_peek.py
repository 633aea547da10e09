"""The soak's look inside a crowded delay queue: only two different future slots of the current epoch are a
second chain."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.chaos.delay_peek import classify

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def msg(slot: str, epoch: int = 3) -> dict[str, object]:
    return {"job_id": "j", "epoch": epoch, "scheduled_for": f"2026-01-01T{slot}Z"}


def test_copies_stale_epochs_and_overdue_messages_are_told_apart_from_a_second_chain() -> None:
    found = classify([msg("12:00:02"), msg("12:00:02"), msg("12:00:04", epoch=2), msg("11:59:40")], epoch=3, now=NOW)
    assert found == {
        "live": ["2026-01-01T12:00:02Z"],
        "duplicate": ["2026-01-01T12:00:02Z"],
        "stale": ["2026-01-01T12:00:04Z"],
        "overdue": ["2026-01-01T11:59:40Z"],
    }


def test_two_different_future_slots_of_the_current_epoch_are_two_live_chains() -> None:
    assert len(classify([msg("12:00:02"), msg("12:00:03")], epoch=3, now=NOW)["live"]) == 2
