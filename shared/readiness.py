"""Readiness of a worker (DESIGN section 14): can it do its work right now?

Ready means all four hold at the moment of the question: the RabbitMQ connection is open, PostgreSQL answers,
the schema is at the head migration this code ships, and every work queue of the worker has a consumer on an
open channel. The HTTP endpoint (`shared.metrics_http`) asks from its own thread; the checks run on the
worker's event loop, where the connections live, under a short timeout, so a hung loop reads as not ready too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from shared.dependencies import describe
from shared.store.migrate import available_migrations

CHECK_TIMEOUT_SEC = 3.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to "ready?": each check's state ("ok" or why not) and the first reason it is not ready."""

    ready: bool
    checks: dict[str, str] = field(default_factory=dict)
    reason: str | None = None

    def plain(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ready" if self.ready else "not ready", "checks": self.checks}
        if self.reason is not None:
            body["reason"] = self.reason
        return body


@dataclass(frozen=True, slots=True)
class Probe:
    """What readiness looks at, handed over by the worker once it consumes: its pool, its connection, the
    channel its consumers live on, and which of its queues have a consumer now."""

    pool: Any  # asyncpg.Pool
    amqp: AbstractRobustConnection
    channel: AbstractChannel
    queues: list[str]
    consumed: Callable[[], set[str]]
    stopping: Callable[[], bool] = lambda: False


def head_version() -> int:
    """The newest migration this code ships (0 when none)."""
    return max((m.version for m in available_migrations()), default=0)


class Readiness:
    """Readiness state of one worker. `attach` when the worker is up, `detach` when it is not; `verdict()` may
    be called from any thread."""

    def __init__(self, timeout_sec: float = CHECK_TIMEOUT_SEC) -> None:
        self.timeout_sec = timeout_sec
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._probe: Probe | None = None
        self._head = head_version()

    def attach(self, probe: Probe) -> None:
        """Called on the worker's loop once it consumes every queue."""
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._probe = probe

    def detach(self) -> None:
        """The worker is (re)starting or stopped: not ready until the next `attach`."""
        with self._lock:
            self._probe = None

    def verdict(self) -> Verdict:
        """Run the checks on the worker's loop and wait for them (at most the timeout plus a second)."""
        with self._lock:
            loop, probe = self._loop, self._probe
        if probe is None or loop is None or loop.is_closed():
            return Verdict(False, {"worker": "starting"}, "worker: starting (connecting, migrating, declaring)")
        try:
            future = asyncio.run_coroutine_threadsafe(self.check(probe), loop)
        except RuntimeError:  # the loop stopped between the read above and now
            return Verdict(False, {"worker": "stopped"}, "worker: stopped")
        try:
            return future.result(self.timeout_sec + 1.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return Verdict(False, {"worker": "event loop unresponsive"}, "worker: event loop did not answer in time")

    async def check(self, probe: Probe) -> Verdict:
        """The four checks, on the worker's loop."""
        checks = {
            "rabbitmq": self._rabbitmq(probe),
            "queues": self._queues(probe),
        }
        checks.update(await self._postgres(probe))
        if probe.stopping():
            checks["worker"] = "stopping"
        problems = [f"{name}: {state}" for name, state in checks.items() if state != "ok"]
        return Verdict(not problems, checks, problems[0] if problems else None)

    @staticmethod
    def _rabbitmq(probe: Probe) -> str:
        if probe.amqp.is_closed:
            return "connection closed"
        if not probe.amqp.connected.is_set():
            return "connection lost, reconnecting"
        return "ok"

    @staticmethod
    def _queues(probe: Probe) -> str:
        if probe.channel.is_closed:
            return "consumer channel closed"
        missing = sorted(set(probe.queues) - probe.consumed())
        return f"not consumed: {', '.join(missing)}" if missing else "ok"

    async def _postgres(self, probe: Probe) -> dict[str, str]:
        try:
            async with asyncio.timeout(self.timeout_sec):
                async with probe.pool.acquire() as conn:
                    version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM scheduler.schema_migrations")
        except TimeoutError:
            return {"postgres": f"no answer within {self.timeout_sec:g} s", "migrations": "unknown"}
        except Exception as exc:  # any failure to answer is "not ready", with the reason; never a crash
            return {"postgres": f"does not answer ({describe(exc, 200)})", "migrations": "unknown"}
        if version < self._head:
            return {"postgres": "ok", "migrations": f"at {version}, this code needs {self._head}"}
        return {"postgres": "ok", "migrations": "ok"}
