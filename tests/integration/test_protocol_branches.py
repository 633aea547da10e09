"""The protocol's rarer branches, each provoked on purpose against the real servers: a stale epoch, a wrong
queue, the take-over of a dead owner's claim, a chain carried over from an older epoch, a backfill that revives a
skipped slot, a buffered slot that gives up, and `overlap = "allow_all"`."""

from __future__ import annotations

from datetime import timedelta

import aio_pika
import asyncpg
import pytest

from shared import topology
from shared.locks import run_lock_keys, watchdog_lock_key
from shared.messages import JobMessage, backfill_message, chain_message
from shared.settings import Settings
from shared.store import runs
from shared.vocabulary import DropReason, RunStatus, TriggerSource
from shared.worker import Worker
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import Control, fast_settings, now, overlaps, running_worker, wait_until
from tests.support.service_process import publish_to_work

pytestmark = [pytest.mark.integration, pytest.mark.slow]
Amqp = aio_pika.abc.AbstractRobustConnection
HOUR = 3600


async def first_parked(amqp: Amqp, scope: str, timeout: float = 15) -> tuple[str, str]:
    """The reason and detail headers of the first message to reach the scope's parking queue (taken off it)."""
    channel = await amqp.channel()
    found: list[tuple[str, str]] = []
    try:
        dead = await channel.declare_queue(topology.dead_name(scope), passive=True)

        async def parked() -> bool:
            message = await dead.get(no_ack=True, fail=False)
            if message is not None:
                found.append((str(message.headers["x-park-reason"]), str(message.headers["x-park-detail"])))
            return bool(found)

        await wait_until(parked, timeout, "a parked message")
    finally:
        await channel.close()
    return found[0]


def dropped(worker: Worker, scope: str, reason: DropReason) -> float:
    registry = worker.metrics.registry
    assert registry is not None
    value = registry.get_sample_value("scheduler_messages_dropped_total", {"scope": scope, "reason": reason.value})
    return value or 0.0


async def row_of(pool: asyncpg.Pool, scope: str, job_id: str, slot: object) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT * FROM scheduler.job_runs WHERE scope = $1 AND job_id = $2 AND scheduled_for = $3 AND attempt = 1",
        scope,
        job_id,
        slot,
    )


