"""The invariants of DESIGN section 11, on the real servers: one chain, no overlap, survival of faults."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from shared import chain, topology, watchdog
from shared.publisher import Publisher
from shared.settings import Settings
from shared.store import jobs as jobs_store
from tests.support.faults import TcpForwarder, close_rabbitmq_connections, database_outage
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import (
    Control,
    fast_settings,
    now,
    overlaps,
    running_worker,
    slots_run_more_than_once,
    spawn_worker,
    stop_process,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
Amqp = aio_pika.abc.AbstractRobustConnection


async def succeeded(control: Control, job_id: str, at_least: int, after: datetime | None = None) -> bool:
    rows = await control.runs(job_id)
    return sum(1 for r in rows if r["status"] == "succeeded" and (after is None or r["started_at"] > after)) >= at_least


async def delay_queue_depth(amqp: Amqp, scope: str, job_id: str) -> int:
    channel = await amqp.channel()
    try:
        queue = await channel.declare_queue(topology.delay_queue_name(scope, job_id), passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def test_second_seed_leaves_one_chain(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    await control.seed(job_id="once", interval_seconds=1)
    await control.seed(job_id="once", interval_seconds=1)
    async with running_worker(fast_settings(settings, cleanup_scope), {"once": (probe, ProbeParams)}):
        await wait_until(lambda: succeeded(control, "once", 2), 15, "two runs")
        await control.seed(job_id="once", interval_seconds=1)  # a third seed while the chain runs
        await wait_until(lambda: succeeded(control, "once", 5), 15, "five runs")
        assert await delay_queue_depth(amqp, cleanup_scope, "once") <= 1
    rows = await control.runs("once")
    assert slots_run_more_than_once(rows) == []


async def test_duplicate_message_for_a_claimed_slot_is_dropped_without_a_repost(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    await control.seed(job_id="dupe", interval_seconds=2)
    async with running_worker(fast_settings(settings, cleanup_scope), {"dupe": (probe, ProbeParams)}):
        await wait_until(lambda: succeeded(control, "dupe", 1), 15, "a first run")
        first = next(r for r in await control.runs("dupe") if r["status"] == "succeeded")
        copy = {
            "job_id": "dupe",
            "trigger_source": "scheduler",
            "epoch": first["epoch"],
            "scheduled_for": first["scheduled_for"].isoformat(),
        }
        channel = await amqp.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(json.dumps(copy).encode()), routing_key=topology.work_queue_name(cleanup_scope, "dupe")
        )
        await asyncio.sleep(1.0)
        assert await delay_queue_depth(amqp, cleanup_scope, "dupe") <= 1
        await wait_until(lambda: succeeded(control, "dupe", 3), 15, "the chain going on")
    rows = await control.runs("dupe")
    assert [r["scheduled_for"] for r in rows].count(first["scheduled_for"]) == 1
    assert slots_run_more_than_once(rows) == []


async def test_pause_ends_the_chain_and_resume_restarts_it(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    await control.seed(job_id="pp", interval_seconds=1)
    async with running_worker(fast_settings(settings, cleanup_scope), {"pp": (probe, ProbeParams)}):
        await wait_until(lambda: succeeded(control, "pp", 2), 15, "two runs")
        await control.pause("pp")
        paused_at = now()
        await asyncio.sleep(3.0)
        after_pause = [r for r in await control.runs("pp") if r["scheduled_for"] > paused_at + timedelta(seconds=1)]
        assert after_pause == []  # at most the slot in flight when pausing ran; nothing a full interval later
        assert await delay_queue_depth(amqp, cleanup_scope, "pp") == 0
        await control.resume("pp")
        resumed_at = now()
        await wait_until(lambda: succeeded(control, "pp", 2, after=resumed_at), 15, "runs after resume")
    assert slots_run_more_than_once(await control.runs("pp")) == []


async def test_changing_a_daily_cron_to_every_second_takes_effect_at_once(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    await control.seed(job_id="retime", cron_expr="0 0 * * *")
    async with running_worker(fast_settings(settings, cleanup_scope), {"retime": (probe, ProbeParams)}):
        changed_at = now()
        result = await control.change("retime", interval_seconds=1)
        assert result.first_slot is not None and result.first_slot - changed_at <= timedelta(seconds=2)
        await wait_until(lambda: succeeded(control, "retime", 2), 15, "runs every second")
        assert await delay_queue_depth(amqp, cleanup_scope, "retime") <= 1
    rows = [r for r in await control.runs("retime") if r["status"] == "succeeded"]
    assert rows[0]["scheduled_for"] - changed_at <= timedelta(seconds=2)  # the old midnight message did not block it


async def test_no_overlap_across_two_worker_processes(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="long", interval_seconds=1, default_params={"sleep_sec": 2.2})
    await control.seed(job_id="g1", interval_seconds=1, lock_group="grp", default_params={"sleep_sec": 1.3})
    await control.seed(job_id="g2", interval_seconds=1, lock_group="grp", default_params={"sleep_sec": 1.3})
    workers = [spawn_worker(scope, ["long", "g1", "g2"], settings) for _ in range(2)]
    try:
        await wait_until(lambda: succeeded(control, "long", 3), 40, "three long runs")
        await wait_until(lambda: _executed(control, ["g1", "g2"], 4), 40, "four group runs")
    finally:
        for proc in workers:
            stop_process(proc)
    long_rows = await control.runs("long")
    group_rows = [*await control.runs("g1"), *await control.runs("g2")]
    assert overlaps(long_rows) == []
    assert overlaps(group_rows) == []
    assert any(r["status"] == "skipped_locked" for r in long_rows)
    assert len({r["worker"] for r in [*long_rows, *group_rows] if r["started_at"]}) == 2  # both processes ran jobs
    assert slots_run_more_than_once([*long_rows, *group_rows]) == []


async def _executed(control: Control, job_ids: list[str], at_least: int) -> bool:
    rows = [r for j in job_ids for r in await control.runs(j)]
    return sum(1 for r in rows if r["status"] == "succeeded") >= at_least


async def test_kill_mid_run_marks_abandoned_and_chain_continues(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="crash", interval_seconds=2, default_params={"sleep_sec": 1.5})
    workers = [spawn_worker(scope, ["crash"], settings) for _ in range(2)]
    try:
        await wait_until(lambda: succeeded(control, "crash", 1), 30, "a first run")

        async def running_row() -> bool:
            return any(r["status"] == "running" for r in await control.runs("crash"))

        await wait_until(running_row, 15, "a run in progress")
        victim = next(r for r in await control.runs("crash") if r["status"] == "running")
        pid = await pool.fetchval("SELECT pid FROM scheduler.workers WHERE worker_id = $1", victim["worker"])
        os.kill(pid, signal.SIGKILL)
        killed_at = now()

        async def abandoned() -> bool:
            row = await pool.fetchrow("SELECT status FROM scheduler.job_runs WHERE run_id = $1", victim["run_id"])
            return row["status"] == "abandoned"

        await wait_until(abandoned, 20, "the killed run marked abandoned")
        await wait_until(lambda: succeeded(control, "crash", 3, after=killed_at), 30, "three runs after the kill")
    finally:
        for proc in workers:
            stop_process(proc, signal.SIGKILL)
    rows = await control.runs("crash")
    after = [r["scheduled_for"] for r in rows if r["scheduled_for"] > victim["scheduled_for"] and r["attempt"] == 1]
    gaps = {(b - a).total_seconds() for a, b in pairwise(after)}
    assert gaps <= {2.0}, f"a slot after the kill was lost: {after}"
    assert after and after[0] - victim["scheduled_for"] == timedelta(seconds=2)
    assert slots_run_more_than_once(rows) == []


async def test_worker_reconnects_after_the_broker_drops_its_connections(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    await control.seed(job_id="rc", interval_seconds=1)
    async with running_worker(fast_settings(settings, cleanup_scope), {"rc": (probe, ProbeParams)}) as worker:
        await wait_until(lambda: succeeded(control, "rc", 2), 15, "two runs")
        closed = await asyncio.to_thread(close_rabbitmq_connections, worker.worker_id)
        assert closed >= 1
        dropped_at = now()
        await wait_until(lambda: succeeded(control, "rc", 3, after=dropped_at), 40, "runs after the reconnect")
    assert slots_run_more_than_once(await control.runs("rc")) == []


async def test_database_outage_never_runs_without_the_lock_and_the_chain_survives(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    await control.seed(job_id="pg", interval_seconds=1, default_params={"sleep_sec": 0.6})
    async with running_worker(fast_settings(settings, cleanup_scope), {"pg": (probe, ProbeParams)}) as worker:
        await wait_until(lambda: succeeded(control, "pg", 2), 15, "two runs")
        killed = await database_outage(pool, worker.worker_id, 5.0)
        assert killed >= 1
        back_at = now()
        await wait_until(lambda: succeeded(control, "pg", 3, after=back_at), 60, "runs after the outage")
    rows = await control.runs("pg")
    assert overlaps([r for r in rows if r["status"] in ("succeeded", "running")]) == []
    assert slots_run_more_than_once(rows) == []


async def test_late_chain_message_is_a_misfire_and_the_next_slot_is_in_the_future(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    seeded = await control.seed(job_id="late", interval_seconds=60, misfire_grace_sec=1)
    channel = await amqp.channel()
    await (await channel.declare_queue(topology.delay_queue_name(scope, "late"), passive=True)).purge()
    slot = now().replace(microsecond=0) - timedelta(seconds=30)
    late = {"job_id": "late", "trigger_source": "scheduler", "epoch": seeded.epoch, "scheduled_for": slot.isoformat()}
    async with running_worker(fast_settings(settings, scope), {"late": (probe, ProbeParams)}):
        await channel.default_exchange.publish(
            aio_pika.Message(json.dumps(late).encode()), routing_key=topology.work_queue_name(scope, "late")
        )

        async def skipped() -> bool:
            return any(r["status"] == "skipped_misfire" for r in await control.runs("late"))

        await wait_until(skipped, 15, "a skipped_misfire run")
    job = await control.job("late")
    assert job["next_due_at"] > now()
    assert await delay_queue_depth(amqp, scope, "late") == 1
    rows = await control.runs("late")
    assert [r["status"] for r in rows] == ["skipped_misfire"] * len(rows) and rows[0]["scheduled_for"] == slot
    # the slot ledger: slots of the grid between the late slot and now were jumped over, and say so
    assert all(r["error"].startswith("jumped over") for r in rows[1:])


async def test_worker_started_before_the_broker_waits_then_works(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="early", interval_seconds=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"amqp://guest:guest@127.0.0.1:{port}/"
    proc = spawn_worker(scope, ["early"], settings, AMQP_URL=url)
    forwarder = TcpForwarder(port, "127.0.0.1", 5672)
    try:
        await asyncio.sleep(4.0)
        assert proc.poll() is None, "the worker exited while the broker was unreachable"
        assert await control.runs("early") == []
        await forwarder.start()
        await wait_until(lambda: succeeded(control, "early", 2), 40, "runs once the broker answers")
    finally:
        stop_process(proc)
        await forwarder.stop()
    events = [json.loads(line) for line in proc.log_path.read_text().splitlines() if line.startswith("{")]
    waits = [e for e in events if e.get("event") == "dependency.waiting" and e.get("dependency") == "rabbitmq"]
    assert len(waits) >= 2 and all("guest:guest" not in json.dumps(e) for e in waits)  # logged, password redacted


async def test_timeout_kills_the_whole_subprocess_group(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str, tmp_path: Path
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    pid_file = tmp_path / "child.pid"
    await control.seed(
        job_id="child",
        interval_seconds=3600,
        timeout_sec=1,
        default_params={"child_sec": 60, "pid_file": str(pid_file)},
    )
    async with running_worker(fast_settings(settings, cleanup_scope), {"child": (probe, ProbeParams)}):
        channel = await amqp.channel()
        exchange = await channel.get_exchange(topology.exchange_name(cleanup_scope))
        await exchange.publish(
            aio_pika.Message(b'{"job_id": "child"}'), routing_key=topology.work_queue_name(cleanup_scope, "child")
        )

        async def timed_out() -> bool:
            return any(r["status"] == "timed_out" for r in await control.runs("child"))

        await wait_until(timed_out, 20, "the run timed out")
    child = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


async def test_sigterm_lets_short_runs_finish_and_records_cancelled_long_ones(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="short", interval_seconds=3600, default_params={"sleep_sec": 1.0})
    await control.seed(job_id="endless", interval_seconds=3600, default_params={"sleep_sec": 60})
    proc = spawn_worker(scope, ["short", "endless"], settings, SHUTDOWN_GRACE_SEC="2")
    try:
        channel = await amqp.channel()
        exchange = await channel.get_exchange(topology.exchange_name(scope))

        async def both_running() -> bool:
            rows = [*await control.runs("short"), *await control.runs("endless")]
            return sum(1 for r in rows if r["status"] == "running") == 2

        await asyncio.sleep(2.0)  # let the worker come up and consume
        for job in ("endless", "short"):
            body = json.dumps({"job_id": job}).encode()
            await exchange.publish(aio_pika.Message(body), routing_key=topology.work_queue_name(scope, job))
        await wait_until(both_running, 20, "both runs in progress")
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        stop_process(proc, signal.SIGKILL)
    assert code == 0
    (short,) = await control.runs("short")
    (endless,) = await control.runs("endless")
    assert short["status"] == "succeeded"
    assert endless["status"] == "abandoned" and "shut down" in endless["error"]


async def test_buffer_one_waits_for_the_lock_then_runs(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    await control.seed(
        job_id="buf", interval_seconds=2, overlap="buffer_one", misfire_grace_sec=30, default_params={"sleep_sec": 2.5}
    )
    async with running_worker(fast_settings(settings, cleanup_scope), {"buf": (probe, ProbeParams)}):
        await wait_until(lambda: succeeded(control, "buf", 3), 40, "three runs")
    rows = await control.runs("buf")
    executed = [r for r in rows if r["started_at"] is not None]
    assert overlaps(executed) == []
    assert any((r["started_at"] - r["scheduled_for"]).total_seconds() > 0.3 for r in executed[1:])  # one waited
    assert slots_run_more_than_once(rows) == []


async def test_startup_message_once_per_service_boot_not_per_replica(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="boot", cron_expr="0 0 1 1 *", run_on_startup=True)
    workers = [spawn_worker(scope, ["boot"], settings) for _ in range(2)]
    try:
        await wait_until(lambda: succeeded(control, "boot", 1), 30, "the startup run")
        await asyncio.sleep(3.0)
    finally:
        for proc in workers:
            stop_process(proc)
    rows = await control.runs("boot")
    assert [r["trigger_source"] for r in rows] == ["startup"]
    assert all(r["scheduled_for"].tzinfo == UTC or r["scheduled_for"].utcoffset() == timedelta(0) for r in rows)


async def test_the_watchdog_does_not_reseed_a_chain_that_moved_on_since_it_listed_the_jobs(
    pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    """The watchdog lists the jobs at the start of a pass and may act on a row that is old by then. A reseed of a
    chain that was extended meanwhile would post a second message for the slot the live chain carries; so the
    reseed decides again on the row as committed, under the chain lock, and leaves such a chain alone."""
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="tick", interval_seconds=3600)
    channel = await amqp.channel(publisher_confirms=True, on_return_raises=True)
    try:
        publisher = Publisher(channel, scope)
        async with pool.acquire() as conn:
            row = await jobs_store.get_job(conn, scope, "tick")
            assert row is not None and row.next_due_at is not None  # in an hour
            at = now()
            lost_after = timedelta(seconds=60)
            listed = dataclasses.replace(row, next_due_at=at - timedelta(minutes=10))  # what an old list said
            assert watchdog.lost_chains([listed], {"tick"}, at, lost_after) == [listed]
            assert await chain.replace_if_overdue(conn, channel, publisher, listed, at, at - lost_after) is None
            assert (await control.job("tick"))["epoch"] == listed.epoch  # untouched
            assert await delay_queue_depth(amqp, scope, "tick") == 1

            await conn.execute(  # now the chain is really lost: its next message was due ten minutes ago
                "UPDATE scheduler.jobs SET next_due_at = $3 WHERE scope = $1 AND job_id = $2",
                scope, "tick", at - timedelta(minutes=10),
            )  # fmt: skip
            replaced = await chain.replace_if_overdue(conn, channel, publisher, listed, at, at - lost_after)
            assert replaced is not None and replaced[0] == listed.epoch + 1 and replaced[1] is not None
            assert await delay_queue_depth(amqp, scope, "tick") == 1  # the old message purged, one new one
    finally:
        await channel.close()
