"""Waiting between attempts: one rule for every loop that retries a server (connecting, recording a run,
publishing a retry, the watchdog and metrics loops, the control layer waiting for servers).

Exponential from `first_sec`, capped at `cap_sec`, with +-25 % jitter so restarted replicas do not stampede.
Each failure is one log line naming what is retried, the error and the delay; never a silent loop.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from shared.dependencies import CONNECT_ERRORS, describe

log = structlog.get_logger("shared.backoff")
T = TypeVar("T")


def backoff(attempt: int, cap_sec: float, rand: float, first_sec: float = 0.5) -> float:
    """Delay after failed attempt `attempt` (>= 1): `first_sec` doubling up to the cap, +-25 % jitter."""
    delay: float = min(cap_sec, first_sec * 2.0 ** min(max(attempt, 1) - 1, 20)) * (0.75 + rand / 2)
    return delay


async def forever(
    what: str,
    action: Callable[[], Awaitable[T]],
    *,
    cap_sec: float = 30.0,
    errors: tuple[type[BaseException], ...] = CONNECT_ERRORS,
    fatal: tuple[type[BaseException], ...] = (),
    on_attempt: Callable[[bool], None] | None = None,
    event: str = "dependency.retrying",
    **log_fields: object,
) -> T:
    """Call `action` until it returns, backing off after each of `errors`; any other error propagates, and so do
    the `fatal` ones among `errors` (a refused login: retrying cannot fix it)."""
    result = await _attempts(what, action, cap_sec, errors, fatal, None, on_attempt, event, log_fields)
    assert result is not None  # without a stop event, _attempts returns only on success
    return result[0]


async def until_stopped(
    what: str,
    action: Callable[[], Awaitable[T]],
    stopping: asyncio.Event,
    *,
    cap_sec: float = 30.0,
    errors: tuple[type[BaseException], ...] = CONNECT_ERRORS,
    event: str = "dependency.retrying",
    **log_fields: object,
) -> tuple[T] | None:
    """`forever`, except that a failure once `stopping` is set gives up (logged): None then, else `(result,)`."""
    return await _attempts(what, action, cap_sec, errors, (), stopping, None, event, log_fields)


async def _attempts(
    what: str,
    action: Callable[[], Awaitable[T]],
    cap_sec: float,
    errors: tuple[type[BaseException], ...],
    fatal: tuple[type[BaseException], ...],
    stopping: asyncio.Event | None,
    on_attempt: Callable[[bool], None] | None,
    event: str,
    log_fields: dict[str, object],
) -> tuple[T] | None:
    attempt = 0
    while True:
        attempt += 1
        try:
            result = await action()
        except errors as exc:
            if isinstance(exc, fatal):
                raise
            if on_attempt is not None:
                on_attempt(False)
            if stopping is not None and stopping.is_set():
                log.error("dependency.gave_up", what=what, error=describe(exc), attempts=attempt, **log_fields)
                return None
            delay = backoff(attempt, cap_sec, random.random())
            log.warning(
                event, what=what, attempt=attempt, error=describe(exc), retry_in_sec=round(delay, 2), **log_fields
            )
            await asyncio.sleep(delay)
            continue
        if on_attempt is not None:
            on_attempt(True)
        if attempt > 1:
            log.info("dependency.up", what=what, attempts=attempt, **log_fields)
        return (result,)
