"""Retries owed by failed and abandoned attempts (migration 0011): recorded on the attempt's row before the retry
message is published, read back by the watchdog's lost-retry sweep (shared.watchdog.retries)."""

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
    conn: asyncpg.Connection | asyncpg.Pool, run_id: uuid.UUID, slot: datetime, message: str, due_at: datetime
) -> None:
    """Record the retry of attempt `run_id` (its row's slot `slot`, the partition key): the message body and when
    it should arrive."""
    await conn.execute(
        "UPDATE scheduler.job_runs SET retry_message = $3::text::jsonb, retry_due_at = $4"
        " WHERE run_id = $1 AND scheduled_for = $2",
        run_id,
        slot,
        message,
        due_at,
    )


_OVERDUE = """
    SELECT r.run_id, r.scheduled_for, r.job_id, r.retry_message, r.retry_reposts,
           EXISTS (SELECT 1 FROM scheduler.job_runs n
                   WHERE n.scope = r.scope AND n.job_id = r.job_id AND n.scheduled_for = r.scheduled_for
                     AND n.attempt = r.attempt + 1
                     AND (n.run_id = (r.retry_message->>'run_id')::uuid
                          OR (r.epoch IS NOT NULL AND n.epoch IS NOT NULL))
           ) AS arrived
    FROM scheduler.job_runs r
    WHERE r.scope = $1 AND r.retry_due_at IS NOT NULL AND r.retry_due_at < now() - make_interval(secs => $2)
    ORDER BY r.retry_due_at
    LIMIT $3
"""


async def overdue(conn: asyncpg.Connection, scope: str, late_sec: float, limit: int = 500) -> list[OwedRetry]:
    """Owed retries of the scope due more than `late_sec` ago, oldest first."""
    rows = await conn.fetch(_OVERDUE, scope, late_sec, limit)
    return [
        OwedRetry(r["run_id"], r["scheduled_for"], r["job_id"], r["retry_message"], r["arrived"], r["retry_reposts"])
        for r in rows
    ]


async def settle(conn: asyncpg.Connection, owed: OwedRetry) -> None:
    """Nothing is owed any more: the next attempt arrived, or the retry is moot."""
    await conn.execute(
        "UPDATE scheduler.job_runs SET retry_due_at = NULL, retry_message = NULL"
        " WHERE run_id = $1 AND scheduled_for = $2",
        owed.run_id,
        owed.scheduled_for,
    )


async def reposted(conn: asyncpg.Connection, owed: OwedRetry, due_at: datetime) -> None:
    """The retry was published again: it is owed until `due_at` again, one more repost counted."""
    await conn.execute(
        "UPDATE scheduler.job_runs SET retry_due_at = $3, retry_reposts = retry_reposts + 1"
        " WHERE run_id = $1 AND scheduled_for = $2",
        owed.run_id,
        owed.scheduled_for,
        due_at,
    )