async def test_stale_epoch_message_is_dropped_without_a_run(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    seeded = await control.seed(job_id="hourly", interval_seconds=HOUR)
    slot = now().replace(microsecond=0) - timedelta(seconds=1)
    async with running_worker(fast_settings(settings, scope), {"hourly": (probe, ProbeParams)}) as worker:
        await publish_to_work(amqp, scope, "hourly", chain_message(scope, "hourly", seeded.epoch - 1, slot, now()))
        await wait_until(lambda: _true(dropped(worker, scope, DropReason.STALE_EPOCH) == 1), 15, "the drop")
    assert await row_of(pool, scope, "hourly", slot) is None


async def test_wrong_queue_message_is_parked(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="left", interval_seconds=HOUR)
    await control.seed(job_id="right", interval_seconds=HOUR)
    handlers = {"left": (probe, ProbeParams), "right": (probe, ProbeParams)}
    async with running_worker(fast_settings(settings, scope), handlers):
        await publish_to_work(amqp, scope, "right", JobMessage(job_id="left"))  # left's message on right's queue
        reason, detail = await first_parked(amqp, scope)
        assert reason == "wrong_queue" and "served by queue 'left'" in detail
    assert [r for r in await control.runs("left") if r["trigger_source"] == "manual"] == []


async def test_take_over_of_a_dead_owners_claim(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    """A slot claimed by a worker that died before running it: the message's copy takes the claim over and runs."""
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    seeded = await control.seed(job_id="orphan", interval_seconds=HOUR)
    slot = now().replace(microsecond=0) - timedelta(seconds=1)
    message = chain_message(scope, "orphan", seeded.epoch, slot, now())
    # the scope's active watchdog is elsewhere: it would otherwise mark the claim abandoned before the copy lands
    watchdog_elsewhere = await pool.acquire()
    try:
        assert await watchdog_elsewhere.fetchval("SELECT pg_try_advisory_lock($1)", watchdog_lock_key(scope))
        claim = runs.NewRun(message.run_id, scope, "orphan", seeded.epoch, "scheduler", slot, 1, {})
        assert await runs.claim(watchdog_elsewhere, claim, RunStatus.CLAIMED, "orphan-worker-that-died")
        async with running_worker(fast_settings(settings, scope), {"orphan": (probe, ProbeParams)}) as worker:
            await publish_to_work(amqp, scope, "orphan", message)

            async def ran() -> bool:
                row = await row_of(pool, scope, "orphan", slot)
                return row is not None and row["status"] == RunStatus.SUCCEEDED

            await wait_until(ran, 20, "the taken-over run")
    finally:
        await watchdog_elsewhere.execute("SELECT pg_advisory_unlock_all()")
        await pool.release(watchdog_elsewhere)
    row = await row_of(pool, scope, "orphan", slot)
    assert row is not None and row["worker"] == worker.worker_id and row["next_posted_for"] is not None


async def test_carried_over_chain_posts_the_next_slot(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    """A reseed raced the old chain for one slot and the old epoch's run took it: the new chain's message for that
    slot finds the slot done, and still carries the chain on to the next slot."""
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    seeded = await control.seed(job_id="carry", interval_seconds=2)
    await control.pause("carry")  # no chain of its own while the stage is set
    resumed = await control.resume("carry")
    slot = now().replace(microsecond=0) - timedelta(seconds=1)
    async with pool.acquire() as conn:
        old = runs.NewRun(
            chain_message(scope, "carry", seeded.epoch, slot, now()).run_id, scope, "carry", seeded.epoch,
            "scheduler", slot, 1, {},
        )  # fmt: skip
        assert await runs.claim(conn, old, RunStatus.SKIPPED_LOCKED, "old-chain-worker")
    channel = await amqp.channel()
    try:  # the resumed chain's own first message goes: only the message below may carry the chain on
        await (await channel.get_queue(topology.delay_queue_name(scope, "carry"), ensure=False)).purge()
    finally:
        await channel.close()
    async with running_worker(fast_settings(settings, scope), {"carry": (probe, ProbeParams)}):
        await publish_to_work(amqp, scope, "carry", chain_message(scope, "carry", resumed.epoch, slot, now()))

        async def chain_went_on() -> bool:
            rows = await control.runs("carry")
            later = [r for r in rows if r["scheduled_for"] > slot and r["status"] == RunStatus.SUCCEEDED]
            return any(r["epoch"] == resumed.epoch for r in later)  # not a reseed's (it bumps the epoch)

        await wait_until(chain_went_on, 20, "a run of a later slot")


async def test_backfill_revives_a_skipped_slot(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    seeded = await control.seed(job_id="gap", interval_seconds=HOUR)
    slot = now().replace(microsecond=0) - timedelta(minutes=30)
    message = backfill_message(scope, "gap", seeded.epoch, slot, now())
    async with pool.acquire() as conn:
        skipped = runs.NewRun(message.run_id, scope, "gap", seeded.epoch, "scheduler", slot, 1, {})
        assert await runs.claim(conn, skipped, RunStatus.SKIPPED_MISFIRE, "some-worker")
    async with running_worker(fast_settings(settings, scope), {"gap": (probe, ProbeParams)}):
        await publish_to_work(amqp, scope, "gap", message)

        async def revived() -> bool:
            row = await row_of(pool, scope, "gap", slot)
            return row is not None and row["status"] == RunStatus.SUCCEEDED

        await wait_until(revived, 20, "the revived slot's run")
    row = await row_of(pool, scope, "gap", slot)
    assert row is not None and row["trigger_source"] == TriggerSource.MANUAL and row["run_id"] == skipped.run_id


async def test_buffered_slot_gives_up_after_the_grace(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    seeded = await control.seed(job_id="wait", interval_seconds=HOUR, overlap="buffer_one", misfire_grace_sec=1)
    slot = now().replace(microsecond=0) - timedelta(seconds=10)
    message = backfill_message(scope, "wait", seeded.epoch, slot, now())
    holder = await pool.acquire()
    try:
        for key in run_lock_keys(scope, "job:wait", 1):  # someone runs the job: every lock slot taken
            assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", key)
        buffered = runs.NewRun(message.run_id, scope, "wait", seeded.epoch, "scheduler", slot, 1, {})
        assert await runs.claim(holder, buffered, RunStatus.BUFFERED, "some-worker")
        async with running_worker(fast_settings(settings, scope), {"wait": (probe, ProbeParams)}) as worker:
            await publish_to_work(amqp, scope, "wait", message)
            await wait_until(lambda: _true(dropped(worker, scope, DropReason.BUFFER_GAVE_UP) == 1), 15, "the give-up")
    finally:
        await holder.execute("SELECT pg_advisory_unlock_all()")
        await pool.release(holder)
    row = await row_of(pool, scope, "wait", slot)
    assert row is not None and row["status"] == RunStatus.SKIPPED_LOCKED and "after the grace" in row["error"]


async def test_allow_all_lets_runs_overlap_and_skips_none(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="free", interval_seconds=1, overlap="allow_all", default_params={"sleep_sec": 2.5})
    started = now()
    async with running_worker(fast_settings(settings, scope), {"free": (probe, ProbeParams)}):

        async def several_done() -> bool:
            rows = await control.runs("free")
            return sum(1 for r in rows if r["status"] == RunStatus.SUCCEEDED) >= 3

        await wait_until(several_done, 30, "three runs")
    rows = [r for r in await control.runs("free") if r["scheduled_for"] >= started]
    assert overlaps(rows), "2.5 s runs every second must overlap under allow_all"
    assert not [r for r in rows if r["status"] == RunStatus.SKIPPED_LOCKED]


async def _true(value: bool) -> bool:
    return value


async def test_a_message_asking_for_next_delay_sec_is_parked_not_run(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    """The seed's "repost after next_delay_sec": the job's schedule names the next slot, so such a message is parked
    with a reason that says so, rather than run as if its delay had been honoured."""
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="scan", interval_seconds=HOUR)
    async with running_worker(fast_settings(settings, scope), {"scan": (probe, ProbeParams)}):
        await publish_to_work(amqp, scope, "scan", JobMessage(job_id="scan", next_delay_sec=600))
        reason, detail = await first_parked(amqp, scope)
        assert reason == "next_delay_sec" and "not honoured" in detail
    assert [r for r in await control.runs("scan") if r["trigger_source"] == "manual"] == []


async def test_a_queued_run_now_waits_behind_a_lock_group_peer(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    """run-now --queue under overlap = skip: the lock is the group's, taken by a peer; the run waits, then runs."""
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    for job_id in ("left", "right"):
        await control.seed(job_id=job_id, cron_expr="0 0 1 1 *", queue="pair", lock_group="pair")
    async with running_worker(fast_settings(settings, scope), {"pair": (probe, ProbeParams)}):
        await publish_to_work(amqp, scope, "pair", JobMessage(job_id="left", params={"sleep_sec": 2.0}))

        async def left_running() -> bool:
            return any(r["status"] == RunStatus.RUNNING for r in await control.runs("left"))

        await wait_until(left_running, 15, "the peer's run")
        await publish_to_work(amqp, scope, "pair", JobMessage(job_id="right", wait_for_lock=True))

        async def right_done() -> bool:
            return any(r["status"] == RunStatus.SUCCEEDED for r in await control.runs("right"))

        await wait_until(right_done, 20, "the queued run")
    (left,) = await control.runs("left")
    (right,) = await control.runs("right")
    assert right["started_at"] >= left["finished_at"]  # after the peer, not beside it
