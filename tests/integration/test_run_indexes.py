"""The indexes of scheduler.job_runs on a large table: every statement that looks for active or finished runs reads
the index made for it, with custom plans and with the generic plans a prepared statement moves to (asyncpg prepares
every statement), never a sequential scan of a big partition; and a run the watchdog abandoned that its worker
starts after all is unfinished again."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from shared.store import history, overlaps, partitions, runs, sweeps
from shared.store.pool import connect as pg_connect
from shared.vocabulary import RunStatus, TriggerSource
from tests.support.databases import private_database

pytestmark = pytest.mark.integration


def midnight(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await pg_connect(database_url, "test-run-indexes")
    yield connection
    await connection.close()


# -- every statement that looks for active or finished runs reads an index --------------------------------------


async def fill(conn: asyncpg.Connection, scope: str, day: datetime, rows: int, status: str = "succeeded") -> None:
    """`rows` finished runs of 1000 jobs on `day`, in that day's partition."""
    await conn.execute(
        "INSERT INTO scheduler.job_runs (run_id, scope, job_id, epoch, trigger_source, scheduled_for, attempt,"
        " status, worker, claimed_at, started_at, finished_at, duration_ms)"
        " SELECT gen_random_uuid(), $1, 'j' || (g % 1000), 1, 'scheduler', t, 1, $4, 'w', t, t, t, 1"
        " FROM (SELECT g, $2::timestamptz + g * (interval '1 day' / $3) AS t FROM generate_series(0, $3 - 1) g) s",
        scope, day, rows, status,
    )  # fmt: skip


async def index_family(conn: asyncpg.Connection, parents: list[str]) -> set[str]:
    """The partitions' indexes of the indexes `parents` of scheduler.job_runs."""
    records = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = ANY(SELECT to_regclass('scheduler.' || p) FROM unnest($1::text[]) AS p)",
        parents,
    )
    return {r["relname"] for r in records}


def scans(plan: dict[str, Any], tables: set[str]) -> list[tuple[str, str | None]]:
    """(node type, index name) of every scan of `tables` in `plan` (a bitmap scan by the index under it)."""
    found = []
    if plan.get("Relation Name") in tables and plan["Node Type"] != "ModifyTable":
        if plan["Node Type"] == "Bitmap Heap Scan":
            found += [(plan["Node Type"], child.get("Index Name")) for child in plan.get("Plans", [])]
        else:
            found.append((plan["Node Type"], plan.get("Index Name")))
    for child in plan.get("Plans", []):
        found += scans(child, tables)
    return found


