"""Live workers: a row per process and a session advisory lock held for the process's lifetime."""

from __future__ import annotations

import asyncpg

from shared.locks import worker_lock_key


async def register(
    conn: asyncpg.Connection, *, worker_id: str, scope: str, service: str, hostname: str, pid: int, queues: list[str]
) -> None:
    """Take the liveness lock on `conn` (which must stay open) and upsert the worker row."""
    key = worker_lock_key(worker_id)
    await conn.execute("SELECT pg_advisory_lock($1)", key)
    await conn.execute(
        "INSERT INTO scheduler.workers (worker_id, scope, service, hostname, pid, queues, lock_key)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL, queues = EXCLUDED.queues",
        worker_id,
        scope,
        service,
        hostname,
        pid,
        queues,
        key,
    )


async def heartbeat(conn: asyncpg.Connection, worker_id: str) -> None:
    await conn.execute("UPDATE scheduler.workers SET heartbeat_at = now() WHERE worker_id = $1", worker_id)


async def stopped(conn: asyncpg.Connection, worker_id: str) -> None:
    await conn.execute("UPDATE scheduler.workers SET stopped_at = now() WHERE worker_id = $1", worker_id)
    await conn.execute("SELECT pg_advisory_unlock($1)", worker_lock_key(worker_id))


async def live_queues(conn: asyncpg.Connection | asyncpg.Pool, scope: str) -> set[str]:
    """Work queue short names that at least one live worker of the scope consumes."""
    records = await conn.fetch(
        "SELECT DISTINCT unnest(queues) AS q FROM scheduler.workers"
        " WHERE scope = $1 AND scheduler.advisory_lock_held(lock_key)",
        scope,
    )
    return {r["q"] for r in records}


async def earlier_alive_on(conn: asyncpg.Connection, scope: str, queue: str, worker_id: str) -> bool:
    """True when another live worker on `queue` registered before this one (ties broken by id).

    Replicas that boot together agree on exactly one first worker, and a replica restarted beside a running one
    is never first: that is "once per boot of the service, not once per replica".
    """
    found = await conn.fetchval(
        "SELECT true FROM scheduler.workers o, scheduler.workers me"
        " WHERE me.worker_id = $3 AND o.scope = $1 AND $2 = ANY(o.queues) AND o.worker_id <> me.worker_id"
        " AND (o.started_at, o.worker_id) < (me.started_at, me.worker_id)"
        " AND scheduler.advisory_lock_held(o.lock_key) LIMIT 1",
        scope,
        queue,
        worker_id,
    )
    return bool(found)


async def forget_dead(conn: asyncpg.Connection, scope: str, older_than_sec: float) -> int:
    status = await conn.execute(
        "DELETE FROM scheduler.workers WHERE scope = $1 AND heartbeat_at < now() - make_interval(secs => $2)"
        " AND NOT scheduler.advisory_lock_held(lock_key)",
        scope,
        older_than_sec,
    )
    return int(status.split()[-1])
