"""Helpers for runtime tests: seed jobs, run workers in-process or as real processes, read runs back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
from prometheus_client import CollectorRegistry

from shared import seeding
from shared.definitions import load_definition
from shared.metrics import Metrics
from shared.publisher import Publisher
from shared.seeding import SeedResult
from shared.settings import Settings
from shared.worker import Worker

ROOT = Path(__file__).resolve().parents[2]

FAST = {
    "heartbeat_sec": "0.5",
    "watchdog_interval_sec": "0.5",
    "chain_lost_after_sec": "4",
    "shutdown_grace_sec": "3",
    "dependency_retry_max_sec": "2",
    "log_level": "INFO",
}


def fast_settings(settings: Settings, scope: str, **overrides: Any) -> Settings:
    data = {**FAST, **overrides}
    return Settings(
        amqp_url=settings.amqp_url,
        database_url=settings.database_url,
        scheduler_scope=scope,
        **data,
    )


def now() -> datetime:
    return datetime.now(UTC)


class Control:
    """Seed/pause/resume/set through the library, with the connections they need."""

    def __init__(self, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, scope: str) -> None:
        self.pool = pool
        self.amqp = amqp
        self.scope = scope

    async def _call(self, fn: Callable[..., Awaitable[SeedResult]], *args: Any, **kw: Any) -> SeedResult:
        channel = await self.amqp.channel(publisher_confirms=True, on_return_raises=True)
        try:
            async with self.pool.acquire() as conn:
                return await fn(conn, channel, Publisher(channel, self.scope), self.scope, *args, now(), **kw)
        finally:
            await channel.close()

    async def seed(self, **definition: Any) -> SeedResult:
        return await self._call(seeding.seed_job, load_definition(definition))

    async def pause(self, job_id: str) -> SeedResult:
        return await self._call(seeding.pause_job, job_id)

    async def resume(self, job_id: str) -> SeedResult:
        return await self._call(seeding.resume_job, job_id)

    async def change(self, job_id: str, **changes: Any) -> SeedResult:
        return await self._call(seeding.change_job, job_id, changes)

    async def runs(self, job_id: str | None = None) -> list[asyncpg.Record]:
        query = "SELECT * FROM scheduler.job_runs WHERE scope = $1"
        args: list[Any] = [self.scope]
        if job_id is not None:
            query += " AND job_id = $2"
            args.append(job_id)
        return await self.pool.fetch(query + " ORDER BY scheduled_for, attempt", *args)

    async def job(self, job_id: str) -> asyncpg.Record:
        return await self.pool.fetchrow(
            "SELECT * FROM scheduler.jobs WHERE scope = $1 AND job_id = $2", self.scope, job_id
        )


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, handlers: dict[str, tuple[Callable[..., Any], Any]], service: str = "test"
) -> AsyncIterator[Worker]:
    """A Worker serving `handlers` ({queue: (fn, params_model)}) in this process until the block ends."""
    worker = Worker(service, settings, Metrics(CollectorRegistry()))
    for queue, (fn, model) in handlers.items():
        worker.register(queue, fn, model)
    task = asyncio.create_task(worker.serve())
    ready = asyncio.create_task(worker.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready in done, "worker did not become ready"
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


def spawn_worker(scope: str, queues: list[str], settings: Settings, **env: str) -> subprocess.Popen[bytes]:
    """A real worker process (the probe service) in `scope`; its output goes to a log file under /tmp."""
    full_env = {
        **os.environ,
        **{k.upper(): v for k, v in FAST.items()},
        "AMQP_URL": settings.amqp_url.get_secret_value(),
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "SCHEDULER_SCOPE": scope,
        "PROBE_QUEUES": ",".join(queues),
        **env,
    }
    log_path = Path(f"/tmp/{scope}-worker-{time.monotonic_ns()}.log")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.probe_worker"], cwd=ROOT, env=full_env, stdout=log, stderr=log
        )
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def slots_run_more_than_once(rows: list[asyncpg.Record]) -> list[tuple[str, datetime]]:
    """(job_id, slot) pairs of chain runs (attempt 1) that were recorded more than once."""
    seen: dict[tuple[str, datetime], int] = {}
    for r in rows:
        if r["epoch"] is not None and r["attempt"] == 1:
            key = (r["job_id"], r["scheduled_for"])
            seen[key] = seen.get(key, 0) + 1
    return [k for k, n in seen.items() if n > 1]


def overlaps(rows: list[asyncpg.Record]) -> list[tuple[Any, Any]]:
    """Pairs of executed runs whose [started_at, finished_at] intervals intersect."""
    spans = sorted(
        (r["started_at"], r["finished_at"] or now(), r["run_id"]) for r in rows if r["started_at"] is not None
    )
    bad = []
    for (_s1, e1, a), (s2, _e2, b) in pairwise(spans):
        if s2 < e1:
            bad.append((a, b))
    return bad
