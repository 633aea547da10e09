"""The schema, its migrations and the repository functions, against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from shared.definitions import load_definition
from shared.locks import lock_key
from shared.store import idempotency, runs
from shared.store import jobs as jobs_store
from shared.store.migrate import available_migrations, migrate
from shared.store.pool import create_pool, left_tidy, spoil

pytestmark = pytest.mark.integration


async def test_migrations_racing_apply_once_without_error(database_url: str) -> None:
    schema_db = "mig_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{schema_db}"')
    try:
        dsn = database_url.rsplit("/", 1)[0] + "/" + schema_db
        conns = [await asyncpg.connect(dsn) for _ in range(4)]
        try:
            applied = await asyncio.gather(*(migrate(c) for c in conns))
            assert sorted(v for a in applied for v in a) == [m.version for m in available_migrations()]
            versions = await conns[0].fetch("SELECT version FROM scheduler.schema_migrations ORDER BY version")
            assert [r["version"] for r in versions] == [m.version for m in available_migrations()]
            assert await migrate(conns[0]) == []
        finally:
            for c in conns:
                await c.close()
    finally:
        await admin.execute(f'DROP DATABASE "{schema_db}" WITH (FORCE)')
        await admin.close()


async def test_upsert_reports_change_and_keeps_state(pool: asyncpg.Pool, cleanup_scope: str) -> None:
    scope = cleanup_scope
    definition = load_definition({"job_id": "a", "interval_seconds": 5})
    async with pool.acquire() as conn:
        row, changed = await jobs_store.upsert_job(conn, scope, definition)
        assert changed and row.queue == "a" and row.epoch == 0
        assert await jobs_store.bump_epoch(conn, scope, "a") == 1
        row, changed = await jobs_store.upsert_job(conn, scope, definition)
        assert not changed and row.epoch == 1
        row, changed = await jobs_store.upsert_job(conn, scope, load_definition({"job_id": "a", "interval_seconds": 7}))
        assert changed and row.interval_seconds == 7 and row.epoch == 1


async def test_chain_slot_is_claimed_once_across_epochs(pool: asyncpg.Pool, cleanup_scope: str) -> None:
    scope = cleanup_scope
    slot = datetime(2026, 1, 1, tzinfo=UTC)
    first = runs.NewRun(uuid.uuid4(), scope, "a", 1, "scheduler", slot, 1, {})
    again_new_epoch = runs.NewRun(uuid.uuid4(), scope, "a", 2, "scheduler", slot, 1, {})
    async with pool.acquire() as conn:
        assert await runs.claim(conn, first, runs.RunStatus.CLAIMED, "w1")
        assert not await runs.claim(conn, again_new_epoch, runs.RunStatus.CLAIMED, "w2")
        found = await runs.existing(conn, again_new_epoch)
        assert found is not None and found.run_id == first.run_id and found.worker == "w1"


async def test_idempotency_key_claims_once_until_expiry(pool: asyncpg.Pool, cleanup_scope: str) -> None:
    scope = cleanup_scope
    key = "BTC-15m-1767225600-buy"
    assert await idempotency.claim(pool, scope, key, 0.3, None)
    assert not await idempotency.claim(pool, scope, key, 0.3, None)
    await asyncio.sleep(0.4)
    assert await idempotency.claim(pool, scope, key, 60, None)


async def test_advisory_lock_held_sees_other_sessions(pool: asyncpg.Pool) -> None:
    key = lock_key("test", uuid.uuid4().hex)
    async with pool.acquire() as holder, pool.acquire() as observer:
        assert not await observer.fetchval("SELECT scheduler.advisory_lock_held($1)", key)
        assert await holder.fetchval("SELECT scheduler.try_lock_any($1::bigint[])", [key]) == key
        assert await observer.fetchval("SELECT scheduler.advisory_lock_held($1)", key)
        assert await observer.fetchval("SELECT scheduler.try_lock_any($1::bigint[])", [key]) is None
        await holder.execute("SELECT pg_advisory_unlock($1)", key)
        assert not await observer.fetchval("SELECT scheduler.advisory_lock_held($1)", key)


async def _held(pool: asyncpg.Pool, key: int) -> bool:
    return bool(await pool.fetchval("SELECT scheduler.advisory_lock_held($1)", key))


async def test_a_pool_connection_is_reset_unless_its_holder_left_it_tidy(database_url: str, pool: asyncpg.Pool) -> None:
    """The pool skips asyncpg's reset round trip only for a release its holder declared tidy; a lock left behind
    without that (or after `spoil`) is given back by the reset, so a leaked run lock can never outlive a run."""
    small = await create_pool(database_url, min_size=1, max_size=1)
    key = lock_key("tidy-test", uuid.uuid4().hex)
    try:
        async with small.acquire() as conn:  # not declared tidy: the reset gives the lock back
            assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
            assert await _held(pool, key)
        assert not await _held(pool, key)

        async with small.acquire() as conn:  # declared tidy, but spoiled by a failed unlock: reset all the same
            assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
            spoil(conn)
            left_tidy(conn)
        assert not await _held(pool, key)

        async with small.acquire() as conn:  # tidy: no reset, so session state survives (a lock, a setting)
            assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
            await conn.execute("SET application_name = 'kept'")
            left_tidy(conn)
        assert await _held(pool, key)
        async with small.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") == "kept"
        assert not await _held(pool, key)  # the mark was for one release only: this one was reset
        async with small.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") != "kept"
    finally:
        await small.close()
