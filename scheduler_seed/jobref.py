"""The job a command names: its row, or the one-line "unknown job" error."""

from __future__ import annotations

import asyncpg

from shared.errors import UnknownJob
from shared.store import jobs as jobs_store
from shared.store.jobs import JobRow


async def existing_job(conn: asyncpg.Connection, scope: str, job_id: str) -> JobRow:
    row = await jobs_store.get_job(conn, scope, job_id)
    if row is None:
        raise UnknownJob(scope, job_id)
    return row
