"""Leadership: one active watchdog per scope. The scope's advisory lock is held on a dedicated connection; the
process holding it runs the sweeps, every other worker of the scope keeps trying. PostgreSQL releases the lock
with the session, so a watchdog that dies or loses its connection hands over at once.
"""

from __future__ import annotations

import contextlib

import asyncpg
import structlog

from shared import backoff
from shared.dependencies import CONNECT_ERRORS
from shared.locks import watchdog_lock_key
from shared.store.pool import connect as pg_connect

log = structlog.get_logger("shared.watchdog")


class Leadership:
    """The scope's watchdog lock on a connection of its own (named after the worker, so it counts as a sign of
    life of the worker too)."""

    def __init__(self, dsn: str, scope: str, worker_id: str, *, cap_sec: float = 30.0) -> None:
        self.dsn = dsn
        self.scope = scope
        self.worker_id = worker_id
        self.cap_sec = cap_sec
        self.active = False
        self._conn: asyncpg.Connection | None = None

    async def lead(self) -> asyncpg.Connection | None:
        """The dedicated connection when this process is the scope's active watchdog, else None. Opens the
        connection when there is none (with back-off while PostgreSQL is down) and tries the lock when not active."""
        return await backoff.forever(
            "watchdog",
            self._try_lead,
            cap_sec=self.cap_sec,
            errors=CONNECT_ERRORS,
            event="dependency.waiting",
            dependency="postgres",
        )

    async def _try_lead(self) -> asyncpg.Connection | None:
        try:
            if self._conn is None or self._conn.is_closed():
                self.active = False
                self._conn = await pg_connect(self.dsn, self.worker_id)
            if not self.active:
                locked = await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", watchdog_lock_key(self.scope))
                self.active = bool(locked)
                if self.active:
                    log.info("watchdog.active", scope=self.scope)
        except BaseException:
            await self.resign()
            raise
        return self._conn if self.active else None

    async def resign(self) -> None:
        """Close the connection: the lock goes with the session, and another worker's watchdog may take over."""
        if self.active:
            log.info("watchdog.resigned", scope=self.scope)
        self.active = False
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
