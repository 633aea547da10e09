"""What one run costs PostgreSQL: the backend CPU of each statement a run writes, the share of its updates that are
HOT (no new index entries), and the WAL it writes.

`python -m tests.bench.run_writes [--runs N] [--upto VERSION] [--sql SQL] [--repeat K]`. Runs in a database of its
own (created and migrated here, to `--upto` when given, then `--sql` run: a variant to try; dropped at the end), so
nothing touches the shared `scheduler` schema and the WAL of the runs can be told apart from the WAL of everything
else on the server.

The runs take the lead path one at a time, with the real statements of `shared.store.runs` (what a worker sends for
a batch of one): the claim and the chain entered (`claim_and_enter_chain`), the post recorded
(`record_posted_released`), and, `LEAD` runs later (a quarter of a second at 400 runs a second), the run lock and
the start (`lock_and_start_run`) and the finish (`finish`). So a run row is updated while the rows claimed after it
fill the same pages, as under load.

* CPU: the backend's time on a CPU from `/proc/<pid>/schedstat` (nanoseconds, whatever the load of the machine), read
  around each statement; a statement's tail may be counted with the next one, the total is exact.
* HOT: `n_tup_upd` and `n_tup_hot_upd` of the tables written (pg_stat_user_tables, flushed before each reading).
* Pages: the distinct pages the runs' WAL records change (after a checkpoint, the first change of each writes a
  full-page image) and how many bytes the day's partition and its indexes grew by.
* WAL: the records of the measured interval that touch this database (pg_walinspect), their commits included, with
  the full-page images (which follow the server's checkpoints, not the statements) counted apart; and the plain
  `pg_current_wal_lsn()` difference, which includes whatever else the server wrote meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from shared.locks import JobVersion, chain_lock_key, run_lock_keys
from shared.settings import Settings
from shared.store import runs
from shared.store.pool import connect
from shared.vocabulary import RunStatus, TriggerSource
from tests.support import databases

LEAD = 100
"""Runs claimed between a run's claim and its start (the 250 ms dispatch lead at 400 runs a second)."""
JOBS = 200
HISTORY = 100_000
"""Finished runs already in the day's partition before the runs measured (the indexes are not empty)."""
STATEMENTS = ("claim", "post", "start", "finish")
TABLES = ("job_runs_p", "jobs", "trigger_counts")


@contextlib.asynccontextmanager
async def private_database(dsn: str, upto: int | None, sql: str = "") -> AsyncIterator[str]:
    """A new database on `dsn`'s server, migrated (to `upto`), then `sql` run, with pg_walinspect; dropped
    afterwards."""
    async with databases.private_database(dsn, upto, prefix="bench_run_writes_") as private:
        conn = await asyncpg.connect(private)
        try:
            if sql:
                await conn.execute(sql)
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        finally:
            await conn.close()
        yield private


def _on_cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def _user_system_ticks(pid: int) -> tuple[int, int]:
    """The process's user and system CPU time in clock ticks (/proc/<pid>/stat, fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


@dataclass
class Job:
    job_id: str
    version: JobVersion
    next_slot: datetime


class Driver:
    """One connection driving runs through the lead path, with the backend's CPU counted per statement."""

    def __init__(self, conn: asyncpg.Connection, pid: int, scope: str, jobs: list[Job]) -> None:
        self.conn, self.pid, self.scope, self.jobs = conn, pid, scope, jobs
        self.cpu_ns: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.pending: list[tuple[runs.NewRun, datetime]] = []

    async def timed(self, name: str, call: Callable[[], Awaitable[Any]]) -> Any:
        before = _on_cpu_ns(self.pid)
        result = await call()
        self.cpu_ns[name] += _on_cpu_ns(self.pid) - before
        self.calls[name] += 1
        return result

    async def step(self, n: int) -> None:
        """Claim and post run `n`; start and finish the run claimed `LEAD` steps before."""
        job = self.jobs[n % len(self.jobs)]
        slot, job.next_slot = job.next_slot, job.next_slot + timedelta(seconds=1)
        run = runs.NewRun(uuid.uuid4(), self.scope, job.job_id, 1, TriggerSource.SCHEDULER.value, slot, 1, {})
        key = chain_lock_key(self.scope, job.job_id)
        ahead = await self.timed("claim", lambda: runs.claim_and_enter_chain(self.conn, run, "w", key, job.version))
        assert ahead.claimed, run
        await self.timed(
            "post",
            lambda: runs.record_posted_released(
                self.conn, self.scope, job.job_id, job.next_slot, run.run_id, job.next_slot, key, slot
            ),
        )
        self.pending.append((run, slot))
        if len(self.pending) > LEAD:
            await self.finish_one()

    async def finish_one(self) -> None:
        run, slot = self.pending.pop(0)
        keys = run_lock_keys(self.scope, run.job_id, 1)
        taken, started = await self.timed(
            "start", lambda: runs.lock_and_start_run(self.conn, keys, True, run.run_id, slot, "w", slot)
        )
        assert taken is not None and started is not None, run
        done = datetime.now(UTC)
        await self.timed(
            "finish",
            lambda: runs.finish(
                self.conn, run.run_id, RunStatus.SUCCEEDED, None, 1, done, release_key=taken, slot=slot
            ),
        )

    async def drain(self) -> None:
        while self.pending:
            await self.finish_one()


