"""Retries owed by failed and abandoned attempts (`scheduler.owed_retries`, migration 0011): recorded before the
retry message is published, read back by the watchdog's lost-retry sweep (shared.watchdog.retries)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class OwedRetry:
    """An attempt whose retry was due a while ago: the message published for it, and whether the next attempt's
    row is there (same slot, attempt + 1: of the chain for a slot of one, else under the retry's run id)."""

    run_id: uuid.UUID
    scheduled_for: datetime
    job_id: str
    message: dict[str, Any]
    arrived: bool
    reposts: int


async def owe(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    run_id: uuid.UUID,
    slot: datetime,
    scope: str,
    job_id: str,
    attempt: int,
    epoch: int | None,
    message: str,
    due_at: datetime,
) -> None:
    """Record the retry of attempt `run_id` (`slot`: its row's scheduled_for): the message body and when it
    should arrive. Recorded again (a second failure of a redelivered attempt): the latest message counts."""
    await conn.execute(
        "INSERT INTO scheduler.owed_retries (run_id, scheduled_for, scope, job_id, attempt, epoch, message, due_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8)"
        " ON CONFLICT (run_id, scheduled_for) DO UPDATE SET message = EXCLUDED.message, due_at = EXCLUDED.due_at",
        run_id,
        slot,
        scope,
        job_id,
        attempt,
        epoch,
        message,
        due_at,
    )


_OVERDUE = """
    SELECT o.run_id, o.scheduled_for, o.job_id, o.message, o.reposts,
           EXISTS (SELECT 1 FROM scheduler.job_runs n
                   WHERE n.scope = o.scope AND n.job_id = o.job_id AND n.scheduled_for = o.scheduled_for
                     AND n.attempt = o.attempt + 1
                     AND (n.run_id = (o.message->>'run_id')::uuid OR (o.epoch IS NOT NULL AND n.epoch IS NOT NULL))
           ) AS arrived
    FROM scheduler.owed_retries o
    WHERE o.scope = $1 AND o.due_at < now() - make_interval(secs => $2)
    ORDER BY o.due_at
    LIMIT $3
"""


async def overdue(conn: asyncpg.Connection, scope: str, late_sec: float, limit: int = 500) -> list[OwedRetry]:
    """Owed retries of the scope due more than `late_sec` ago, oldest first."""
    rows = await conn.fetch(_OVERDUE, scope, late_sec, limit)
    return [
        OwedRetry(r["run_id"], r["scheduled_for"], r["job_id"], r["message"], r["arrived"], r["reposts"]) for r in rows
    ]


async def settle(conn: asyncpg.Connection, owed: OwedRetry) -> None:
    """Nothing is owed any more: the next attempt arrived, or the retry is moot."""
    await conn.execute(
        "DELETE FROM scheduler.owed_retries WHERE run_id = $1 AND scheduled_for = $2", owed.run_id, owed.scheduled_for
    )


async def reposted(conn: asyncpg.Connection, owed: OwedRetry, due_at: datetime) -> None:
    """The retry was published again: it is owed until `due_at` again, one more repost counted."""
    await conn.execute(
        "UPDATE scheduler.owed_retries SET due_at = $3, reposts = reposts + 1 WHERE run_id = $1 AND scheduled_for = $2",
        owed.run_id,
        owed.scheduled_for,
        due_at,
    )


async def owed_in(conn: asyncpg.Connection | asyncpg.Pool, scope: str) -> list[asyncpg.Record]:
    """Every owed retry of the scope (for tests and the operator's questions): job_id, attempt, due_at, reposts."""
    records: list[asyncpg.Record] = await conn.fetch(
        "SELECT job_id, attempt, due_at, reposts FROM scheduler.owed_retries WHERE scope = $1 ORDER BY due_at", scope
    )
    return records
