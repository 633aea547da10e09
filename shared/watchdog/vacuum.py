"""Sweep: vacuum. When the server's autovacuum is off, the active watchdog vacuums the scheduler schema's tables
itself, by autovacuum's own rule and settings (`shared.store.vacuum`); when it is on, the sweep does nothing.

`SCHEDULER_VACUUM`: `auto` (the default: only while the server's autovacuum is off), `always` (also while it is
on: a server whose autovacuum cannot keep up), `off` (never: the operator vacuums). The server's setting is read
again every `recheck_sec`, so turning autovacuum on (a reload) is noticed without a restart.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from shared.store import vacuum as store
from shared.store.vacuum import VacuumSetting

log = structlog.get_logger("shared.watchdog")

VACUUM_EVERY_SEC = 10.0
RECHECK_SEC = 300.0


class Vacuuming:
    """Looks at the tables at most once per `every_sec`; vacuums those past autovacuum's trigger."""

    name = "vacuum"

    def __init__(
        self,
        mode: VacuumSetting,
        *,
        every_sec: float = VACUUM_EVERY_SEC,
        recheck_sec: float = RECHECK_SEC,
        monotonic: Callable[[], float] = time.monotonic,
        autovacuum_on: Callable[[asyncpg.Connection], Awaitable[bool]] = store.autovacuum_on,
        schema: str = store.SCHEMA,
    ) -> None:
        self.mode = mode
        self.autovacuum_on = autovacuum_on
        self.schema = schema
        self.every_sec = every_sec
        self.recheck_sec = recheck_sec
        self.monotonic = monotonic
        self._last = float("-inf")
        self._checked = float("-inf")
        self._active: bool | None = None  # None: not asked yet

    async def active(self, conn: asyncpg.Connection) -> bool:
        """Whether this process vacuums: by the setting, and in `auto` by the server's autovacuum (read again
        every `recheck_sec`; a change is logged)."""
        if self.mode != "auto":
            return self.mode == "always"
        now = self.monotonic()
        if now - self._checked >= self.recheck_sec:
            self._checked = now
            active = not await self.autovacuum_on(conn)
            if active != self._active:
                if active:
                    log.warning(
                        "postgres.autovacuum_off",
                        detail="the server's autovacuum is off: the watchdog vacuums the scheduler tables itself",
                    )
                elif self._active is not None:
                    log.info("postgres.autovacuum_on", detail="the server vacuums again: the watchdog stops")
            self._active = active
        return bool(self._active)

    def due(self) -> bool:
        now = self.monotonic()
        if now - self._last < self.every_sec:
            return False
        self._last = now
        return True

    async def run(self, conn: asyncpg.Connection) -> None:
        """One sweep: when active and due, vacuum (and analyze) the tables past the trigger."""
        if self.mode == "off" or not self.due() or not await self.active(conn):
            return
        rule = await store.rule(conn)
        for table in await store.tables(conn, self.schema):
            vacuum, analyze = rule.needs_vacuum(table), rule.needs_analyze(table)
            if not vacuum and not analyze:
                continue
            started = time.monotonic()
            if vacuum:
                await store.vacuum(conn, table.name, analyze=analyze)
            else:
                await store.analyze(conn, table.name)
            log.info(
                "watchdog.vacuumed" if vacuum else "watchdog.analyzed",
                table=table.name,
                dead=table.dead,
                live=table.live,
                analyzed=analyze,
                ms=round((time.monotonic() - started) * 1000, 1),
            )