async def _table_stats(reader: asyncpg.Connection, day: str) -> dict[str, tuple[int, int]]:
    await reader.execute("SELECT pg_stat_clear_snapshot()")
    records = await reader.fetch(
        "SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE schemaname = 'scheduler'"
        " AND relname = ANY($1::text[])",
        [day, "jobs", "trigger_counts"],
    )
    return {r["relname"]: (r["n_tup_upd"], r["n_tup_hot_upd"]) for r in records}


async def _flushed(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await asyncio.sleep(0.3)  # the backend flushes once idle


_WAL = """
    WITH r AS (
        SELECT xid, resource_manager, record_length, fpi_length,
            (regexp_match(block_ref, 'rel \\d+/' || $3 || '/(\\d+)'))[1]::oid AS node
        FROM pg_get_wal_records_info($1, $2)
    ), mine AS (SELECT DISTINCT xid FROM r WHERE node IS NOT NULL AND xid <> '0')
    SELECT coalesce(c.relname, CASE WHEN r.node IS NULL THEN r.resource_manager ELSE 'other' END) AS what,
        count(*) AS records, sum(r.record_length - r.fpi_length) AS bytes, sum(r.fpi_length) AS fpi_bytes
    FROM r LEFT JOIN pg_class c ON c.relfilenode = r.node
    WHERE r.node IS NOT NULL OR (r.resource_manager = 'Transaction' AND r.xid IN (SELECT xid FROM mine))
    GROUP BY 1 ORDER BY 3 DESC
"""


# every page a record of this database changes: after a checkpoint, the first change of a page writes a full-page image
_PAGES = """
    SELECT count(DISTINCT (b[1], b[2])) FROM pg_get_wal_records_info($1, $2) AS r,
        regexp_matches(r.block_ref, 'rel \\d+/' || $3 || '/(\\d+) fork main blk (\\d+)', 'g') AS b
"""

# the day's partition and its indexes, in bytes
_SIZES = """
    SELECT c.relname, pg_relation_size(c.oid) AS bytes FROM pg_class c
    WHERE c.oid = $1::regclass OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = $1::regclass)
"""


async def _sizes(reader: asyncpg.Connection, table: str) -> dict[str, int]:
    return {r["relname"]: r["bytes"] for r in await reader.fetch(_SIZES, f"scheduler.{table}")}


async def _fill_history(conn: asyncpg.Connection, scope: str, day: datetime, rows: int) -> None:
    await conn.execute(
        "INSERT INTO scheduler.job_runs (run_id, scope, job_id, epoch, trigger_source, scheduled_for, attempt,"
        " status, worker, claimed_at, started_at, finished_at, duration_ms, lateness_ms, next_posted_for)"
        " SELECT gen_random_uuid(), $1, 'h' || (g % 1000), 1, 'scheduler', t, 1, 'succeeded', 'w', t, t, t, 1, 1, t"
        " FROM (SELECT g, $2::timestamptz + g * interval '1 second' AS t FROM generate_series(1, $3) AS g) AS s",
        scope,
        day,
        rows,
    )
    await conn.execute("VACUUM ANALYZE scheduler.job_runs")


async def measure_once(dsn: str, upto: int | None, count: int, warmup: int, sql: str = "") -> dict[str, Any]:
    async with private_database(dsn, upto, sql) as private:
        return await _measure(private, count, warmup)


async def _measure(dsn: str, count: int, warmup: int) -> dict[str, Any]:
    scope = "t" + secrets.token_hex(4)
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    day = f"job_runs_p{now:%Y%m%d}"
    conn = await connect(dsn, "bench-run-writes")
    reader = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO scheduler.jobs (scope, job_id, queue, interval_seconds)"
            " SELECT $1, 'j' || g, 'q', 1 FROM generate_series(1, $2) AS g",
            scope,
            JOBS,
        )
        await _fill_history(conn, scope, midnight, HISTORY)
        jobs = [
            Job(r["job_id"], JobVersion(r["epoch"], r["enabled"], r["updated_at"]), midnight + timedelta(hours=2))
            for r in await conn.fetch(
                "SELECT job_id, epoch, enabled, updated_at FROM scheduler.jobs WHERE scope = $1", scope
            )
        ]
        driver = Driver(conn, await conn.fetchval("SELECT pg_backend_pid()"), scope, jobs)
        for n in range(warmup):
            await driver.step(n)
        await driver.drain()
        await _flushed(conn)
        stats_before = await _table_stats(reader, day)
        driver.cpu_ns.clear()
        driver.calls.clear()
        dboid = await reader.fetchval("SELECT oid FROM pg_database WHERE datname = current_database()")
        sizes_before = await _sizes(reader, day)
        lsn_before = await reader.fetchval("SELECT pg_current_wal_lsn()")
        started, on_cpu, ticks = time.perf_counter(), _on_cpu_ns(driver.pid), _user_system_ticks(driver.pid)
        for n in range(warmup, warmup + count):
            await driver.step(n)
        await driver.drain()
        wall, on_cpu = time.perf_counter() - started, _on_cpu_ns(driver.pid) - on_cpu
        user, system = (b - a for a, b in zip(ticks, _user_system_ticks(driver.pid), strict=True))
        lsn_after = await reader.fetchval("SELECT pg_current_wal_lsn()")
        await _flushed(conn)
        stats_after = await _table_stats(reader, day)
        wal = await reader.fetch(_WAL, lsn_before, lsn_after, str(dboid))
        pages = await reader.fetchval(_PAGES, lsn_before, lsn_after, str(dboid))
        sizes_after = await _sizes(reader, day)
        server_wal = await reader.fetchval("SELECT $1::pg_lsn - $2::pg_lsn", lsn_after, lsn_before)
    finally:
        await conn.close()
        await reader.close()
    hot = {}
    for table in (day, "jobs", "trigger_counts"):
        upd = stats_after[table][0] - stats_before.get(table, (0, 0))[0]
        hot_upd = stats_after[table][1] - stats_before.get(table, (0, 0))[1]
        hot["job_runs (day)" if table == day else table] = {"upd": upd, "hot": hot_upd}
    return {
        "runs": count,
        "load": os.getloadavg()[0],
        "cpu_us_per_run": round(on_cpu / count / 1e3, 1),
        "cpu_us": {s: round(driver.cpu_ns[s] / driver.calls[s] / 1e3, 1) for s in STATEMENTS},
        "system_cpu_share": round(system / max(1, user + system), 2),
        "wall_ms_per_run": round(wall / count * 1e3, 3),
        "hot": hot,
        "wal_bytes_per_run": round(sum(int(r["bytes"]) for r in wal) / count, 1),
        "wal_fpi_bytes_per_run": round(sum(int(r["fpi_bytes"]) for r in wal) / count, 1),
        "wal_by_relation": {r["what"]: round(int(r["bytes"]) / count, 1) for r in wal},
        "server_wal_bytes_per_run": round(float(server_wal) / count, 1),
        "pages_changed_per_run": round(pages / count, 3),
        "growth_bytes_per_run": {
            name.replace(day, "day"): round((size - sizes_before.get(name, 0)) / count, 1)
            for name, size in sizes_after.items()
        },
    }


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repeated measurements."""

    def med(get: Callable[[dict[str, Any]], float]) -> float:
        return round(statistics.median(get(r) for r in results), 1)

    return {
        "repeats": len(results),
        "cpu_us_per_run": med(lambda r: r["cpu_us_per_run"]),
        "cpu_us": {s: med(lambda r, s=s: r["cpu_us"][s]) for s in STATEMENTS},  # type: ignore[misc]
        "wal_bytes_per_run": med(lambda r: r["wal_bytes_per_run"]),
        "wal_fpi_bytes_per_run": med(lambda r: r["wal_fpi_bytes_per_run"]),
        "pages_changed_per_run": round(statistics.median(r["pages_changed_per_run"] for r in results), 3),
        "growth_bytes_per_run": med(lambda r: sum(r["growth_bytes_per_run"].values())),
        "hot_share": {
            t: med(lambda r, t=t: 100 * r["hot"][t]["hot"] / max(1, r["hot"][t]["upd"]))  # type: ignore[misc]
            for t in results[0]["hot"]
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--upto", type=int, default=None, help="migrate the private database to this version")
    parser.add_argument("--sql", default="", help="run in the private database after migrating (a variant)")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    dsn = Settings().database_url.get_secret_value()
    results = []
    for _ in range(args.repeat):
        results.append(asyncio.run(measure_once(dsn, args.upto, args.runs, args.warmup, args.sql)))
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"upto": args.upto, **summary(results)}))


if __name__ == "__main__":
    main()
