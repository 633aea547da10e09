"""Idempotency keys: a side effect (an order) happens once per key until the key expires."""

from __future__ import annotations

import uuid

import asyncpg


async def claim(
    conn: asyncpg.Connection | asyncpg.Pool, scope: str, key: str, ttl_sec: float, run_id: uuid.UUID | None
) -> bool:
    """True exactly once per (scope, key) until it expires; an expired key can be claimed again."""
    claimed = await conn.fetchval(
        "INSERT INTO scheduler.idempotency_keys (scope, key, run_id, expires_at)"
        " VALUES ($1, $2, $3, now() + make_interval(secs => $4))"
        " ON CONFLICT (scope, key) DO UPDATE SET run_id = EXCLUDED.run_id, created_at = now(),"
        "   expires_at = EXCLUDED.expires_at"
        "   WHERE scheduler.idempotency_keys.expires_at <= now()"
        " RETURNING true",
        scope,
        key,
        run_id,
        ttl_sec,
    )
    return bool(claimed)


async def prune(conn: asyncpg.Connection | asyncpg.Pool, scope: str) -> int:
    status = await conn.execute(
        "DELETE FROM scheduler.idempotency_keys WHERE scope = $1 AND expires_at <= now()", scope
    )
    return int(status.split()[-1])
