"""The worker's liveness: a dedicated PostgreSQL connection holding the worker's advisory lock, and a heartbeat.

Other processes read "is worker W alive" as "is W's lock held" (`scheduler.advisory_lock_held`): PostgreSQL
drops the lock the moment the process dies, so a `kill -9` is seen at once, without waiting for a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog

from shared import connect
from shared.dependencies import classify, describe
from shared.store import workers
from shared.store.pool import connect as pg_connect

log = structlog.get_logger("shared.liveness")


class Liveness:
    def __init__(
        self, dsn: str, *, worker_id: str, scope: str, service: str, hostname: str, pid: int, queues: list[str],
        period_sec: float, cap_sec: float,
    ) -> None:  # fmt: skip
        self.dsn = dsn
        self.worker_id = worker_id
        self.info = {"scope": scope, "service": service, "hostname": hostname, "pid": pid, "queues": queues}
        self.period_sec = period_sec
        self.cap_sec = cap_sec
        self.registered = asyncio.Event()
        self._conn: asyncpg.Connection | None = None

    async def _register(self) -> asyncpg.Connection:
        conn = await pg_connect(self.dsn, self.worker_id)
        try:
            await workers.register(conn, worker_id=self.worker_id, **self.info)  # type: ignore[arg-type]
        except BaseException:
            await conn.close()
            raise
        return conn

    async def run(self) -> None:
        """Register, then heartbeat forever; a lost connection is reopened and the lock taken again."""
        while True:
            conn = await connect.wait_for("postgres", "liveness", self._register, self.cap_sec)
            self._conn = conn
            self.registered.set()
            log.info("worker.registered", worker=self.worker_id)
            try:
                while True:
                    await asyncio.sleep(self.period_sec)
                    await workers.heartbeat(conn, self.worker_id)
            except Exception as exc:  # reconnect and take the lock again, whatever went wrong
                log.warning("worker.liveness_lost", error=describe(exc), dependency=classify(exc))
                with contextlib.suppress(Exception):
                    await conn.close()

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(Exception):
                await workers.stopped(self._conn, self.worker_id)
            with contextlib.suppress(Exception):
                await self._conn.close()
