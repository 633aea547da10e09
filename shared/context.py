"""What a handler gets besides its params: who it is, a bound logger, idempotency and a subprocess helper."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from shared.events.envelope import EventInfo
from shared.procs import ProcessResult, run_process
from shared.store import idempotency


@dataclass(frozen=True, slots=True)
class Idempotency:
    """`await ctx.idempotency.claim(key, ttl_sec)` is True once per key (per scope) until the key expires."""

    pool: asyncpg.Pool
    scope: str
    run_id: uuid.UUID

    async def claim(self, key: str, ttl_sec: float = 86400.0) -> bool:
        if not key or len(key) > 500:
            raise ValueError("an idempotency key is 1-500 characters")
        return await idempotency.claim(self.pool, self.scope, key, ttl_sec, self.run_id)


@dataclass(frozen=True, slots=True)
class RunContext:
    run_id: uuid.UUID
    job_id: str
    scope: str
    trigger_source: str
    scheduled_for: datetime
    attempt: int
    max_attempts: int
    timeout_sec: float
    log: structlog.stdlib.BoundLogger
    idempotency: Idempotency
    upstream_run_id: uuid.UUID | None = None
    extra: dict[str, object] = field(default_factory=dict)
    event: EventInfo | None = None  # the event that triggered the run: topic, payload, id, published_at
    emitter: Callable[[str, dict[str, Any], str | None], Awaitable[str]] | None = None

    async def emit(self, topic: str, payload: dict[str, Any] | None = None, event_id: str | None = None) -> str:
        """Publish an event on `topic` to the scope's `S.events` (confirmed); returns its id (its message_id,
        generated unless given: give one to make a retried run's event the same event)."""
        if self.emitter is None:
            raise RuntimeError("this context publishes no events (no worker behind it)")
        return await self.emitter(topic, payload or {}, event_id)

    async def run_subprocess(
        self,
        argv: Sequence[str],
        *,
        timeout_sec: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        check: bool = True,
    ) -> ProcessResult:
        """Run a script; on timeout (default: the job's timeout) or cancellation its whole process group dies."""
        self.log.info("subprocess.started", argv=list(argv))
        result = await run_process(argv, timeout_sec=timeout_sec or self.timeout_sec, env=env, cwd=cwd, check=check)
        self.log.info("subprocess.finished", argv=list(argv), returncode=result.returncode)
        return result
