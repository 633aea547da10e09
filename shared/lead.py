"""Lead-time dispatch (README, "Starting on the dot"): a chain message leaves its delay queue a lead before its
slot; the worker claims the slot and posts the next one in that lead, and starts the handler at the slot on its
own clock. Pure timing here; the steps are in `shared.protocol` (the lead path) and `shared.publisher` (the lead
taken off the delay).

    wait_sec        how long a message that arrived early waits for its slot (None: it does not wait)
    batch_wait_sec  the same for a message claimed in a batch (shared.lead_batch), which also takes in those due
                    now or late: they are claimed with the others and start at once
    claim_linger_sec how long a claim in the lead may wait for others to share its statement (shared.coalesce)
    sleep_until     wait, on the worker's clock, until an instant (never wakes before it)
    SlotGates       the same for many waiters of one instant, on one timer: a herd's runs wake in one turn
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

DEFAULT_LEAD_MS = 250
"""The default lead: covers the claim, the next slot's confirmed post and the ack (2-5 ms on an idle machine,
tens to a few hundred ms on a saturated one) with room to spare, while a claimed slot waits at most a quarter of a
second before it starts (a one-second job is claimed a quarter period ahead)."""
MIN_WAIT_SEC = 0.005
"""A message this close to its slot (or past it) goes the ordinary way: claiming ahead would not save anything."""
MAX_EARLY_SEC = 1.0
"""A message earlier than twice the lead, and than this, is not waited for: it was not posted by a chain with
this lead (by hand, or a clock far off) and runs on arrival, as without a lead."""


def wait_sec(fire_at: datetime, now: datetime, lead_sec: float) -> float | None:
    """Seconds a chain message due at `fire_at` and received at `now` waits after its claim; None when it takes
    the ordinary path (no lead configured, too close to the slot or past it, or implausibly early)."""
    if lead_sec <= 0:
        return None
    early = (fire_at - now).total_seconds()
    if early <= MIN_WAIT_SEC or early > max(2 * lead_sec, MAX_EARLY_SEC):
        return None
    return early


def batch_wait_sec(fire_at: datetime, now: datetime, lead_sec: float) -> float | None:
    """Seconds a chain message claimed in a batch waits for its slot after the claim: as `wait_sec` for one in the
    lead, 0 for one at or past its slot (late ones too: the misfire grace is checked apart); None without a lead
    configured, or for an implausibly early message."""
    if lead_sec <= 0:
        return None
    early = (fire_at - now).total_seconds()
    if early > max(2 * lead_sec, MAX_EARLY_SEC):
        return None
    return max(early, 0.0)


DEFAULT_CLAIM_LINGER_MS = 100
"""How long a claim in the lead may wait for company by default: spread slots (one every few milliseconds at a few
hundred runs a second) then share their claim and their post's record in one statement each, at no cost in
lateness (the claim is a lead ahead of the start)."""


def claim_linger_sec(fire_at: datetime, now: datetime, lead_sec: float, linger_sec: float) -> float:
    """How long the claim of a slot due at `fire_at` (received at `now`) may wait for other claims: up to
    `linger_sec`, as long as half the lead is left for the post, its record and the ack; 0 for a message at or
    past its slot, or closer to it than that."""
    spare = (fire_at - now).total_seconds() - lead_sec / 2
    return max(0.0, min(linger_sec, spare))


async def sleep_until(at: datetime, clock: Callable[[], datetime]) -> None:
    """Sleep until `clock()` reaches `at` (the event loop's timer may wake a hair early: sleep the rest)."""
    for _ in range(100):  # bounded: a clock that stepped back is not waited for twice over
        left = (at - clock()).total_seconds()
        if left <= 0:
            return
        await asyncio.sleep(left)


class SlotGates:
    """`sleep_until` for the runs claimed ahead, one timer per instant: the runs of one slot (a herd: every job at
    one instant) wake in one turn of the event loop. Each waiting on a timer of its own, they woke one by one among
    the work of those woken first (the start, the handler, the finish, the log line, the outcome event of each), so
    the last handler of a herd started a herd's worth of run work after the slot. Waking together, their starts go
    in one statement (shared.slot_batch) and every handler starts before any run's after-work.

    A waiter that is cancelled leaves the others waiting; an instant already reached is not waited for."""

    REARM_LIMIT = 100  # a clock that keeps stepping back is not followed for ever (as `sleep_until`)

    def __init__(self) -> None:
        self._waiting: dict[datetime, list[asyncio.Future[None]]] = {}

    async def until(self, at: datetime, clock: Callable[[], datetime]) -> None:
        """Wait until `clock` (the worker's) reaches `at`."""
        left = (at - clock()).total_seconds()
        if left <= 0:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        waiters = self._waiting.get(at)
        if waiters is None:
            waiters = self._waiting[at] = []
            loop.call_later(left, self._ring, at, clock, 0)
        waiters.append(waiter)
        await waiter

    def waiting(self) -> int:
        """How many instants have waiters (tests)."""
        return len(self._waiting)

    def _ring(self, at: datetime, clock: Callable[[], datetime], rearmed: int) -> None:
        left = (at - clock()).total_seconds()
        if left > 0 and rearmed < self.REARM_LIMIT:  # the loop's timer woke a hair early, or the clock stepped back
            asyncio.get_running_loop().call_later(left, self._ring, at, clock, rearmed + 1)
            return
        for waiter in self._waiting.pop(at, ()):
            if not waiter.done():  # a cancelled waiter is done
                waiter.set_result(None)
