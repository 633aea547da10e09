"""Sweep: buffers. overlap=buffer_one parks a slot in the retry queue while the lock is busy; if that message was
lost (dead-lettering is at-most-once on classic queues) the slot would stay buffered for ever and block the next
buffered slot. Such slots are closed as skipped_locked once they are well past the job's misfire grace."""

from __future__ import annotations

import asyncpg
import structlog

from shared.store import sweeps

log = structlog.get_logger("shared.watchdog")

STALE_AFTER_GRACE_SEC = 30.0
"""How long past its job's misfire grace a buffered slot may wait before its message counts as lost."""


class StaleBuffers:
    """Closes buffered slots whose retry message never came back."""

    name = "buffers"

    def __init__(self, scope: str, *, stale_after_grace_sec: float = STALE_AFTER_GRACE_SEC) -> None:
        self.scope = scope
        self.stale_after_grace_sec = stale_after_grace_sec

    async def run(self, conn: asyncpg.Connection) -> None:
        """One sweep."""
        closed = await sweeps.expire_stale_buffers(conn, self.scope, self.stale_after_grace_sec)
        if closed:
            log.warning("watchdog.buffers_closed", scope=self.scope, count=closed)
