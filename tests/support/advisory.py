"""Who holds an advisory lock, seen from another session: the project's bigint keys are split into pg_locks'
classid (high half) and objid (low half), as `scheduler.advisory_lock_held` reads them."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

_HOLDERS = (
    "SELECT l.pid FROM pg_locks l JOIN unnest($1::bigint[]) AS k ON l.locktype = 'advisory' AND l.granted"
    " AND l.classid = ((k >> 32) & 4294967295)::oid AND l.objid = (k & 4294967295)::oid"
)


async def holders(pool: asyncpg.Pool, keys: Sequence[int]) -> list[int]:
    """The backend pid of each granted lock among `keys` (one entry per lock held)."""
    return [r["pid"] for r in await pool.fetch(_HOLDERS, list(keys))]
