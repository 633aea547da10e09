"""Sweep: pruning. Now and then (hourly; first on becoming active) the scope's history is cut to the retention:
finished runs, expired idempotency keys, rows of long-dead workers (`shared.store.sweeps.prune_history`, the
same rule the maintenance service applies)."""

from __future__ import annotations

import time
from collections.abc import Callable

import asyncpg
import structlog

from shared.store import sweeps

log = structlog.get_logger("shared.watchdog")

PRUNE_EVERY_SEC = 3600.0


class Pruning:
    """Prunes at most once per `every_sec` (the sweep runs every pass; pruning is not worth doing that often)."""

    name = "pruning"

    def __init__(
        self,
        scope: str,
        retention_days: float,
        *,
        every_sec: float = PRUNE_EVERY_SEC,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scope = scope
        self.retention_days = retention_days
        self.every_sec = every_sec
        self.monotonic = monotonic
        self._last = float("-inf")  # prune on the first active pass

    def due(self) -> bool:
        """Whether a pruning is due now; taking it counts, so a failing pruning is not retried every pass."""
        now = self.monotonic()
        if now - self._last <= self.every_sec:
            return False
        self._last = now
        return True

    async def run(self, conn: asyncpg.Connection) -> None:
        """One sweep: prune when due."""
        if not self.due():
            return
        pruned = await sweeps.prune_history(conn, self.scope, self.retention_days)
        log.info("watchdog.pruned", runs=pruned.runs, idempotency_keys=pruned.idempotency_keys, workers=pruned.workers)
