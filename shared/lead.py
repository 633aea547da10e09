"""Lead-time dispatch (README, "Starting on the dot"): a chain message leaves its delay queue a lead before its
slot; the worker claims the slot and posts the next one in that lead, and starts the handler at the slot on its
own clock. Pure timing here; the steps are in `shared.protocol` (the lead path) and `shared.publisher` (the lead
taken off the delay).

    wait_sec        how long a message that arrived early waits for its slot (None: it does not wait)
    batch_wait_sec  the same for a message claimed in a batch (shared.lead_batch), which also takes in those due
                    now or late: they are claimed with the others and start at once
    sleep_until     wait, on the worker's clock, until an instant (never wakes before it)
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


async def sleep_until(at: datetime, clock: Callable[[], datetime]) -> None:
    """Sleep until `clock()` reaches `at` (the event loop's timer may wake a hair early: sleep the rest)."""
    for _ in range(100):  # bounded: a clock that stepped back is not waited for twice over
        left = (at - clock()).total_seconds()
        if left <= 0:
            return
        await asyncio.sleep(left)
