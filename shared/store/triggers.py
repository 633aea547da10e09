"""Reads of `scheduler.trigger_counts`: executed runs per job and trigger source, counted by the statement that
records each run's outcome (`runs.finish`)."""

from __future__ import annotations

import asyncpg


async def counts(conn: asyncpg.Connection | asyncpg.Pool, scope: str) -> dict[str, dict[str, int]]:
    """{job_id: {trigger_source: runs}} for the scope (jobs deleted since included: the counts are history)."""
    records = await conn.fetch(
        "SELECT job_id, trigger_source, runs FROM scheduler.trigger_counts WHERE scope = $1 ORDER BY 1, 2", scope
    )
    found: dict[str, dict[str, int]] = {}
    for r in records:
        found.setdefault(r["job_id"], {})[r["trigger_source"]] = int(r["runs"])
    return found
