"""scheduler.job_runs partitioned by day (migration 0009): partitions made ahead, a row of a day that had no
partition moved into it, a day past the retention dropped whole (only by the last scope that has rows in it),
run ids outside a chain unique across partitions, and a populated table converted by the migration."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from shared.store import migrate, partitions, runs, sweeps
from shared.store.pool import connect as pg_connect
from shared.vocabulary import RunStatus, TriggerSource

# a day far enough back that no other test writes runs in it, different for each test that needs one
FAR = date(2025, 3, 1)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await pg_connect(database_url, "test-run-partitions")
    yield connection
    await connection.close()


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


async def add(conn: asyncpg.Connection, scope: str, slot: datetime, epoch: int | None = 1, **kw: object) -> uuid.UUID:
    run = runs.NewRun(uuid.uuid4(), scope, "tick", epoch, TriggerSource.SCHEDULER.value, slot, 1, {})
    assert await runs.claim(conn, run, RunStatus.SUCCEEDED, "w")
    await conn.execute(
        "UPDATE scheduler.job_runs SET finished_at = $2 WHERE run_id = $1", run.run_id, kw.get("finished", slot)
    )
    return run.run_id


async def partition_of(conn: asyncpg.Connection, run_id: uuid.UUID) -> str | None:
    found: str | None = await conn.fetchval(
        "SELECT tableoid::regclass::text FROM scheduler.job_runs WHERE run_id = $1", run_id
    )
    return found


async def exists(conn: asyncpg.Connection, name: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"scheduler.{name}"))


async def test_partitions_are_made_ahead_and_a_row_of_a_new_day_moves_out_of_the_default(
    conn: asyncpg.Connection, cleanup_scope: str
) -> None:
    scope, day = cleanup_scope, FAR
    name = f"job_runs_p{day:%Y%m%d}"
    await conn.execute(f"DROP TABLE IF EXISTS scheduler.{name}")
    run_id = await add(conn, scope, at(day))
    assert await partition_of(conn, run_id) == "scheduler.job_runs_default"

    made = await conn.fetchval("SELECT scheduler.ensure_run_partitions($1, $1)", day)
    assert made == 1 and await partition_of(conn, run_id) == f"scheduler.{name}"

    today = datetime.now(UTC)
    await partitions.ensure_ahead(conn, today)
    ahead = [f"job_runs_p{today.date() + timedelta(days=n):%Y%m%d}" for n in range(partitions.DAYS_AHEAD + 1)]
    assert [await exists(conn, n) for n in ahead] == [True] * len(ahead)
    assert await conn.fetchval("SELECT scheduler.ensure_run_partitions($1, $1)", day) == 0  # idempotent


async def test_a_day_past_the_retention_goes_whole_and_only_once_no_other_scope_has_rows_in_it(
    conn: asyncpg.Connection, cleanup_scope: str
) -> None:
    scope, other = cleanup_scope, f"{cleanup_scope}x"
    day = FAR + timedelta(days=1)
    name = f"job_runs_p{day:%Y%m%d}"
    await conn.execute(f"DROP TABLE IF EXISTS scheduler.{name}")
    await conn.fetchval("SELECT scheduler.ensure_run_partitions($1, $1)", day)
    mine = [await add(conn, scope, at(day, h)) for h in (1, 2)]
    theirs = await add(conn, other, at(day, 3))
    try:
        await sweeps.prune_history(conn, scope, retention_days=30, keys=False, dead_workers_after_sec=None)
        # another scope has a row that day: this scope's rows go one by one, the day stays
        assert await exists(conn, name)
        assert [await partition_of(conn, r) for r in (*mine, theirs)] == [None, None, f"scheduler.{name}"]

        pruned = await sweeps.prune_history(conn, other, retention_days=30, keys=False, dead_workers_after_sec=None)
        assert not await exists(conn, name) and await partition_of(conn, theirs) is None
        assert pruned.runs >= 0
    finally:
        await conn.execute("DELETE FROM scheduler.job_runs WHERE scope = $1", other)


async def test_a_day_with_an_active_run_is_not_dropped(conn: asyncpg.Connection, cleanup_scope: str) -> None:
    scope, day = cleanup_scope, FAR + timedelta(days=2)
    name = f"job_runs_p{day:%Y%m%d}"
    await conn.execute(f"DROP TABLE IF EXISTS scheduler.{name}")
    await conn.fetchval("SELECT scheduler.ensure_run_partitions($1, $1)", day)
    done = await add(conn, scope, at(day, 1))
    running = runs.NewRun(uuid.uuid4(), scope, "tick", 1, TriggerSource.SCHEDULER.value, at(day, 2), 1, {})
    assert await runs.claim(conn, running, RunStatus.RUNNING, "w")

    await sweeps.prune_history(conn, scope, retention_days=30, keys=False, dead_workers_after_sec=None)

    assert await exists(conn, name)
    assert await partition_of(conn, done) is None and await partition_of(conn, running.run_id) == f"scheduler.{name}"


async def test_a_run_id_outside_a_chain_is_claimed_once_whatever_its_slot(
    conn: asyncpg.Connection, cleanup_scope: str
) -> None:
    scope, run_id = cleanup_scope, uuid.uuid4()
    first = runs.NewRun(run_id, scope, "tick", None, TriggerSource.EVENT.value, datetime.now(UTC), 1, {})
    copy = runs.NewRun(run_id, scope, "tick", None, TriggerSource.EVENT.value, at(FAR), 1, {})
    assert await runs.claim(conn, first, RunStatus.CLAIMED, "w")
    assert not await runs.claim(conn, copy, RunStatus.CLAIMED, "w")
    _, _, inserted = await runs.lock_and_claim(conn, [], False, copy, "w")
    assert not inserted
    assert await conn.fetchval("SELECT count(*) FROM scheduler.job_runs WHERE run_id = $1", run_id) == 1


async def test_the_migration_converts_a_populated_table(database_url: str) -> None:
    name = f"t{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        conn = await asyncpg.connect(database_url.rsplit("/", 1)[0] + f"/{name}")
        try:
            every = migrate.available_migrations()
            await conn.execute("CREATE SCHEMA scheduler")
            for m in (m for m in every if m.version < 9):
                await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO scheduler.job_runs (run_id, scope, job_id, epoch, trigger_source, scheduled_for, status)"
                " SELECT gen_random_uuid(), 's', 'j', 1, 'scheduler', now() - g * interval '1 hour', 'succeeded'"
                " FROM generate_series(0, 24 * 200) g"
            )
            (nine,) = (m for m in every if m.version == 9)
            await conn.execute(nine.sql)
            kinds = await conn.fetchval("SELECT relkind::text FROM pg_class WHERE oid = 'scheduler.job_runs'::regclass")
            counts = await conn.fetch(
                "SELECT tableoid::regclass::text AS part, count(*) AS n FROM scheduler.job_runs GROUP BY 1"
            )
            indexes = {r["indexname"] for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE"
                                                                 " tablename = 'job_runs'")}  # fmt: skip
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()
    by_part = {r["part"]: r["n"] for r in counts}
    assert kinds == "p" and sum(by_part.values()) == 24 * 200 + 1
    days = {p: n for p, n in by_part.items() if p != "scheduler.job_runs_default"}
    assert len(days) == 91 and all(n <= 24 for n in days.values())  # the last 90 days and today, by day
    assert by_part["scheduler.job_runs_default"] > 24 * 100  # older rows
    assert {"job_runs_pkey", "job_runs_chain_slot", "job_runs_by_job", "job_runs_active"} <= indexes


async def test_pruning_keeps_every_row_of_a_day_not_wholly_past_the_retention(
    conn: asyncpg.Connection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    await partitions.ensure_ahead(conn, datetime.now(UTC))
    today = datetime.now(UTC)
    # finished long ago by its record, but its slot is today: the day's partition stays, and so does the row
    kept = await add(conn, scope, today, finished=today - timedelta(days=40))
    await sweeps.prune_history(conn, scope, retention_days=30, keys=False, dead_workers_after_sec=None)
    assert await partition_of(conn, kept) == f"scheduler.job_runs_p{today:%Y%m%d}"
