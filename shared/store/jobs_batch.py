"""The job-row statements of `store.jobs`, for many jobs of a scope at once (seeding a file in batches): each is one
round trip whatever the number of jobs (asyncpg sends an `executemany` as one pipeline)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from shared.definitions import JobDefinition
from shared.store.jobs import ROW_COLUMNS, JobRow, definition_values, upsert_sql


async def upsert_jobs(conn: asyncpg.Connection, scope: str, definitions: Sequence[JobDefinition]) -> None:
    """`jobs.upsert_job` for each definition, in one round trip (read the rows back with `get_jobs`)."""
    if definitions:
        await conn.executemany(upsert_sql(), [(scope, d.job_id, *definition_values(d)) for d in definitions])


async def get_jobs(conn: asyncpg.Connection, scope: str, job_ids: Sequence[str]) -> dict[str, JobRow]:
    records = await conn.fetch(
        f"SELECT {ROW_COLUMNS} FROM scheduler.jobs WHERE scope = $1 AND job_id = ANY($2::text[])", scope, list(job_ids)
    )
    return {r["job_id"]: JobRow.from_record(r) for r in records}


async def set_seeded_definitions(conn: asyncpg.Connection, scope: str, seeded: Sequence[tuple[str, Any]]) -> None:
    """`jobs.set_seeded_definition` for each (job_id, declared definition)."""
    if seeded:
        await conn.executemany(
            "UPDATE scheduler.jobs SET seeded_definition = $3 WHERE scope = $1 AND job_id = $2",
            [(scope, job_id, value) for job_id, value in seeded],
        )


async def bump_epochs(conn: asyncpg.Connection, scope: str, job_ids: Sequence[str]) -> dict[str, JobRow]:
    """`jobs.bump_epoch_row` for each job (under their chain locks): the rows as they are after the bump."""
    records = await conn.fetch(
        "UPDATE scheduler.jobs SET epoch = epoch + 1, updated_at = now()"
        f" WHERE scope = $1 AND job_id = ANY($2::text[]) RETURNING {ROW_COLUMNS}",
        scope,
        list(job_ids),
    )
    return {r["job_id"]: JobRow.from_record(r) for r in records}


async def set_next_dues(conn: asyncpg.Connection, scope: str, due: Sequence[tuple[str, datetime | None]]) -> None:
    """`jobs.set_next_due` for each (job_id, next_due_at)."""
    if due:
        await conn.executemany(
            "UPDATE scheduler.jobs SET next_due_at = $3 WHERE scope = $1 AND job_id = $2",
            [(scope, job_id, at) for job_id, at in due],
        )


async def chain_locks(conn: asyncpg.Connection, keys: Sequence[int]) -> None:
    """Take the chain locks `keys` for the current transaction, in key order (two batches never deadlock)."""
    await conn.execute("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k", sorted(keys))
