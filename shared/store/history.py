"""Reads of `scheduler.job_runs` for operators: a job's latest runs, which runs are going on now, one run
attempt by id or by slot, which slots of a range already have a run. No writes here.

Statuses are parameters from `shared.vocabulary`, never spelled in a statement.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from shared.store.runs import ACTIVE_ROWS
from shared.vocabulary import ACTIVE, OWNED, RunStatus, sources

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool
_ATTEMPT = "run_id, status, attempt, duration_ms, error, worker"


async def recent(conn: Conn, scope: str, job_id: str, limit: int) -> list[asyncpg.Record]:
    """The job's latest runs, newest slot (then attempt) first."""
    records: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM scheduler.job_runs WHERE scope = $1 AND job_id = $2 ORDER BY scheduled_for DESC, attempt DESC"
        " LIMIT $3",
        scope,
        job_id,
        limit,
    )
    return records


async def all_runs(conn: Conn, scope: str, job_id: str | None = None) -> list[asyncpg.Record]:
    """Every run of the scope (or of one job), oldest slot first: for tests and exports, not for big scopes."""
    query = "SELECT * FROM scheduler.job_runs WHERE scope = $1"
    args: list[Any] = [scope]
    if job_id is not None:
        query += " AND job_id = $2"
        args.append(job_id)
    records: list[asyncpg.Record] = await conn.fetch(query + " ORDER BY scheduled_for, attempt", *args)
    return records


async def counts_in(conn: Conn, scope: str, status: RunStatus) -> dict[str, int]:
    """job_id -> how many of its runs are in `status` now."""
    active = f" AND {ACTIVE_ROWS}" if status in ACTIVE else ""
    records = await conn.fetch(
        f"SELECT job_id, count(*) AS n FROM scheduler.job_runs WHERE scope = $1{active} AND status = $2"
        " GROUP BY job_id",
        scope,
        status.value,
    )
    return {r["job_id"]: r["n"] for r in records}


async def owned(conn: Conn, scope: str, job_ids: list[str]) -> list[asyncpg.Record]:
    """Claimed or running rows of these jobs (whether their worker lives is the caller's question):
    run_id, job_id, worker, status, since (start, else claim time)."""
    records: list[asyncpg.Record] = await conn.fetch(
        "SELECT run_id, job_id, worker, status, coalesce(started_at, claimed_at) AS since FROM scheduler.job_runs"
        f" WHERE scope = $1 AND job_id = ANY($2::text[]) AND {ACTIVE_ROWS} AND status = ANY($3::text[])",
        scope,
        job_ids,
        sources(OWNED),
    )
    return records


async def attempt_by_id(conn: Conn, run_id: uuid.UUID) -> asyncpg.Record | None:
    """One attempt (run_id, status, attempt, duration_ms, error, worker) by its run id."""
    record: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_ATTEMPT} FROM scheduler.job_runs WHERE run_id = $1", run_id
    )
    return record


async def attempt_of_slot(conn: Conn, scope: str, job_id: str, slot: datetime, attempt: int) -> asyncpg.Record | None:
    """Attempt `attempt` of a slot's run in any epoch (the claim is unique per slot and attempt)."""
    record: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_ATTEMPT} FROM scheduler.job_runs WHERE scope = $1 AND job_id = $2 AND scheduled_for = $3"
        " AND attempt = $4 AND epoch IS NOT NULL",
        scope,
        job_id,
        slot,
        attempt,
    )
    return record


async def slots_recorded(conn: Conn, scope: str, job_id: str, slots: list[datetime]) -> dict[datetime, str]:
    """Slots among `slots` that already have a first-attempt slot run (any epoch), with its status."""
    records = await conn.fetch(
        "SELECT scheduled_for, status FROM scheduler.job_runs WHERE scope = $1 AND job_id = $2 AND attempt = 1"
        " AND epoch IS NOT NULL AND scheduled_for = ANY($3::timestamptz[])",
        scope,
        job_id,
        slots,
    )
    return {r["scheduled_for"]: r["status"] for r in records}
