"""The run protocol in one worker process: the chain goes on, runs are recorded, retries, timeouts, parking."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from itertools import pairwise

import aio_pika
import asyncpg
import pytest

from shared import topology
from shared.settings import Settings
from tests.support.probe import ProbeParams, probe, probe_sync
from tests.support.runtime import Control, fast_settings, running_worker, slots_run_more_than_once, wait_until

pytestmark = pytest.mark.integration


async def test_interval_chain_runs_every_slot_once(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="tick", interval_seconds=1)
    async with running_worker(fast_settings(settings, scope), {"tick": (probe, ProbeParams)}):
        await wait_until(lambda: _count(control, "tick", "succeeded", 4), 15, "4 successful runs")
    rows = await control.runs("tick")
    slots = [r["scheduled_for"] for r in rows if r["status"] == "succeeded"]
    assert all((b - a).total_seconds() == pytest.approx(1.0) for a, b in pairwise(slots))
    assert slots_run_more_than_once(rows) == []
    assert all(r["started_at"] >= r["scheduled_for"] for r in rows if r["started_at"])
    assert all(r["lateness_ms"] is not None for r in rows if r["status"] == "succeeded")
    job = await control.job("tick")
    assert job["last_status"] == "succeeded" and job["consecutive_failures"] == 0
    assert job["next_due_at"] > rows[-1]["scheduled_for"]


async def test_failing_job_retries_with_growing_delays_then_fails(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(
        job_id="flaky",
        cron_expr="0 0 1 1 *",
        max_attempts=3,
        retry_backoff_sec=0.4,
        default_params={"fail_until_attempt": 99},
    )
    async with running_worker(fast_settings(settings, scope), {"flaky": (probe, ProbeParams)}):
        await _publish_manual(amqp, scope, "flaky", {})
        await wait_until(lambda: _count(control, "flaky", "failed", 3), 15, "3 failed attempts")
        await asyncio.sleep(1.0)
    rows = await control.runs("flaky")
    assert [r["attempt"] for r in rows] == [1, 2, 3]
    assert {r["trigger_source"] for r in rows[1:]} == {"retry"}
    gaps = [(b["started_at"] - a["finished_at"]).total_seconds() for a, b in pairwise(rows)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # equal jitter: at least half of 0.4 s, then of 0.8 s
    job = await control.job("flaky")
    assert job["last_status"] == "failed" and job["consecutive_failures"] == 3


async def test_timeout_is_recorded_and_sync_handler_too(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="slow", cron_expr="0 0 1 1 *", timeout_sec=0.5, default_params={"sleep_sec": 5})
    await control.seed(job_id="slowsync", cron_expr="0 0 1 1 *", timeout_sec=0.5, default_params={"sleep_sec": 1.5})
    handlers = {"slow": (probe, ProbeParams), "slowsync": (probe_sync, ProbeParams)}
    async with running_worker(fast_settings(settings, scope), handlers):
        await _publish_manual(amqp, scope, "slow", {})
        await _publish_manual(amqp, scope, "slowsync", {})
        await wait_until(lambda: _count(control, "slow", "timed_out", 1), 10, "slow timed out")
        await wait_until(lambda: _count(control, "slowsync", "timed_out", 1), 10, "slowsync timed out")
    (row,) = await control.runs("slow")
    assert 400 <= row["duration_ms"] < 2000 and "timed out" in row["error"]


async def test_hand_published_job_id_gives_one_manual_run_with_default_params(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str, tmp_path
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="hand", cron_expr="0 0 1 1 *", default_params={"mark_dir": str(tmp_path), "action": "x"})
    async with running_worker(fast_settings(settings, scope), {"hand": (probe, ProbeParams)}):
        channel = await amqp.channel()
        exchange = await channel.get_exchange(topology.exchange_name(scope))
        await exchange.publish(
            aio_pika.Message(b'{"job_id": "hand"}'), routing_key=topology.work_queue_name(scope, "hand")
        )
        await wait_until(lambda: _count(control, "hand", "succeeded", 1), 10, "one manual run")
        await asyncio.sleep(0.5)
    rows = await control.runs("hand")
    assert len(rows) == 1 and rows[0]["trigger_source"] == "manual" and rows[0]["epoch"] is None
    marks = list(tmp_path.iterdir())
    assert len(marks) == 1 and marks[0].read_text().split()[:2] == ["hand", "x"]


async def test_a_changed_definition_reaches_the_next_runs(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str, tmp_path
) -> None:
    """A worker keeps the job rows it read (protocol.cached_job); after a re-seed that changes only default_params,
    every later slot must run on the new row, never the kept one."""
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    first = {"mark_dir": str(tmp_path), "action": "first"}
    await control.seed(job_id="tick", interval_seconds=1, default_params=first)
    async with running_worker(fast_settings(settings, scope), {"tick": (probe, ProbeParams)}):
        await wait_until(lambda: _count(control, "tick", "succeeded", 2), 15, "2 runs on the first params")
        await control.seed(job_id="tick", interval_seconds=1, default_params={**first, "action": "second"})
        changed_at = datetime.now(UTC)  # a slot after this is claimed after the change committed
        done_before = sum(1 for r in await control.runs("tick") if r["status"] == "succeeded")
        await wait_until(lambda: _count(control, "tick", "succeeded", done_before + 3), 15, "3 runs after the change")
    rows = [r for r in await control.runs("tick") if r["status"] == "succeeded"]
    after = [r for r in rows if r["scheduled_for"] > changed_at]
    actions = {str(r["run_id"]): (tmp_path / str(r["run_id"])).read_text().split()[1] for r in after}
    assert len(actions) >= 3 and set(actions.values()) == {"second"}, actions
    assert slots_run_more_than_once(rows) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe garbage", "encoding"),
        (b"not json", "not_json"),
        (b'{"job_id": "no such job"}', "schema"),
        (b'{"job_id": "ghost"}', "unknown_job"),
        (b'{"job_id": "hand", "attempt": -1}', "schema"),
        (b"[1, 2]", "schema"),
    ],
)
async def test_bad_messages_are_parked_with_a_reason_and_the_worker_goes_on(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    body: bytes,
    reason: str,
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="hand", cron_expr="0 0 1 1 *")
    async with running_worker(fast_settings(settings, scope), {"hand": (probe, ProbeParams)}):
        channel = await amqp.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(body), routing_key=topology.work_queue_name(scope, "hand")
        )
        dead = await channel.declare_queue(topology.dead_name(scope), durable=True)
        parked = await _get(dead, 10)
        assert parked.body == body and parked.headers["x-park-reason"] == reason
        await _publish_manual(amqp, scope, "hand", {})
        await wait_until(lambda: _count(control, "hand", "succeeded", 1), 10, "the worker still runs jobs")


async def _get(queue: aio_pika.abc.AbstractQueue, timeout: float) -> aio_pika.abc.AbstractIncomingMessage:
    async def got() -> bool:
        nonlocal message
        message = await queue.get(no_ack=True, fail=False)
        return message is not None

    message = None
    await wait_until(got, timeout, f"a message on {queue.name}")
    assert message is not None
    return message


async def _publish_manual(amqp: aio_pika.abc.AbstractRobustConnection, scope: str, job_id: str, params: dict) -> None:
    channel = await amqp.channel()
    exchange = await channel.get_exchange(topology.exchange_name(scope))
    body = json.dumps({"job_id": job_id, "params": params}).encode()
    await exchange.publish(aio_pika.Message(body), routing_key=topology.work_queue_name(scope, job_id))
    await channel.close()


async def _count(control: Control, job_id: str, status: str, at_least: int) -> bool:
    rows = await control.runs(job_id)
    return sum(1 for r in rows if r["status"] == status) >= at_least
