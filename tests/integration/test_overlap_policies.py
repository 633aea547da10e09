"""Overlap policies cancel_other and buffer_all on the real servers, across worker processes: never two runs of a
job at once, the cancelled run stopped (its subprocess group killed) and recorded as such, the buffer bounded."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from shared import topology
from shared.cancel_watch import CancelWatch
from shared.definitions import load_definition
from shared.settings import Settings
from shared.store import jobs as jobs_store
from shared.store import overlaps as overlaps_store
from shared.store import runs as runs_store
from shared.vocabulary import RunStatus
from tests.support.runtime import (
    Control,
    now,
    overlaps,
    slots_run_more_than_once,
    spawn_worker,
    stop_process,
    wait_until,
)

pytestmark = pytest.mark.integration
Amqp = aio_pika.abc.AbstractRobustConnection


async def publish(amqp: Amqp, scope: str, job_id: str) -> None:
    channel = await amqp.channel()
    try:
        exchange = await channel.get_exchange(topology.exchange_name(scope))
        body = json.dumps({"job_id": job_id}).encode()
        await exchange.publish(aio_pika.Message(body), routing_key=topology.work_queue_name(scope, job_id))
    finally:
        await channel.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_cancel_request_from_another_process_stops_the_run_and_its_process_group(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str, tmp_path: Path
) -> None:
    """The running worker (a process of its own) learns of a request made on another connection: it kills the
    handler's child process group, records the run as cancelled with the reason, and gives the run lock back."""
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    pid_file = tmp_path / "child.pid"
    await control.seed(job_id="cx", interval_seconds=3600, overlap="cancel_other",
                       default_params={"child_sec": 120, "pid_file": str(pid_file)})  # fmt: skip
    proc = spawn_worker(scope, ["cx"], settings)
    try:
        await asyncio.sleep(2.0)  # the worker comes up and consumes
        await publish(amqp, scope, "cx")

        async def running() -> bool:
            return pid_file.exists() and any(r["status"] == "running" for r in await control.runs("cx"))

        await wait_until(running, 30, "the run and its child process")
        (run,) = [r for r in await control.runs("cx") if r["status"] == "running"]
        child = int(pid_file.read_text())
        assert alive(child)
        by = uuid.uuid4()
        async with pool.acquire() as conn:  # what a worker holding a newer slot does, from this process
            asked = await overlaps_store.request_cancel(conn, scope, "cx", by, "slot X needed the lock")
        assert asked == run["run_id"]

        async def cancelled() -> bool:
            return any(r["status"] == "cancelled" for r in await control.runs("cx"))

        await wait_until(cancelled, 20, "the run to be cancelled")
    finally:
        stop_process(proc)
    (done,) = await control.runs("cx")
    assert done["error"] == f"cancelled: slot X needed the lock (run {by})"
    assert done["finished_at"] is not None and done["duration_ms"] < 60_000
    assert not alive(child)  # the whole group went, not just the handler
    assert await pool.fetchval("SELECT count(*) FROM scheduler.run_cancels WHERE scope = $1", scope) == 0
    job = await control.job("cx")
    assert job["last_status"] == "cancelled"
    assert job["consecutive_failures"] == 0  # cancelled for a newer slot is no failure


