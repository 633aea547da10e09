"""History that scales: `scheduler.job_runs` partitioned by day (migration 0009).

Runs in a database of its own on the benchmark's PostgreSQL server (created and migrated here, dropped at the end:
tens of millions of rows never touch the shared `scheduler` schema). Each step adds `days` past days of generated
runs, older than the days before it (so the oldest day, the one pruned, is of the largest step). A day is filled
while detached, the way `scheduler.ensure_run_partitions` builds one: an UNLOGGED table (no WAL: a bench shortcut
that changes nothing measured below) filled by one `INSERT ... SELECT generate_series` with no index to maintain,
then attached, which builds each of its indexes in one sorted pass; `FILLERS` connections fill days side by side.

At each size it measures the run protocol's insert (`runs.claim`, into today's partition, an ordinary logged one:
the partition a live worker writes) in microseconds per row, wall time and the PostgreSQL backend's CPU time; then
prunes the oldest day the way the watchdog does (`sweeps.prune_history`: the partition is dropped) and reports how
long that took and the dead tuples of the table before and after.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import psutil

from shared.settings import Settings
from shared.store import runs, sweeps
from shared.store.pool import connect
from shared.vocabulary import RunStatus, TriggerSource
from tests.bench import scopes
from tests.support.databases import private_database

NEWEST_DAY = date(2024, 12, 31)  # the generated days end here and go back in time, step after step
INSERTS = 2000  # timed inserts at each size
FILLERS = 2  # connections filling days side by side

_FILL = """
    INSERT INTO scheduler.{table} (run_id, scope, job_id, epoch, trigger_source, scheduled_for, attempt, status,
        worker, claimed_at, started_at, finished_at, duration_ms, lateness_ms, next_posted_for)
    SELECT gen_random_uuid(), $1, $4 || (g % 1000), 1, 'scheduler', t, 1, 'succeeded', 'bench', t, t, t, 1, 1, t
    FROM (SELECT g, $2::timestamptz + g * $3::interval AS t FROM generate_series(0, $5 - 1) AS g) AS s
"""


async def _long_statements(dsn: str) -> asyncpg.Connection:
    """A connection without a statement timeout: filling a day of millions of rows takes minutes."""
    conn: asyncpg.Connection = await asyncpg.connect(
        dsn, command_timeout=None, server_settings={"application_name": "bench-history-fill"}
    )
    return conn


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def fill_day(conn: asyncpg.Connection, scope: str, day: date, rows: int, job_prefix: str) -> None:
    """`rows` finished runs spread evenly over `day`, as that day's partition (built detached, then attached)."""
    table = f"job_runs_p{day:%Y%m%d}"
    lo, hi = _midnight(day), _midnight(day + timedelta(days=1))
    await conn.execute(
        f"CREATE UNLOGGED TABLE scheduler.{table} (LIKE scheduler.job_runs INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
        f" INCLUDING STORAGE, CONSTRAINT {table}_range CHECK (scheduled_for >= '{lo.isoformat()}'"
        f" AND scheduled_for < '{hi.isoformat()}'))"
    )
    await conn.execute(_FILL.format(table=table), scope, lo, timedelta(days=1) / rows, job_prefix, rows)
    await conn.execute(
        f"ALTER TABLE scheduler.job_runs ATTACH PARTITION scheduler.{table}"
        f" FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"
    )  # builds the partition's indexes, one sorted pass each; the CHECK spares it a scan
    await conn.execute(f"ALTER TABLE scheduler.{table} DROP CONSTRAINT {table}_range")


async def fill(dsn: str, scope: str, days: list[date], rows_per_day: int, job_prefix: str) -> None:
    """Fill `days` over `FILLERS` connections, a day at a time each."""
    todo = list(days)

    async def filler() -> None:
        conn = await _long_statements(dsn)
        try:
            await conn.execute("SET synchronous_commit = off")
            await conn.execute("SET maintenance_work_mem = '256MB'")
            while todo:
                await fill_day(conn, scope, todo.pop(), rows_per_day, job_prefix)
        finally:
            await conn.close()

    await asyncio.gather(*(filler() for _ in range(min(FILLERS, len(days)))))


