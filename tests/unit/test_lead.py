"""shared.lead: which early chain messages wait for their slot, and the wait never ends before the slot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from shared import lead

SLOT = datetime(2026, 11, 30, 12, tzinfo=UTC)


def at(ms: float) -> datetime:
    return SLOT + timedelta(milliseconds=ms)


def test_a_message_inside_the_lead_waits_for_its_slot() -> None:
    assert lead.wait_sec(SLOT, at(-250), 0.25) == 0.25
    assert lead.wait_sec(SLOT, at(-6), 0.25) == 0.006


def test_late_barely_early_or_implausibly_early_messages_go_the_ordinary_way() -> None:
    assert lead.wait_sec(SLOT, at(5), 0.25) is None  # past the slot
    assert lead.wait_sec(SLOT, at(-4), 0.25) is None  # too close to gain anything
    assert lead.wait_sec(SLOT, at(-1001), 0.25) is None  # more than a second (and twice the lead) early
    assert lead.wait_sec(SLOT, at(-1500), 1.0) == 1.5  # within twice a long lead
    assert lead.wait_sec(SLOT, at(-100), 0.0) is None  # no lead configured


def test_sleep_until_does_not_wake_before_the_instant(monkeypatch: pytest.MonkeyPatch) -> None:
    clock_now = [SLOT]
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock_now[0] += timedelta(seconds=seconds * 0.5)  # a timer that fires early

    monkeypatch.setattr(lead.asyncio, "sleep", fake_sleep)
    asyncio.run(lead.sleep_until(SLOT + timedelta(seconds=1), lambda: clock_now[0]))
    assert clock_now[0] >= SLOT + timedelta(seconds=1) - timedelta(milliseconds=1) and len(sleeps) > 1


def test_a_message_claimed_in_a_batch_waits_for_its_slot_or_starts_at_once_when_due() -> None:
    assert lead.batch_wait_sec(SLOT, at(-250), 0.25) == 0.25  # in the lead: as wait_sec
    assert lead.batch_wait_sec(SLOT, at(-4), 0.25) == 0.004  # close to its slot: waits the rest
    assert lead.batch_wait_sec(SLOT, at(0), 0.25) == 0.0  # due
    assert lead.batch_wait_sec(SLOT, at(3000), 0.25) == 0.0  # late (the misfire grace is checked apart)
    assert lead.batch_wait_sec(SLOT, at(-1001), 0.25) is None  # implausibly early: the ordinary way
    assert lead.batch_wait_sec(SLOT, at(-1500), 1.0) == 1.5
    assert lead.batch_wait_sec(SLOT, at(-100), 0.0) is None  # no lead configured: no batching either
