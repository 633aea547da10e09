"""A private scope per scenario (`b<hex>`): seeding its jobs, reading its runs, and removing everything after."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
import asyncpg

from shared import topology
from shared.control.jobs import seed_job
from shared.definitions import load_definition
from shared.publisher import Publisher
from shared.settings import Settings
from shared.store import jobs as jobs_store
from shared.store import vacuum as vacuum_store
from shared.store.pool import create_pool


def new_scope() -> str:
    return "b" + secrets.token_hex(4)


def interval_jobs(count: int, *, queue: str = "bench", align: bool = False, prefix: str = "j") -> list[dict[str, Any]]:
    """`count` one-second interval jobs on one work queue; `align` puts them all on phase 0 (a herd)."""
    return [{"job_id": f"{prefix}{i:04d}", "queue": queue, "interval_seconds": 1, "align": align} for i in range(count)]


async def seed(settings: Settings, scope: str, definitions: Sequence[dict[str, Any]], parallel: int = 8) -> float:
    """Seed every definition through the library (upsert, declare, first message); returns the seconds taken."""
    parsed = [load_definition(d, source="bench") for d in definitions]
    pool = await create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=parallel)
    connection = await aio_pika.connect_robust(settings.amqp_url.get_secret_value())
    todo: asyncio.Queue[Any] = asyncio.Queue()
    for definition in parsed:
        todo.put_nowait(definition)

    async def seeder() -> None:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        publisher = Publisher(channel, scope)
        async with pool.acquire() as conn:
            while not todo.empty():
                definition = todo.get_nowait()
                await seed_job(conn, channel, publisher, scope, definition, datetime.now(UTC))
        await channel.close()

    started = time.monotonic()
    try:
        await asyncio.gather(*(seeder() for _ in range(parallel)))
    finally:
        await connection.close()
        await pool.close()
    return time.monotonic() - started


async def fetch(settings: Settings, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def vacuum(settings: Settings) -> bool:
    """VACUUM ANALYZE the scheduler tables, so a scenario does not inherit an earlier one's garbage (its deleted
    scope, its runs' old row versions): on a server with autovacuum off that garbage slows every statement and the
    scenarios of one bench, run in turn, would drift. Returns whether the server's autovacuum is on."""
    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        await vacuum_store.vacuum_all(conn)
        return await vacuum_store.autovacuum_on(conn)
    finally:
        await conn.close()


async def status_counts(settings: Settings, scope: str, start: float, end: float) -> dict[str, int]:
    """Runs of the scope whose slot lies in [start, end), by status (first attempts)."""
    rows = await fetch(
        settings,
        "SELECT status, count(*) AS n FROM scheduler.job_runs WHERE scope = $1 AND attempt = 1"
        " AND scheduled_for >= to_timestamp($2) AND scheduled_for < to_timestamp($3) GROUP BY status",
        scope,
        start,
        end,
    )
    return {r["status"]: r["n"] for r in rows}


async def cleanup(
    settings: Settings,
    scope: str,
    job_ids: Iterable[str] = (),
    queues: Iterable[str] = (),
    extra_queues: Iterable[str] = (),
    extra_exchanges: Iterable[str] = (),
) -> None:
    """Delete the scope's rows and queues (its jobs' and the ones named), and the named exchanges."""
    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        rows = await conn.fetch("SELECT job_id, queue FROM scheduler.jobs WHERE scope = $1", scope)
        job_ids = {*job_ids, *(r["job_id"] for r in rows)}
        queues = {*queues, *(r["queue"] for r in rows)}
        connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
        try:
            channel = await connection.channel()
            await topology.delete_scope(channel, scope, sorted(job_ids), sorted(queues))
            for name in extra_queues:
                channel = await _quietly(connection, channel, channel.queue_delete, name)
            for name in extra_exchanges:
                channel = await _quietly(connection, channel, channel.exchange_delete, name)
        finally:
            await connection.close()
        await jobs_store.delete_scope(conn, scope)
    finally:
        await conn.close()


async def _quietly(connection: Any, channel: Any, action: Any, name: str) -> Any:
    try:
        await action(name)
        return channel
    except aiormq.exceptions.AMQPError:
        return await connection.channel()
