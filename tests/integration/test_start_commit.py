"""The start of a run (claimed -> running) commits without waiting for the disk (`runs.ASYNC_COMMIT`), and what that
gives up is covered: a start PostgreSQL lost in a crash leaves the row claimed by its own worker, whose run lost its
lock with the crash, and the worker records the outcome over the claim.

The crash itself cannot be made to lose a commit on demand (the WAL writer may flush it first), so the second test
writes the state a lost start leaves (the row claimed again, no started_at) and then drops the run's lock session,
as the crash would."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import aio_pika
import asyncpg
import pytest

from shared import topology
from shared.definitions import load_definition
from shared.locks import run_lock_keys
from shared.settings import Settings
from shared.store import jobs as jobs_store
from shared.store import runs, runs_batch
from shared.vocabulary import RunStatus, TriggerSource
from tests.support import advisory
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import Control, fast_settings, running_worker, wait_until

pytestmark = pytest.mark.integration


def _today() -> datetime:
    """A slot of today: its day's partition exists, so no statement falls back to the parent table (a fallback
    inside the test's transaction would abort it)."""
    return datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


def _run(scope: str, slot: datetime) -> runs.NewRun:
    return runs.NewRun(uuid.uuid4(), scope, "a", 1, TriggerSource.SCHEDULER.value, slot, 1, {})


async def _commit_mode_after(conn: asyncpg.Connection, statement: str, run: runs.NewRun) -> tuple[str, str]:
    """(synchronous_commit inside the transaction after `statement`, the row's status after it)."""
    async with conn.transaction():
        if statement == "start":
            await runs.start(conn, run.run_id, "me", run.scheduled_for, run.scheduled_for)
        elif statement == "lock_and_start":
            await runs.lock_and_start(conn, [], False, run, "me", run.scheduled_for)
        elif statement == "lock_and_start_each":  # two runs: the batched statement
            other = _run(run.scope, run.scheduled_for + timedelta(seconds=1))
            assert await runs.claim(conn, other, RunStatus.CLAIMED, "me")
            starts = [runs_batch.SlotStart(r.run_id, r.scheduled_for, [], False, r.scheduled_for) for r in (run, other)]
            await runs_batch.lock_and_start_each(conn, starts, "me")
        else:
            assert await runs.claim(
                conn, _run(run.scope, run.scheduled_for + timedelta(seconds=2)), RunStatus.CLAIMED, "me"
            )
        mode = await conn.fetchval("SELECT current_setting('synchronous_commit')")
    status = await conn.fetchval("SELECT status FROM scheduler.job_runs WHERE run_id = $1", run.run_id)
    return mode, status


@pytest.mark.parametrize("statement", ["start", "lock_and_start", "lock_and_start_each"])
async def test_a_start_commits_asynchronously_and_a_claim_does_not(
    pool: asyncpg.Pool, cleanup_scope: str, statement: str
) -> None:
    async with pool.acquire() as conn:
        await jobs_store.upsert_job(conn, cleanup_scope, load_definition({"job_id": "a", "interval_seconds": 60}))
        run = _run(cleanup_scope, _today())
        assert await runs.claim(conn, run, RunStatus.CLAIMED, "me")
        assert await _commit_mode_after(conn, statement, run) == ("off", "running")
        # a start that finds nothing to start changes nothing, and a claim stays a synchronous commit
        assert await _commit_mode_after(conn, "claim", run) == ("on", "running")
        assert await conn.fetchval("SELECT current_setting('synchronous_commit')") == "on"  # local to the start


async def test_a_run_whose_start_was_lost_and_whose_lock_went_with_the_crash_is_recorded_by_its_worker(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="long", cron_expr="0 0 1 1 *", max_attempts=2, retry_backoff_sec=0.2,
                       default_params={"sleep_sec": 30})  # fmt: skip
    async with running_worker(fast_settings(settings, scope), {"long": (probe, ProbeParams)}):
        channel = await amqp.channel()
        exchange = await channel.get_exchange(topology.exchange_name(scope))
        body = json.dumps({"job_id": "long"}).encode()
        await exchange.publish(aio_pika.Message(body), routing_key=topology.work_queue_name(scope, "long"))
        await channel.close()
        await wait_until(lambda: _statuses(control, ["running"]), 15, "the run running")
        (row,) = await control.runs("long")
        # what a crash that lost the start leaves: the claim, by the same worker, never started
        await pool.execute(
            "UPDATE scheduler.job_runs SET status = $2, started_at = NULL, lateness_ms = NULL WHERE run_id = $1",
            row["run_id"],
            RunStatus.CLAIMED.value,
        )
        # ... and no run lock: the crash ended every session (here only the one holding the lock)
        (holder,) = await advisory.holders(pool, run_lock_keys(scope, "job:long", 1))
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", holder)
        await wait_until(lambda: _statuses(control, ["failed", "running"]), 15, "failed, then its retry running")
    first, retry = await control.runs("long")
    assert first["run_id"] == row["run_id"] and first["status"] == "failed" and "run lock lost" in first["error"]
    assert first["started_at"] is None and first["finished_at"] is not None
    assert retry["attempt"] == 2 and retry["trigger_source"] == "retry"


async def _statuses(control: Control, expected: list[str]) -> bool:
    rows = await control.runs("long")
    return [r["status"] for r in rows] == expected
