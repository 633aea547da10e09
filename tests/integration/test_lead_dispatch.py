"""Lead-time dispatch (shared.lead): a chain message arrives a lead before its slot, the slot is claimed and the
next one posted meanwhile, and the handler starts at the slot, never before; the run lock is taken at the slot, so
a run that ends inside the next slot's lead does not make it skip, and one still running at the slot does."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import aio_pika
import asyncpg
import pytest
from pydantic import BaseModel, ConfigDict

from shared.context import RunContext
from shared.settings import Settings
from tests.support.runtime import Control, fast_settings, overlaps, running_worker, slots_run_more_than_once, wait_until

pytestmark = pytest.mark.integration
Amqp = aio_pika.abc.AbstractRobustConnection
STARTS: dict[str, list[tuple[datetime, float]]] = {}


class Params(BaseModel):
    model_config = ConfigDict(extra="allow")
    sleep_sec: float = 0.0


async def noting(ctx: RunContext, params: Params) -> None:
    """Notes the slot and the wall-clock start of the handler, then sleeps `sleep_sec`."""
    STARTS.setdefault(ctx.scope, []).append((ctx.scheduled_for, time.time()))
    await asyncio.sleep(params.sleep_sec)


async def count(control: Control, job_id: str, status: str) -> int:
    return sum(1 for r in await control.runs(job_id) if r["status"] == status)


async def test_the_handler_starts_at_its_slot_not_when_the_message_arrives(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    await control.seed(job_id="dot", interval_seconds=1)
    lead = fast_settings(settings, cleanup_scope, scheduler_dispatch_lead_ms="400")
    async with running_worker(lead, {"dot": (noting, Params)}):
        await wait_until(lambda: _at_least(control, "dot", "succeeded", 4), 20, "four runs")
    starts = STARTS[cleanup_scope]
    early = [(slot, at) for slot, at in starts if at < slot.timestamp()]
    assert len(starts) >= 4 and early == []
    rows = [r for r in await control.runs("dot") if r["status"] == "succeeded"]
    assert all(r["lateness_ms"] >= 0 and r["started_at"] >= r["scheduled_for"] for r in rows)
    assert all(r["next_posted_for"] is not None for r in rows)  # each posted its next slot
    claimed_ahead = [r for r in rows if r["claimed_at"] < r["scheduled_for"]]
    assert len(claimed_ahead) >= 3  # all but the seeded first slot were claimed in the lead
    assert slots_run_more_than_once(await control.runs("dot")) == []


async def test_a_run_ending_inside_the_next_slots_lead_does_not_make_it_skip(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    # interval 2 s, lead 1 s, runs of 1.3 s: each run ends inside the next slot's lead (0.7 s before that slot)
    control = Control(pool, amqp, cleanup_scope)
    await control.seed(job_id="fits", interval_seconds=2, default_params={"sleep_sec": 1.3})
    lead = fast_settings(settings, cleanup_scope, scheduler_dispatch_lead_ms="1000")
    async with running_worker(lead, {"fits": (noting, Params)}):
        await wait_until(lambda: _at_least(control, "fits", "succeeded", 3), 30, "three runs")
    rows = await control.runs("fits")
    assert [r for r in rows if r["status"] == "skipped_locked"] == []
    assert overlaps(rows) == [] and slots_run_more_than_once(rows) == []


async def test_a_run_still_going_at_the_next_slot_makes_it_skip_and_the_chain_goes_on(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    await control.seed(job_id="long", interval_seconds=1, default_params={"sleep_sec": 1.6})
    lead = fast_settings(settings, cleanup_scope, scheduler_dispatch_lead_ms="300")
    async with running_worker(lead, {"long": (noting, Params)}):
        await wait_until(lambda: _at_least(control, "long", "skipped_locked", 2), 30, "skipped slots")
        await wait_until(lambda: _at_least(control, "long", "succeeded", 2), 30, "runs after the skips")
    rows = await control.runs("long")
    skipped = [r for r in rows if r["status"] == "skipped_locked"]
    assert all(r["finished_at"] is not None and r["started_at"] is None for r in skipped)
    assert overlaps(rows) == [] and slots_run_more_than_once(rows) == []


async def _at_least(control: Control, job_id: str, status: str, n: int) -> bool:
    return await count(control, job_id, status) >= n


async def test_a_worker_stopping_before_the_slot_hands_the_claimed_slot_back(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    await control.seed(job_id="handed", interval_seconds=3)
    # a long lead and no grace: the worker is cancelled while a slot it claimed waits for its time
    first = fast_settings(settings, cleanup_scope, scheduler_dispatch_lead_ms="2500", shutdown_grace_sec="0")
    async with running_worker(first, {"handed": (noting, Params)}) as stopping:
        await wait_until(lambda: _claimed_ahead(pool, cleanup_scope), 20, "a slot claimed ahead")
        claimed = await _claimed_ahead(pool, cleanup_scope)
    assert claimed is not None
    given_up = await pool.fetchrow("SELECT status, worker FROM scheduler.job_runs WHERE run_id = $1", claimed)
    assert dict(given_up) == {"status": "claimed", "worker": None}  # not run, and no longer the stopped worker's
    second = fast_settings(settings, cleanup_scope, scheduler_dispatch_lead_ms="2500")
    async with running_worker(second, {"handed": (noting, Params)}) as taker:
        await wait_until(lambda: _succeeded(pool, claimed), 20, "the handed-back slot run")
    ran_by = await pool.fetchval("SELECT worker FROM scheduler.job_runs WHERE run_id = $1", claimed)
    assert ran_by == taker.worker_id != stopping.worker_id
    rows = await control.runs("handed")
    assert slots_run_more_than_once(rows) == [] and overlaps(rows) == []


async def _claimed_ahead(pool: asyncpg.Pool, scope: str) -> object:
    return await pool.fetchval(
        "SELECT run_id FROM scheduler.job_runs WHERE scope = $1 AND status = 'claimed'"
        " AND claimed_at < scheduled_for - interval '500 milliseconds'",
        scope,
    )


async def _succeeded(pool: asyncpg.Pool, run_id: object) -> bool:
    status = await pool.fetchval("SELECT status FROM scheduler.job_runs WHERE run_id = $1", run_id)
    return bool(status == "succeeded")


class Busy(BaseModel):
    model_config = ConfigDict(extra="allow")
    sleep_sec: float = 0.3


LIVE: dict[str, list[int]] = {}  # per scope: [handlers running now, most at once]


async def busy(ctx: RunContext, params: Busy) -> None:
    live = LIVE.setdefault(ctx.scope, [0, 0])
    live[0] += 1
    live[1] = max(live[1], live[0])
    try:
        await asyncio.sleep(params.sleep_sec)
    finally:
        live[0] -= 1


@pytest.mark.parametrize("lead_ms", ["400", "0"], ids=["claimed-ahead", "one-message"])
async def test_a_herd_larger_than_the_worker_concurrency_runs_at_most_that_many_handlers_at_once(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str, lead_ms: str
) -> None:
    """Eight jobs at one instant, WORKER_CONCURRENCY 3: a run gives its place back once its handler returned
    (before its outcome is recorded), never before, so no more than three handlers ever run at once, and every
    slot runs once; on the lead path and on the way of one message alike."""
    control = Control(pool, amqp, cleanup_scope)
    jobs = [f"h{i}" for i in range(8)]
    for job_id in jobs:
        await control.seed(job_id=job_id, queue="herd", interval_seconds=2, align=True)
    lead = fast_settings(settings, cleanup_scope, scheduler_dispatch_lead_ms=lead_ms, worker_concurrency=3)
    async with running_worker(lead, {"herd": (busy, Busy)}):
        await wait_until(lambda: _succeeded_each(control, jobs, 2), 40, "two runs of every job")
    assert LIVE[cleanup_scope][1] == 3  # the limit was reached (eight at once), never passed
    rows = await control.runs()
    assert slots_run_more_than_once(rows) == []


async def _succeeded_each(control: Control, jobs: list[str], n: int) -> bool:
    rows = await control.runs()
    return all(sum(1 for r in rows if r["job_id"] == j and r["status"] == "succeeded") >= n for j in jobs)
