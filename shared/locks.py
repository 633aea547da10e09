"""Advisory lock keys and the lock operations of the run protocol.

Keys are 64-bit integers derived from readable names with blake2b, the same on every machine, so a lock
taken by one process is the lock any other process asks for. Session locks (held on one connection for the
whole run, and a worker's short hold of a chain lock) are released by PostgreSQL when the holder dies;
transaction locks (the chain lock as seed, resume, set and the watchdog take it) at commit. A session lock and a
transaction lock on the same key exclude each other.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import NamedTuple

import asyncpg


def lock_key(*parts: str | int) -> int:
    """A signed 64-bit advisory lock key for a name made of `parts`."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def run_lock_keys(scope: str, lock_name: str, max_parallel: int) -> list[int]:
    """One key per parallel slot of a job or lock group."""
    return [lock_key("run", scope, lock_name, slot) for slot in range(max_parallel)]


def chain_lock_key(scope: str, job_id: str) -> int:
    """Taken (transaction-scoped) by every path that replaces or extends a job's chain."""
    return lock_key("chain", scope, job_id)


def watchdog_lock_key(scope: str) -> int:
    return lock_key("watchdog", scope)


def worker_lock_key(worker_id: str) -> int:
    return lock_key("worker", worker_id)


def migrate_lock_key(scope: str) -> int:
    """Held (session-scoped) by a `migrate-queues` of the scope for the whole move: one move at a time."""
    return lock_key("migrate", scope)


def startup_lock_key(scope: str, queue: str) -> int:
    return lock_key("startup", scope, queue)


class JobVersion(NamedTuple):
    """What tells whether a job row read earlier is still the row: every change of a definition column, of
    `enabled` or of the epoch sets `updated_at`."""

    epoch: int
    enabled: bool
    updated_at: datetime


async def try_lock_any(conn: asyncpg.Connection, keys: list[int]) -> int | None:
    """Take the first free session lock among `keys` in one round trip; returns the key taken or None."""
    key: int | None = await conn.fetchval("SELECT scheduler.try_lock_any($1::bigint[])", keys)
    return key


async def unlock(conn: asyncpg.Connection, key: int) -> bool:
    return bool(await conn.fetchval("SELECT pg_advisory_unlock($1)", key))


async def chain_lock(conn: asyncpg.Connection, scope: str, job_id: str) -> None:
    """Take the chain lock for the current transaction (waits; held only for a publish and an update)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", chain_lock_key(scope, job_id))


async def wait_for_chain(conn: asyncpg.Connection, scope: str, job_id: str) -> None:
    """Wait until nobody holds the job's chain lock (a reseed in progress has committed or rolled back), without
    keeping it: a shared transaction lock for the length of this one statement."""
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", chain_lock_key(scope, job_id))


async def enter_chain(conn: asyncpg.Connection, scope: str, job_id: str) -> tuple[int, bool] | None:
    """Take the job's chain lock on this session (waits) and return (epoch, enabled) as of after it was granted,
    in one round trip. The lock is held until `unlock(chain_lock_key(...))` or a statement that releases it
    (`jobs.record_posted`); None when the job is gone (the lock is held all the same)."""
    record = await conn.fetchrow(
        "SELECT epoch, enabled FROM scheduler.chain_enter($1, $2, $3)", chain_lock_key(scope, job_id), scope, job_id
    )
    return None if record is None else (record["epoch"], record["enabled"])
