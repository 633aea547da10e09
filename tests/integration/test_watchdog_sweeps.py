"""Each sweep of the watchdog alone, and its loop and leadership, against the real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from prometheus_client import CollectorRegistry

from shared import retry_policy, topology
from shared.definitions import load_definition
from shared.job_metrics import refresh_job_metrics
from shared.metrics import Metrics
from shared.publisher import Publisher
from shared.seeding import declare_for, declare_retry_for
from shared.store import idempotency, runs, workers
from shared.store import jobs as jobs_store
from shared.store.jobs import JobRow
from shared.store.pool import connect as pg_connect
from shared.vocabulary import RunStatus, TriggerSource
from shared.watchdog import Leadership, Watchdog
from shared.watchdog.abandoned import AbandonedRuns
from shared.watchdog.buffers import StaleBuffers
from shared.watchdog.pruning import Pruning
from shared.watchdog.reseed import LostChains
from tests.support.logcapture import capture_logs

pytestmark = pytest.mark.integration

SLOT = datetime(2026, 1, 1, 12, tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await pg_connect(database_url, "test-watchdog-sweeps")
    yield connection
    await connection.close()


@pytest.fixture
async def channel(amqp: AbstractRobustConnection) -> AsyncIterator[AbstractChannel]:
    ch = await amqp.channel(publisher_confirms=True, on_return_raises=True)
    yield ch
    await ch.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


async def add_job(conn: asyncpg.Connection, channel: AbstractChannel, scope: str, **definition: Any) -> JobRow:
    """The job row (no chain message) and its queues, the retry queue included (a worker's publisher declares it
    on first need; the sweeps here are given a bare one)."""
    row, _ = await jobs_store.upsert_job(conn, scope, load_definition({"interval_seconds": 3600, **definition}))
    await declare_for(channel, row, "classic")
    await declare_retry_for(channel, row)
    return row


async def written_long_ago(conn: asyncpg.Connection, scope: str, *, but: str = "") -> None:
    """Move the scope's job rows' last write ten minutes back (but not `but`'s): a row that never had a chain is
    taken as lost only a grace after it was written (its seeder may be starting it)."""
    await conn.execute(
        "UPDATE scheduler.jobs SET updated_at = updated_at - interval '10 minutes' WHERE scope = $1 AND job_id <> $2",
        scope,
        but,
    )


async def worker(database_url: str, scope: str, name: str, queues: list[str]) -> asyncpg.Connection:
    """A registered worker: alive while the returned connection is open."""
    worker_id = f"{scope}-{name}"
    holder = await pg_connect(database_url, worker_id)
    await workers.register(holder, worker_id=worker_id, scope=scope, service=name, hostname="h", pid=1, queues=queues)
    return holder


async def dead_worker(database_url: str, scope: str, name: str, queues: list[str]) -> str:
    holder = await worker(database_url, scope, name, queues)
    await holder.close()  # the session (and the liveness lock) ends: PostgreSQL says the worker is gone
    return f"{scope}-{name}"


async def add_run(
    conn: asyncpg.Connection, job: JobRow, status: RunStatus, worker_id: str | None, attempt: int = 1, **at: Any
) -> uuid.UUID:
    run = runs.NewRun(uuid.uuid4(), job.scope, job.job_id, job.epoch, TriggerSource.SCHEDULER, SLOT, attempt, {})
    assert await runs.claim(conn, run, status, worker_id or "nobody")
    if worker_id is None or at:
        sets = ", ".join(f"{column} = ${i + 2}" for i, column in enumerate(at))
        await conn.execute(
            f"UPDATE scheduler.job_runs SET worker = {'NULL' if worker_id is None else 'worker'}"
            f"{', ' + sets if sets else ''} WHERE run_id = $1",
            run.run_id,
            *at.values(),
        )
    return run.run_id


async def status_of(conn: asyncpg.Connection, run_id: uuid.UUID) -> str | None:
    status: str | None = await conn.fetchval("SELECT status FROM scheduler.job_runs WHERE run_id = $1", run_id)
    return status


async def work_messages(
    channel: AbstractChannel, scope: str, queue: str, settle_sec: float = 1.0
) -> list[dict[str, Any]]:
    """Every message now in the work queue (taken off it), waiting `settle_sec` for dead-lettered ones."""
    work = await channel.declare_queue(topology.work_queue_name(scope, queue), passive=True)
    await asyncio.sleep(settle_sec)
    bodies = []
    while (message := await work.get(fail=False, no_ack=True)) is not None:
        bodies.append(json.loads(message.body))
    return bodies


async def delay_depth(amqp: AbstractRobustConnection, scope: str, job_id: str) -> int:
    """Messages in the job's delay queue, read on a channel of its own (a fresh declaration, a fresh count)."""
    own = await amqp.channel()
    try:
        queue = await own.declare_queue(topology.delay_queue_name(scope, job_id), passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await own.close()


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


# -- abandoned runs -------------------------------------------------------------------------------------------


async def test_abandoned_run_of_a_dead_worker_is_marked_and_retried_once(
    conn: asyncpg.Connection, channel: AbstractChannel, metrics: Metrics, database_url: str, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    tick = await add_job(conn, channel, scope, job_id="tick", max_attempts=3)
    last = await add_job(conn, channel, scope, job_id="last", max_attempts=1)
    gone = await dead_worker(database_url, scope, "gone", ["tick", "last"])
    alive = await worker(database_url, scope, "alive", ["tick"])
    try:
        orphan = await add_run(conn, tick, RunStatus.RUNNING, gone)
        no_attempts_left = await add_run(conn, last, RunStatus.CLAIMED, gone)
        busy = await add_run(conn, tick, RunStatus.RUNNING, f"{scope}-alive", attempt=2)
        sweep = AbandonedRuns(scope, Publisher(channel, scope), metrics, now)

        await sweep.run(conn)
        await sweep.run(conn)  # a second pass finds nothing left to do: one retry, not two

        assert await status_of(conn, orphan) == RunStatus.ABANDONED
        assert await status_of(conn, no_attempts_left) == RunStatus.ABANDONED
        assert await status_of(conn, busy) == RunStatus.RUNNING  # its worker is alive
        (retry,) = await work_messages(channel, scope, "tick")
        expected = retry_policy.retry_run_id(scope, "tick", tick.epoch, SLOT, orphan, 2)
        assert (retry["run_id"], retry["attempt"], retry["trigger_source"]) == (str(expected), 2, "retry")
        assert await work_messages(channel, scope, "last", settle_sec=0) == []
        assert sample(metrics, "scheduler_retries_total", scope=scope, job_id="tick") == 1
        assert sample(metrics, "scheduler_retries_total", scope=scope, job_id="last") is None
        abandoned = {"scope": scope, "status": "abandoned", "trigger_source": "scheduler"}
        assert sample(metrics, "scheduler_runs_total", job_id="tick", **abandoned) == 1
        assert sample(metrics, "scheduler_runs_total", job_id="last", **abandoned) == 1
        job = await jobs_store.get_job(conn, scope, "tick")
        assert job is not None and job.last_status == "abandoned" and job.consecutive_failures == 1
    finally:
        await alive.close()


async def test_an_abandoned_run_publishes_its_outcome_event(
    conn: asyncpg.Connection, channel: AbstractChannel, metrics: Metrics, database_url: str, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    last = await add_job(conn, channel, scope, job_id="last", max_attempts=1)
    listener = await channel.declare_queue(exclusive=True)
    await topology.declare_events_exchange(channel, scope)
    await listener.bind(topology.events_exchange_name(scope), "job.last.*")
    gone = await dead_worker(database_url, scope, "gone", ["last"])
    orphan = await add_run(conn, last, RunStatus.CLAIMED, gone)
    await AbandonedRuns(scope, Publisher(channel, scope), metrics, now).run(conn)
    message = await listener.get(timeout=5)
    body = json.loads(message.body)
    assert message.routing_key == "job.last.abandoned"
    assert (body["run_id"], body["status"], body["attempt"]) == (str(orphan), "abandoned", 1)
    assert message.message_id == str(uuid.uuid5(orphan, "outcome:abandoned"))


async def test_a_claim_given_back_is_abandoned_only_after_the_grace(
    conn: asyncpg.Connection, channel: AbstractChannel, metrics: Metrics, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    tick = await add_job(conn, channel, scope, job_id="tick")
    fresh = await add_run(conn, tick, RunStatus.CLAIMED, None)
    old = await add_run(conn, tick, RunStatus.CLAIMED, None, attempt=2, claimed_at=now() - timedelta(minutes=5))
    await AbandonedRuns(scope, Publisher(channel, scope), metrics, now, released_grace_sec=60).run(conn)
    assert await status_of(conn, fresh) == RunStatus.CLAIMED  # its message is on its way back to a worker
    assert await status_of(conn, old) == RunStatus.ABANDONED


# -- lost chains ----------------------------------------------------------------------------------------------


async def test_a_lost_chain_is_reseeded_and_one_that_moved_on_is_not(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    amqp: AbstractRobustConnection,
    metrics: Metrics,
    database_url: str,
    cleanup_scope: str,
) -> None:
    scope = cleanup_scope
    at = now()
    lost = await add_job(conn, channel, scope, job_id="lost")
    fresh = await add_job(conn, channel, scope, job_id="fresh")  # never had a message
    just_written = await add_job(conn, channel, scope, job_id="just_written")  # nor this one, written a moment ago
    moving = await add_job(conn, channel, scope, job_id="moving")
    unserved = await add_job(conn, channel, scope, job_id="unserved")
    await jobs_store.set_next_due(conn, scope, "lost", at - timedelta(minutes=10))
    await jobs_store.set_next_due(conn, scope, "moving", at + timedelta(minutes=10))
    await written_long_ago(conn, scope, but="just_written")
    alive = await worker(database_url, scope, "alive", ["lost", "fresh", "moving", "just_written"])
    try:
        sweep = LostChains(scope, channel, Publisher(channel, scope), metrics, lost_after_sec=60, clock=now)
        await sweep.run(conn)

        epochs = {job.job_id: job.epoch for job in await jobs_store.list_jobs(conn, scope)}
        assert epochs == {
            "lost": lost.epoch + 1,
            "fresh": fresh.epoch + 1,
            "moving": moving.epoch,
            "unserved": 0,
            "just_written": just_written.epoch,
        }
        assert unserved.epoch == 0
        assert await delay_depth(amqp, scope, "lost") == 1 and await delay_depth(amqp, scope, "fresh") == 1
        assert await delay_depth(amqp, scope, "just_written") == 0
        reseeds = "scheduler_chain_reseeds_total"
        assert sample(metrics, reseeds, scope=scope, job_id="lost", reason="overdue") == 1
        assert sample(metrics, reseeds, scope=scope, job_id="fresh", reason="never_seeded") == 1

        # a pass that listed "moving" as overdue, acting after its chain was extended: left alone
        listed = await jobs_store.get_job(conn, scope, "moving")
        assert listed is not None
        stale = dataclasses.replace(listed, next_due_at=at - timedelta(hours=1))
        with capture_logs() as logs:
            await sweep.reseed(conn, stale)
        assert [e["event"] for e in logs] == ["chain.reseed_not_needed"]
        moved = await jobs_store.get_job(conn, scope, "moving")
        assert moved is not None and moved.epoch == moving.epoch
    finally:
        await alive.close()


async def test_a_job_whose_definition_no_longer_validates_does_not_stop_the_reseed_of_the_others(
    conn: asyncpg.Connection,
    channel: AbstractChannel,
    metrics: Metrics,
    database_url: str,
    pool: asyncpg.Pool,
    cleanup_scope: str,
) -> None:
    scope = cleanup_scope
    await add_job(conn, channel, scope, job_id="broken")
    good = await add_job(conn, channel, scope, job_id="good")
    await conn.execute(  # written around the validation, straight in SQL
        "UPDATE scheduler.jobs SET interval_seconds = NULL, cron_expr = '0 * * * *', timezone = 'Mars/Olympus'"
        " WHERE scope = $1 AND job_id = 'broken'",
        scope,
    )
    await written_long_ago(conn, scope)
    alive = await worker(database_url, scope, "alive", ["broken", "good"])
    try:
        sweep = LostChains(scope, channel, Publisher(channel, scope), metrics, lost_after_sec=60, clock=now)
        with capture_logs() as logs:
            await sweep.run(conn)
            await sweep.run(conn)
        invalid = [e for e in logs if e["event"] == "job.definition_invalid"]
        assert [e["job_id"] for e in invalid] == ["broken"]  # once, not once per pass
        reseeded = [e["job_id"] for e in logs if e["event"] == "chain.reseeded"]
        assert reseeded == ["good"]
        after = await jobs_store.get_job(conn, scope, "good")
        assert after is not None and after.epoch == good.epoch + 1 and after.next_due_at is not None

        # the job-state poller skips it the same way
        await refresh_job_metrics(metrics, pool, scope, ["broken", "good"])
        deadline = "scheduler_job_success_deadline_timestamp_seconds"
        assert sample(metrics, deadline, scope=scope, job_id="good") is not None
        assert sample(metrics, deadline, scope=scope, job_id="broken") is None

        await conn.execute("UPDATE scheduler.jobs SET timezone = 'UTC' WHERE scope = $1 AND job_id = 'broken'", scope)
        with capture_logs() as logs:
            await sweep.run(conn)
        assert "job.definition_valid_again" in [e["event"] for e in logs]
        assert [e["job_id"] for e in logs if e["event"] == "chain.reseeded"] == ["broken"]
    finally:
        await alive.close()


# -- buffers --------------------------------------------------------------------------------------------------


async def test_a_stale_buffered_slot_is_closed_and_a_waiting_one_is_not(
    conn: asyncpg.Connection, channel: AbstractChannel, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    job = await add_job(conn, channel, scope, job_id="slow", overlap="buffer_one", misfire_grace_sec=10)
    other = await add_job(conn, channel, scope, job_id="other", overlap="buffer_one", misfire_grace_sec=10)
    stale = await add_run(conn, job, RunStatus.BUFFERED, "w", claimed_at=now() - timedelta(seconds=41))
    waiting = await add_run(conn, other, RunStatus.BUFFERED, "w", claimed_at=now() - timedelta(seconds=20))

    await StaleBuffers(scope).run(conn)  # closes a buffer 30 s past its job's grace (10 s)

    row = await conn.fetchrow("SELECT status, error, finished_at FROM scheduler.job_runs WHERE run_id = $1", stale)
    assert row["status"] == RunStatus.SKIPPED_LOCKED and row["finished_at"] is not None
    assert row["error"] == "buffered message did not return"
    assert await status_of(conn, waiting) == RunStatus.BUFFERED


# -- pruning --------------------------------------------------------------------------------------------------


async def test_pruning_removes_old_finished_runs_but_never_active_ones(
    conn: asyncpg.Connection, channel: AbstractChannel, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    job = await add_job(conn, channel, scope, job_id="tick")
    long_ago = now() - timedelta(days=40)
    old = await add_run(conn, job, RunStatus.SUCCEEDED, "w", finished_at=long_ago)
    recent = await add_run(conn, job, RunStatus.FAILED, "w", attempt=2, finished_at=now() - timedelta(days=1))
    # active rows are kept whatever their finished_at says (a revived slot keeps none, but be sure)
    active = [
        await add_run(conn, job, status, "w", attempt=3 + i, finished_at=long_ago)
        for i, status in enumerate((RunStatus.CLAIMED, RunStatus.BUFFERED, RunStatus.RUNNING))
    ]
    assert await idempotency.claim(conn, scope, "gone-key", 0.001, None)
    assert await idempotency.claim(conn, scope, "kept-key", 3600, None)
    await asyncio.sleep(0.01)
    clock = iter([0.0, 10.0, 7200.0]).__next__
    pruning = Pruning(scope, retention_days=30, monotonic=clock)

    await pruning.run(conn)

    assert await status_of(conn, old) is None
    assert await status_of(conn, recent) == RunStatus.FAILED
    assert [await status_of(conn, run_id) for run_id in active] == ["claimed", "buffered", "running"]
    keys = await conn.fetch("SELECT key FROM scheduler.idempotency_keys WHERE scope = $1", scope)
    assert [r["key"] for r in keys] == ["kept-key"]

    later = await add_run(conn, job, RunStatus.SUCCEEDED, "w", attempt=9, finished_at=long_ago)
    await pruning.run(conn)  # ten seconds later: not due
    assert await status_of(conn, later) == RunStatus.SUCCEEDED
    await pruning.run(conn)  # two hours later: due again
    assert await status_of(conn, later) is None


# -- the loop and leadership ----------------------------------------------------------------------------------


class Counting:
    """A sweep that counts its passes, and fails the ones `fail` says."""

    def __init__(self, name: str, fail: Any = None) -> None:
        self.name = name
        self.passes = 0
        self.fail = fail

    async def run(self, conn: asyncpg.Connection) -> None:
        self.passes += 1
        if self.fail is not None:
            await self.fail(conn, self.passes)


async def test_two_watchdogs_in_one_scope_only_one_is_active(database_url: str, scope: str) -> None:
    first, second = Counting("first"), Counting("second")
    a = Watchdog(Leadership(database_url, scope, f"{scope}-a"), [first], interval_sec=0.05)
    b = Watchdog(Leadership(database_url, scope, f"{scope}-b"), [second], interval_sec=0.05)
    task_a = asyncio.create_task(a.run())
    await asyncio.sleep(0.3)
    task_b = asyncio.create_task(b.run())
    try:
        await asyncio.sleep(0.5)
        assert a.active and not b.active
        assert first.passes > 3 and second.passes == 0

        task_a.cancel()  # the active one goes away: its session, and the lock, with it
        await asyncio.gather(task_a, return_exceptions=True)
        for _ in range(40):
            if second.passes:
                break
            await asyncio.sleep(0.05)
        assert b.active and second.passes > 0
    finally:
        for task in (task_a, task_b):
            task.cancel()
        await asyncio.gather(task_a, task_b, return_exceptions=True)


async def test_a_failing_sweep_neither_stops_the_others_nor_the_loop(database_url: str, scope: str) -> None:
    async def always(conn: asyncpg.Connection, n: int) -> None:
        raise RuntimeError("a bug in this sweep")

    async def drop_own_session_once(conn: asyncpg.Connection, n: int) -> None:
        if n == 2:  # the connection dies under the watchdog: it must lead again on a new one
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    broken, killer, after = Counting("broken", always), Counting("killer", drop_own_session_once), Counting("after")
    watchdog = Watchdog(Leadership(database_url, scope, f"{scope}-w"), [broken, killer, after], interval_sec=0.05)
    with capture_logs() as logs:
        task = asyncio.create_task(watchdog.run())
        try:
            for _ in range(60):
                if after.passes >= 4:
                    break
                await asyncio.sleep(0.05)
            still_running = not task.done()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert still_running
    assert after.passes >= 4 and broken.passes > after.passes  # the pass with the lost session stopped early
    failed = [e["sweep"] for e in logs if e["event"] == "watchdog.sweep_failed"]
    assert "broken" in failed and "killer" in failed
    assert [e["event"] for e in logs].count("watchdog.active") == 2  # led again after the session was lost


async def test_the_active_watchdog_hands_over_when_its_connection_is_killed(
    database_url: str, scope: str, pool: asyncpg.Pool
) -> None:
    a = Leadership(database_url, scope, f"{scope}-a")
    b = Leadership(database_url, scope, f"{scope}-b")
    try:
        assert await a.lead() is not None and a.active
        assert await b.lead() is None and not b.active
        await pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", f"{scope}-a"
        )
        await asyncio.sleep(0.2)
        assert await b.lead() is not None and b.active
        assert await a.lead() is None and not a.active  # reconnected, but the lock is b's now
    finally:
        await a.resign()
        await b.resign()
