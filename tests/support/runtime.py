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

from shared import control
from shared.control.results import Deleted, JobChange
from shared.metrics import Metrics
from shared.settings import Settings
from shared.store import history
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
    """The control layer (`shared.control`) over the test's pool and robust connection: each action borrows a
    pooled connection and a fresh confirming channel. `runs` and `job` read rows back for assertions."""

    def __init__(self, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, scope: str) -> None:
        self.pool = pool
        self.amqp = amqp
        self.scope = scope

    @contextlib.asynccontextmanager
    async def control(self) -> AsyncIterator[control.Control]:
        """A `shared.control.Control` for one action (or a few in a row)."""
        channel = await self.amqp.channel(publisher_confirms=True, on_return_raises=True)
        try:
            async with self.pool.acquire() as conn:
                yield control.Control.borrowing(conn, channel, self.scope, amqp=self.amqp)
        finally:
            await channel.close()

    async def seed(self, **definition: Any) -> JobChange:
        async with self.control() as c:
            return await c.put(definition)

    async def pause(self, job_id: str, note: str | None = None) -> JobChange:
        async with self.control() as c:
            return await c.pause(job_id, note)

    async def resume(self, job_id: str) -> JobChange:
        async with self.control() as c:
            return await c.resume(job_id)

    async def change(self, job_id: str, **changes: Any) -> JobChange:
        async with self.control() as c:
            return await c.set(job_id, changes)

    async def delete(self, job_id: str) -> Deleted:
        async with self.control() as c:
            return await c.delete(job_id)

    async def runs(self, job_id: str | None = None) -> list[asyncpg.Record]:
        """Every run of the scope (or of one job), oldest slot first."""
        return await history.all_runs(self.pool, self.scope, job_id)

    async def job(self, job_id: str) -> asyncpg.Record:
        return await self.pool.fetchrow(
            "SELECT * FROM scheduler.jobs WHERE scope = $1 AND job_id = $2", self.scope, job_id
        )


async def until(predicate: Callable[[], bool], timeout: float = 90) -> None:
    """`wait_until` for a plain (not awaitable) predicate, polled every 0.2 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.2)


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


def spawn_worker(
    scope: str, queues: list[str], settings: Settings, module: str = "tests.support.probe_worker", **env: str
) -> subprocess.Popen[bytes]:
    """A real worker process (the probe service, or `module`) in `scope`; its output goes to a log file under /tmp."""
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
        proc = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=full_env, stdout=log, stderr=log)
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
