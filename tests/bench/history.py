"""History that scales: `scheduler.job_runs` partitioned by day (migration 0009).

Fills past days of a scope of its own with generated rows (`generate_series` in SQL, a day per partition), and at
each size measures the run protocol's insert (`runs.claim`, into today's partition: the partition a live worker
writes) in microseconds per row, wall time and the PostgreSQL backend's CPU time; then prunes the oldest day the
way the watchdog does (`sweeps.prune_history`: the partition is dropped) and reports how long that took and the
dead tuples of the table before and after.
Everything it made is gone at the end (its days are dropped, its few rows of today deleted).
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

FIRST_DAY = date(2024, 1, 1)  # the generated days: far enough back that no other scope writes there
INSERTS = 2000  # timed inserts at each size

_FILL = """
    INSERT INTO scheduler.job_runs (run_id, scope, job_id, epoch, trigger_source, scheduled_for, attempt, status,
        worker, claimed_at, started_at, finished_at, duration_ms, lateness_ms, next_posted_for)
    SELECT gen_random_uuid(), $1, $4 || (g % 1000), 1, 'scheduler', t, 1, 'succeeded', 'bench', t, t, t, 1, 1, t
    FROM generate_series(0, $3 - 1) AS g,
         LATERAL (SELECT $2::timestamptz + make_interval(secs => g * 86400.0 / $3)) AS s(t)
"""


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
        "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables"
        " WHERE schemaname = 'scheduler' AND relname LIKE 'job_runs%'"
    )
    return n


async def measure(settings: Settings, steps: list[int], days: int) -> dict[str, Any]:
    """`steps`: total generated rows at each measuring point (spread evenly over `days` past days)."""
    scope = scopes.new_scope()
    conn = await connect(settings.database_url.get_secret_value(), "bench-history")
    last_day = FIRST_DAY + timedelta(days=days - 1)
    result: dict[str, Any] = {"scenario": "history", "days": days, "inserts": []}
    try:
        await conn.execute("SET synchronous_commit = off")  # the fill only: the timed inserts commit as usual
        await conn.fetchval("SELECT scheduler.ensure_run_partitions($1, $2)", FIRST_DAY, last_day)
        await conn.execute("RESET synchronous_commit")
        filled = 0
        for total in [0, *steps]:
            per_day = (total - filled) // days
            if per_day > 0:
                started = time.monotonic()
                for d in range(days):
                    day = FIRST_DAY + timedelta(days=d)
                    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
                    await conn.execute(_FILL, scope, start, per_day, f"s{len(result['inserts'])}j")
                filled += per_day * days
                await conn.execute("ANALYZE scheduler.job_runs")
                result.setdefault("fill_sec", []).append(round(time.monotonic() - started, 1))
            result["inserts"].append({"rows": filled, **await _insert_cost(conn, scope)})
        dead_before = await _dead_tuples(conn)
        started = time.monotonic()
        # the retention puts the cut-off just after the first generated day: that day (a partition) goes
        retention = (datetime.now(UTC) - datetime(FIRST_DAY.year, FIRST_DAY.month, FIRST_DAY.day, tzinfo=UTC)).days - 1
        pruned = await sweeps.prune_history(conn, scope, retention, keys=False, dead_workers_after_sec=None)
        result["prune_day_sec"] = round(time.monotonic() - started, 3)
        result["pruned_rows"] = pruned.runs
        await asyncio.sleep(1.0)  # the statistics collector catches up
        result["dead_tuples_before"] = dead_before
        result["dead_tuples_after"] = await _dead_tuples(conn)
        result["rows"] = filled
    finally:
        for d in range(days):  # a day of these partitions that holds another scope's rows only loses this scope's
            name = f"job_runs_p{FIRST_DAY + timedelta(days=d):%Y%m%d}"
            if await conn.fetchval("SELECT to_regclass($1) IS NULL", f"scheduler.{name}"):
                continue
            others = await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM scheduler.{name} WHERE scope <> $1)", scope)
            if others:
                await conn.execute(f"DELETE FROM scheduler.{name} WHERE scope = $1", scope)
            else:
                await conn.execute(f"DROP TABLE scheduler.{name}")
        await conn.execute("DELETE FROM scheduler.job_runs WHERE scope = $1 AND job_id = 'live'", scope)
        await conn.close()
    return result


def run(settings: Settings, steps: list[int], days: int) -> dict[str, Any]:
    return asyncio.run(measure(settings, steps, days))
