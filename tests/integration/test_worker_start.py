"""A worker starting on many jobs: every delay queue of its jobs is declared before the work queue of those jobs is
consumed (a lost one comes back), the work queues with fewer jobs first."""

from __future__ import annotations

import aio_pika
import asyncpg
import pytest

from shared import topology
from shared.settings import Settings
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import Control, fast_settings, running_worker, wait_until

pytestmark = pytest.mark.integration

BIG = 40  # hourly jobs on one work queue


async def test_a_starting_worker_declares_lost_delay_queues_and_runs_every_queue(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="tick", queue="small", interval_seconds=1)
    for i in range(BIG):
        await control.seed(job_id=f"h{i:02d}", queue="big", interval_seconds=3600)
    lost = [topology.delay_queue_name(scope, "tick"), topology.delay_queue_name(scope, "h07")]
    async with amqp.channel() as channel:
        for name in lost:  # as a broker that lost them would have it
            await channel.queue_delete(name)

    handlers = {"small": (probe, ProbeParams), "big": (probe, ProbeParams)}
    async with running_worker(fast_settings(settings, scope), handlers) as worker:
        assert worker._consumed() == {"small", "big"}
        async with amqp.channel() as channel:
            for name in lost:
                await channel.declare_queue(name, passive=True)  # raises if it is missing
        await wait_until(lambda: _succeeded(control, "tick", 2), 30, "two runs of the one-second job")


async def _succeeded(control: Control, job_id: str, n: int) -> bool:
    return sum(1 for r in await control.runs(job_id) if r["status"] == "succeeded") >= n
