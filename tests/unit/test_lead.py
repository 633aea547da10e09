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


def test_a_claim_in_the_lead_lingers_at_most_its_limit_and_keeps_half_the_lead() -> None:
    assert lead.claim_linger_sec(SLOT, at(-250), 0.25, 0.02) == pytest.approx(0.02)  # the limit
    assert lead.claim_linger_sec(SLOT, at(-135), 0.25, 0.02) == pytest.approx(0.01)  # half the lead kept
    assert lead.claim_linger_sec(SLOT, at(-100), 0.25, 0.02) == 0.0  # inside half the lead: at once
    assert lead.claim_linger_sec(SLOT, at(30), 0.25, 0.02) == 0.0  # late: at once
    assert lead.claim_linger_sec(SLOT, at(-250), 0.25, 0.0) == 0.0  # lingering off


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


def test_waiters_of_one_instant_wake_in_one_turn_and_never_before_it() -> None:
    """Real time, a few tens of ms: the waiters of one instant share one timer and all wake before any of them
    runs on; a cancelled waiter leaves the others waiting; an instant reached already is not waited for."""

    async def scenario() -> None:
        gates = lead.SlotGates()
        instant = datetime.now(UTC) + timedelta(milliseconds=60)
        woke: list[tuple[int, datetime]] = []
        order: list[str] = []

        async def waiter(i: int) -> None:
            await gates.until(instant, lambda: datetime.now(UTC))
            woke.append((i, datetime.now(UTC)))
            order.append(f"woke {i}")
            await asyncio.sleep(0)
            order.append(f"on {i}")

        tasks = [asyncio.create_task(waiter(i)) for i in range(5)]
        await asyncio.sleep(0.01)
        assert gates.waiting() == 1  # one instant, one timer
        tasks[2].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert sorted(i for i, _ in woke) == [0, 1, 3, 4]
        assert all(t >= instant for _, t in woke)
        assert order[:4] == [f"woke {i}" for i in (0, 1, 3, 4)]  # every one woke before any went on
        assert gates.waiting() == 0
        before = datetime.now(UTC)
        await gates.until(before - timedelta(seconds=1), lambda: datetime.now(UTC))
        assert gates.waiting() == 0

    asyncio.run(scenario())


def test_a_gate_rung_early_by_the_clock_waits_on() -> None:
    """The worker's clock behind the loop's timer (a timer that fires early, a clock stepped back): the gate is
    armed again for what is left, so no waiter wakes before the instant on the worker's clock."""

    async def scenario() -> None:
        gates = lead.SlotGates()
        offset = [timedelta(0)]
        instant = datetime.now(UTC) + timedelta(milliseconds=30)

        def clock() -> datetime:
            return datetime.now(UTC) + offset[0]

        async def step_back() -> None:
            await asyncio.sleep(0.01)
            offset[0] = timedelta(milliseconds=-40)  # the clock steps back 40 ms before the gate rings

        stepping = asyncio.create_task(step_back())
        await gates.until(instant, clock)
        assert clock() >= instant
        await stepping

    asyncio.run(scenario())
