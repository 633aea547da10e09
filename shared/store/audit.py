"""Repository functions for `scheduler.audit`: one row per operator change."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

NOTE_LIMIT = 1000


async def record(
    conn: asyncpg.Connection,
    scope: str,
    actor: str,
    action: str,
    job_id: str | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    note: str | None,
) -> datetime:
    """Append one change; returns when it was recorded."""
    at: datetime = await conn.fetchval(
        "INSERT INTO scheduler.audit (scope, actor, action, job_id, before, after, note)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING at",
        scope,
        actor[:200],
        action,
        job_id,
        before,
        after,
        None if note is None else note[:NOTE_LIMIT],
    )
    return at


async def record_many(
    conn: asyncpg.Connection,
    scope: str,
    actor: str,
    changes: Sequence[tuple[str, str | None, dict[str, Any] | None, dict[str, Any] | None, str | None]],
) -> None:
    """`record` for each (action, job_id, before, after, note), in one round trip (a seeded file's jobs)."""
    if changes:
        await conn.executemany(
            "INSERT INTO scheduler.audit (scope, actor, action, job_id, before, after, note)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                (scope, actor[:200], action, job_id, before, after, None if note is None else note[:NOTE_LIMIT])
                for action, job_id, before, after, note in changes
            ],
        )


async def recent(
    conn: asyncpg.Connection | asyncpg.Pool, scope: str, limit: int, job_id: str | None = None
) -> list[asyncpg.Record]:
    """The latest changes of the scope (or of one job), newest first."""
    records: list[asyncpg.Record] = await conn.fetch(
        "SELECT id, at, actor, action, job_id, before, after, note FROM scheduler.audit"
        " WHERE scope = $1 AND ($2::text IS NULL OR job_id = $2) ORDER BY at DESC, id DESC LIMIT $3",
        scope,
        job_id,
        limit,
    )
    return records