async def _insert_cost(conn: asyncpg.Connection, scope: str) -> dict[str, float]:
    """Per claim insert into today's partition (one round trip each, as a worker does it): the wall time and the
    PostgreSQL backend's CPU time, in microseconds (CPU time does not move with the load of a shared machine)."""
    backend = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()"))
    now = datetime.now(UTC)
    cpu, started = sum(backend.cpu_times()[:2]), time.perf_counter()
    for i in range(INSERTS):
        slot = now + timedelta(microseconds=i)
        run = runs.NewRun(uuid.uuid4(), scope, "live", 1, TriggerSource.SCHEDULER.value, slot, 1, {})
        await runs.claim(conn, run, RunStatus.CLAIMED, "bench")
    wall = (time.perf_counter() - started) / INSERTS * 1e6
    return {
        "insert_us": round(wall, 1),
        "insert_cpu_us": round((sum(backend.cpu_times()[:2]) - cpu) / INSERTS * 1e6, 1),
    }


async def _dead_tuples(conn: asyncpg.Connection) -> int:
    n: int = await conn.fetchval(
        "SELECT coalesce(sum(n_dead_tup), 0)::bigint FROM pg_stat_user_tables"
        " WHERE schemaname = 'scheduler' AND relname LIKE 'job_runs%'"
    )
    return n


async def measure(settings: Settings, steps: list[int], days: int) -> dict[str, Any]:
    """`steps`: total generated rows at each measuring point; each step adds `days` days of its share."""
    async with private_database(settings.database_url.get_secret_value(), prefix="bench_history_") as dsn:
        return await _measure(dsn, steps, days)


async def _measure(dsn: str, steps: list[int], days: int) -> dict[str, Any]:
    scope = scopes.new_scope()
    conn = await connect(dsn, "bench-history")
    result: dict[str, Any] = {"scenario": "history", "days": 0, "inserts": [], "fill_sec": [], "fill_rows_per_sec": []}
    try:
        filled, oldest = 0, NEWEST_DAY + timedelta(days=1)
        for total in [0, *steps]:
            per_day = (total - filled) // days
            if per_day > 0:
                step_days = [oldest - timedelta(days=d + 1) for d in range(days)]
                started = time.monotonic()
                await fill(dsn, scope, step_days, per_day, f"s{len(result['inserts'])}j")
                analyzing = await _long_statements(dsn)
                try:
                    await analyzing.execute("ANALYZE scheduler.job_runs")
                finally:
                    await analyzing.close()
                took = time.monotonic() - started
                filled += per_day * days
                oldest = step_days[-1]
                result["days"] += days
                result["fill_sec"].append(round(took, 1))
                result["fill_rows_per_sec"].append(round(per_day * days / took))
            result["inserts"].append({"rows": filled, **await _insert_cost(conn, scope)})
        dead_before = await _dead_tuples(conn)
        started = time.monotonic()
        # the retention puts the cut-off just after the oldest generated day: that day (a partition) goes
        retention = (datetime.now(UTC) - _midnight(oldest)).days - 1
        pruned = await sweeps.prune_history(conn, scope, retention, keys=False, dead_workers_after_sec=None)
        result["prune_day_sec"] = round(time.monotonic() - started, 3)
        result["pruned_rows"] = pruned.runs
        await asyncio.sleep(1.0)  # the statistics collector catches up
        result["dead_tuples_before"] = dead_before
        result["dead_tuples_after"] = await _dead_tuples(conn)
        result["rows"] = filled
    finally:
        await conn.close()
    return result


def run(settings: Settings, steps: list[int], days: int) -> dict[str, Any]:
    return asyncio.run(measure(settings, steps, days))
