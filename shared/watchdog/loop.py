"""The watchdog loop: every `interval_sec`, if this process leads the scope, run each sweep once.

A sweep that fails (any exception) is logged and the next one runs; the loop never dies of it. Only a lost
session stops a pass: the scope's lock went with it, and no sweep may run until this process leads again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import asyncpg
import structlog

from shared.dependencies import SESSION_LOST, classify, describe
from shared.watchdog.leadership import Leadership

log = structlog.get_logger("shared.watchdog")


@contextlib.contextmanager
def each_alone(event: str, **context: Any) -> Iterator[None]:
    """One item of a sweep (a run, a chain, a retry): its own failure is logged as `event` with `context` and the
    sweep goes on with the next item; a server that is gone is raised, as every other item would fail the same way
    (the next pass tries again)."""
    try:
        yield
    except Exception as exc:
        if classify(exc) is not None:
            raise
        log.error(event, error=describe(exc), **context)


class Sweep(Protocol):
    """One duty of the active watchdog: `run` does one sweep on the leader's connection."""

    name: str

    async def run(self, conn: asyncpg.Connection) -> None: ...


class Watchdog:
    """Runs in every worker, active in one per scope (`Leadership`)."""

    def __init__(self, leadership: Leadership, sweeps: Sequence[Sweep], *, interval_sec: float) -> None:
        self.leadership = leadership
        self.sweeps = tuple(sweeps)
        self.interval_sec = interval_sec

    @property
    def active(self) -> bool:
        return self.leadership.active

    async def run(self) -> None:
        """Forever: lead if possible, do a pass, sleep. Cancelling it gives up the lead."""
        try:
            while True:
                conn = await self.leadership.lead()
                if conn is not None:
                    await self.pass_once(conn)
                await asyncio.sleep(self.interval_sec)
        finally:
            await self.leadership.resign()

    async def pass_once(self, conn: asyncpg.Connection) -> None:
        """Each sweep once, in order; a failing sweep does not keep the others from running."""
        for sweep in self.sweeps:
            try:
                await sweep.run(conn)
            except Exception as exc:
                log.warning("watchdog.sweep_failed", sweep=sweep.name, error=describe(exc))
                if isinstance(exc, SESSION_LOST) or conn.is_closed():
                    await self.leadership.resign()
                    return
