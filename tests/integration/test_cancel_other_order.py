"""overlap=cancel_other keeps slot order: the newest slot is the one that runs. A slot waiting to replace a run that a
later slot overtakes (the later one found the lock free first) is skipped as superseded, never run after the later
one, and never asks the later one to stop. Each case is set up by hand on the real servers: the rows and the lock
another worker would hold, then the one message that meets them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import aio_pika
import asyncpg
import pytest

from shared.locks import run_lock_keys
from shared.messages import backfill_message
from shared.settings import Settings
from shared.store import overlaps as overlaps_store
from shared.store import runs, workers
from shared.vocabulary import RunStatus, TriggerSource
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import Control, fast_settings, now, running_worker, wait_until
from tests.support.service_process import publish_to_work

pytestmark = pytest.mark.integration
Amqp = aio_pika.abc.AbstractRobustConnection
HOUR = 3600


async def status_of(pool: asyncpg.Pool, scope: str, slot: object) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT status, error FROM scheduler.job_runs WHERE scope = $1 AND job_id = 'cx' AND scheduled_for = $2"
        " AND attempt = 1",
        scope,
        slot,
    )


@contextlib.asynccontextmanager
async def live_peer(pool: asyncpg.Pool, scope: str) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """Another worker, alive while its connection is open, that holds the job's run lock on it: the connection and
    its worker id. Both are given back at the end."""
    holder = await pool.acquire()
    try:
        worker_id = f"{scope}-peer"
        await workers.register(
            holder, worker_id=worker_id, scope=scope, service="peer", hostname="here", pid=0, queues=[]
        )
        for key in run_lock_keys(scope, "job:cx", 1):
            assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", key)
        yield holder, worker_id
    finally:
        await holder.execute("SELECT pg_advisory_unlock_all()")
        await pool.release(holder)


async def seed_cx(control: Control) -> tuple[int, datetime, datetime]:
    """The hourly cancel_other job `cx`, and two of its slots 10 s apart in the last 20 s: its epoch, the earlier
    slot, the later one."""
    seeded = await control.seed(job_id="cx", interval_seconds=HOUR, overlap="cancel_other", misfire_grace_sec=600)
    earlier = now().replace(microsecond=0) - timedelta(seconds=20)
    return seeded.epoch, earlier, earlier + timedelta(seconds=10)


def slot_row(scope: str, epoch: int, slot: datetime) -> runs.NewRun:
    """The row another worker made for a slot of the schedule."""
    run_id = backfill_message(scope, "cx", epoch, slot, now()).run_id
    assert run_id is not None
    return runs.NewRun(run_id, scope, "cx", epoch, TriggerSource.SCHEDULER.value, slot, 1, {})


async def test_a_later_slot_that_finds_the_lock_free_runs_and_the_earlier_waiting_slot_is_superseded(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    epoch, earlier, later = await seed_cx(control)
    async with pool.acquire() as conn:  # another worker left it waiting (buffered) for the lock
        assert await runs.claim(conn, slot_row(scope, epoch, earlier), RunStatus.BUFFERED, "some-worker")
    async with running_worker(fast_settings(settings, scope), {"cx": (probe, ProbeParams)}):
        await publish_to_work(amqp, scope, "cx", backfill_message(scope, "cx", epoch, later, now()))

        async def later_done() -> bool:
            row = await status_of(pool, scope, later)
            return row is not None and row["status"] == RunStatus.SUCCEEDED

        await wait_until(later_done, 20, "the later slot's run")
    row = await status_of(pool, scope, earlier)
    assert row is not None, "the waiting slot's row is kept"
    assert (row["status"], row["error"]) == (RunStatus.SKIPPED_LOCKED, overlaps_store.SUPERSEDED)


async def test_a_waiting_slot_that_meets_a_later_slots_run_gives_up_without_asking_it_to_stop(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    epoch, earlier, later = await seed_cx(control)
    async with live_peer(pool, scope) as (holder, peer):  # the later slot's worker: it holds the lock and runs
        running = slot_row(scope, epoch, later)
        assert await runs.claim(holder, running, RunStatus.CLAIMED, peer)
        assert await runs.claim(holder, slot_row(scope, epoch, earlier), RunStatus.BUFFERED, peer)
        async with running_worker(fast_settings(settings, scope), {"cx": (probe, ProbeParams)}):
            await publish_to_work(amqp, scope, "cx", backfill_message(scope, "cx", epoch, earlier, now()))

            async def superseded() -> bool:
                row = await status_of(pool, scope, earlier)
                return row is not None and row["status"] == RunStatus.SKIPPED_LOCKED

            await wait_until(superseded, 20, "the waiting slot skipped")
        asked = await pool.fetchval("SELECT count(*) FROM scheduler.run_cancels WHERE scope = $1", scope)
    row = await status_of(pool, scope, earlier)
    assert row is not None and row["error"] == overlaps_store.SUPERSEDED
    assert asked == 0, "the later slot's run was asked to stop for an earlier slot"
    later_row = await status_of(pool, scope, later)
    assert later_row is not None and later_row["status"] == RunStatus.CLAIMED


async def test_an_earlier_run_in_the_way_is_still_asked_to_stop(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    """The other side of the rule: a waiting slot asks the run of an earlier slot to stop, and keeps waiting."""
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    epoch, earlier, later = await seed_cx(control)
    async with live_peer(pool, scope) as (holder, peer):
        running = slot_row(scope, epoch, earlier)
        assert await runs.claim(holder, running, RunStatus.CLAIMED, peer)
        async with running_worker(fast_settings(settings, scope), {"cx": (probe, ProbeParams)}):
            await publish_to_work(amqp, scope, "cx", backfill_message(scope, "cx", epoch, later, now()))

            async def asked() -> bool:
                return bool(
                    await pool.fetchval("SELECT true FROM scheduler.run_cancels WHERE run_id = $1", running.run_id)
                )

            await wait_until(asked, 20, "the earlier run asked to stop")
            row = await status_of(pool, scope, later)
            assert row is not None and row["status"] == RunStatus.BUFFERED