class Plans:
    """The plans of every statement the connection runs, nested ones included (auto_explain, sent to the client)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn, self.seen = conn, []  # type: ignore[var-annotated]
        conn.add_log_listener(self._on_message)

    def _on_message(self, _conn: asyncpg.Connection, message: Any) -> None:
        text = str(message.message)
        if "plan:\n" in text:
            self.seen.append(json.loads(text.split("plan:\n", 1)[1]))

    async def start(self) -> None:
        await self.conn.execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_format = 'json';"
            " SET auto_explain.log_nested_statements = on; SET client_min_messages = 'log'"
        )

    async def of(self, call: Callable[[], Awaitable[object]]) -> list[dict[str, Any]]:
        self.seen.clear()
        await call()
        await self.conn.execute("SELECT 'end of plans'")
        for _ in range(100):  # the messages come to the listener a moment after the statements' answers
            if any(seen["Query Text"] == "SELECT 'end of plans'" for seen in self.seen):
                break
            await asyncio.sleep(0.01)
        return [seen["Plan"] for seen in self.seen]


async def test_statements_on_active_and_finished_runs_read_their_index_on_a_large_table(database_url: str) -> None:
    now = datetime.now(UTC)
    today, old = midnight(now), midnight(now) - timedelta(days=40)
    async with private_database(database_url) as dsn:
        conn = await pg_connect(dsn, "test-run-indexes")
        try:
            await conn.fetchval("SELECT scheduler.ensure_run_partitions($1, $1)", old.date())
            await conn.execute(
                "INSERT INTO scheduler.jobs (scope, job_id, queue, interval_seconds) VALUES ('s', 'j1', 'q', 1)"
            )
            await fill(conn, "s", today, 200_000)
            await fill(conn, "s", old, 100_000)
            await fill(conn, "o", old, 100)
            for n, status in enumerate(("claimed", "running", "buffered")):
                run = runs.NewRun(uuid.uuid4(), "s", "j1", 1, "scheduler", now + timedelta(seconds=n), 1, {})
                assert await runs.claim(conn, run, RunStatus(status), "gone")
            await conn.execute("ANALYZE scheduler.job_runs")
            big = {f"job_runs_p{today:%Y%m%d}", f"job_runs_p{old:%Y%m%d}"}
            open_ = await index_family(conn, ["job_runs_active"])
            finished = await index_family(conn, ["job_runs_finished"])
            by_job = await index_family(conn, ["job_runs_by_job", "job_runs_chain_slot"])
            by_id = await index_family(conn, ["job_runs_pkey"])
            statements: dict[str, tuple[Callable[[], Awaitable[object]], set[str]]] = {
                "has_waiter": (lambda: runs.has_waiter(conn, "s", "j1"), open_),
                "waiting": (lambda: overlaps.waiting(conn, "s", "j1"), open_),
                "earlier_waiting": (lambda: overlaps.earlier_waiting(conn, "s", "j1", now), open_),
                "request_cancel": (lambda: overlaps.request_cancel(conn, "s", "j1", uuid.uuid4(), "r"), open_),
                "owned": (lambda: history.owned(conn, "s", ["j1", "j2"]), open_),
                "counts_in": (lambda: history.counts_in(conn, "s", RunStatus.RUNNING), open_),
                "expire_stale_buffers": (lambda: sweeps.expire_stale_buffers(conn, "s", 86400), open_),
                "abandon_orphans": (lambda: sweeps.abandon_orphans(conn, "s"), open_ | by_id),
                "expired_partitions": (lambda: partitions.expired(conn, today), open_ | finished | by_job),
                "prune_runs": (
                    lambda: sweeps.prune_runs(conn, "o", 30, [f"job_runs_p{old:%Y%m%d}"]),
                    finished | by_job,
                ),
            }
            plans = Plans(conn)
            await plans.start()
            for mode in ("force_custom_plan", "force_generic_plan"):
                await conn.execute(f"SET plan_cache_mode = {mode}")
                for name, (call, allowed) in statements.items():
                    transaction = conn.transaction()
                    await transaction.start()
                    try:
                        found = [s for plan in await plans.of(call) for s in scans(plan, big)]
                    finally:
                        await transaction.rollback()
                    assert found, (mode, name)
                    assert all(kind != "Seq Scan" and index in allowed for kind, index in found), (mode, name, found)
        finally:
            await conn.close()


async def test_a_run_abandoned_then_started_after_all_is_unfinished_and_watched_again(
    conn: asyncpg.Connection, cleanup_scope: str
) -> None:
    slot = datetime.now(UTC)
    run = runs.NewRun(uuid.uuid4(), cleanup_scope, "a", 1, TriggerSource.SCHEDULER.value, slot, 1, {})
    assert await runs.claim(conn, run, RunStatus.RUNNING, "gone")  # a worker without a liveness row: dead
    (abandoned,) = await sweeps.abandon_orphans(conn, cleanup_scope)
    assert abandoned.run_id == run.run_id

    assert await runs.start(conn, run.run_id, "gone", slot, slot) is not None  # its record wins
    row = await conn.fetchrow("SELECT status, finished_at FROM scheduler.job_runs WHERE run_id = $1", run.run_id)
    assert (row["status"], row["finished_at"]) == (RunStatus.RUNNING.value, None)  # not shown as finished
    (again,) = await sweeps.abandon_orphans(conn, cleanup_scope)
    assert again.run_id == run.run_id