async def test_cancel_watch_sees_a_request_made_before_it_listened_and_ignores_other_runs(
    pool: asyncpg.Pool, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    async with pool.acquire() as conn:
        await jobs_store.upsert_job(conn, scope, load_definition({"job_id": "a", "interval_seconds": 60}))
        mine = runs_store.NewRun(uuid.uuid4(), scope, "a", None, "manual", now(), 1, {})
        other = runs_store.NewRun(uuid.uuid4(), scope, "a", None, "manual", now() + timedelta(seconds=1), 1, {})
        assert await runs_store.claim(conn, mine, RunStatus.RUNNING, "w")
        assert await runs_store.claim(conn, other, RunStatus.BUFFERED, "w")
        # a notification for another run does nothing; the watch ends with the work done
        async with pool.acquire() as asker, CancelWatch(conn, mine.run_id, enabled=True) as watch:
            await asker.execute("SELECT pg_notify($1, $2)", overlaps_store.CANCEL_CHANNEL, str(other.run_id))
            assert await watch.run(asyncio.sleep(0.3, "done")) == "done"
            assert not watch.requested
        # asked before the watch began: the row is seen, the work is cancelled at once
        assert await overlaps_store.request_cancel(conn, scope, "a", other.run_id, "early") == mine.run_id
        async with CancelWatch(conn, mine.run_id, enabled=True) as watch:
            with pytest.raises(asyncio.CancelledError):
                await watch.run(asyncio.sleep(30))
            assert watch.stopped_by_request()
            assert await watch.reason() == f"cancelled: early (run {other.run_id})"
        # a watch not enabled (every other overlap policy) never cancels
        async with CancelWatch(conn, mine.run_id, enabled=False) as watch:
            assert await watch.run(asyncio.sleep(0, "plain")) == "plain"


async def test_cancel_other_across_two_worker_processes_never_overlaps(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    """Every 2 s a slot; each run would take 30 s: each new slot cancels the run in its way and runs after it
    stopped, wherever the two land."""
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="cx", interval_seconds=2, overlap="cancel_other", misfire_grace_sec=20,
                       default_params={"sleep_sec": 30})  # fmt: skip
    workers = [spawn_worker(scope, ["cx"], settings) for _ in range(2)]

    def events(proc: subprocess.Popen[bytes], name: str) -> int:
        return Path(proc.log_path).read_text().count(f'"event": "{name}"')  # type: ignore[attr-defined]

    def across() -> bool:
        """A request sent by one process stopped a run in the other."""
        asked = [events(p, "run.cancel_requested") for p in workers]
        stopped = [events(p, "run.cancelled_by_request") for p in workers]
        return (asked[0] > 0 and stopped[1] > 0) or (asked[1] > 0 and stopped[0] > 0)

    async def cancelled(at_least: int) -> bool:
        rows = await control.runs("cx")
        return across() and sum(1 for r in rows if r["status"] == "cancelled") >= at_least

    try:
        await wait_until(lambda: cancelled(4), 90, "four runs cancelled, one from the other process")
    finally:
        for proc in workers:
            stop_process(proc)
    rows = await control.runs("cx")
    executed = [r for r in rows if r["started_at"] is not None]
    assert overlaps(executed) == []
    assert slots_run_more_than_once(rows) == []
    stopped = sorted((r for r in rows if r["status"] == "cancelled"), key=lambda r: r["scheduled_for"])
    assert all("overlap=cancel_other" in r["error"] and r["duration_ms"] < 20_000 for r in stopped)
    # each cancelled run was followed by the run of a later slot, started once it had stopped (the last one's may
    # not have started when the workers were stopped)
    table = "\n".join(
        f"{r['scheduled_for']:%H:%M:%S.%f} #{r['attempt']} {r['status']} {r['worker']}"
        f" {r['started_at']} {r['finished_at']}"
        for r in rows
    )  # what a failure prints: the order the slots ran in
    for run in stopped[:-1]:
        after = [r for r in executed if r["scheduled_for"] > run["scheduled_for"]]
        assert after and min(r["started_at"] for r in after) >= run["finished_at"], table


async def test_buffer_all_queues_up_to_the_bound_runs_in_slot_order_and_records_the_rest(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    """Every second a slot, each run 1.5 s, at most 2 waiting: slots queue, run one after another in slot order,
    and those beyond the bound are skipped with the reason, on two worker processes."""
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="ba", interval_seconds=1, overlap="buffer_all", buffer_max=2, misfire_grace_sec=60,
                       default_params={"sleep_sec": 1.5})  # fmt: skip
    workers = [spawn_worker(scope, ["ba"], settings) for _ in range(2)]
    most_waiting = 0

    async def enough() -> bool:
        nonlocal most_waiting
        rows = await control.runs("ba")
        most_waiting = max(most_waiting, sum(1 for r in rows if r["status"] == "buffered"))
        full = [r for r in rows if r["status"] == "skipped_locked" and "buffer full" in (r["error"] or "")]
        return len(full) >= 3 and sum(1 for r in rows if r["status"] == "succeeded") >= 5

    try:
        await wait_until(enough, 90, "five runs and three slots beyond the bound")
    finally:
        for proc in workers:
            stop_process(proc)
    rows = await control.runs("ba")
    executed = [r for r in rows if r["started_at"] is not None]
    assert overlaps(executed) == []
    assert slots_run_more_than_once(rows) == []
    assert 1 <= most_waiting <= 2
    # one after another, in slot order
    by_slot = sorted(executed, key=lambda r: r["scheduled_for"])
    assert all(a["started_at"] < b["started_at"] for a, b in pairwise(by_slot))
    assert any((r["started_at"] - r["scheduled_for"]).total_seconds() > 1.0 for r in executed)  # some waited
    skipped = [r for r in rows if r["status"] == "skipped_locked"]
    assert all(r["error"] == "buffer full: 2 slots wait for the lock already (overlap=buffer_all)" for r in skipped)
