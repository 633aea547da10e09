"""A retry lost on its way (its message purged from the retry queue, as a RabbitMQ crash can drop a dead-lettered
message) is published again by the watchdog and runs; a retry that arrived, or that became moot, is settled
without a second publish. On the real servers, with an in-process worker."""

from __future__ import annotations

from datetime import timedelta

import aio_pika
import asyncpg
import pytest

from shared.messages import backfill_message
from shared.settings import Settings
from shared.store import retries
from shared.vocabulary import RunStatus
from shared.worker import Worker
from tests.support.lost import purge_the_retry
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import Control, fast_settings, now, running_worker, wait_until
from tests.support.service_process import publish_to_work

pytestmark = pytest.mark.integration
Amqp = aio_pika.abc.AbstractRobustConnection
HOUR = 3600


def reposted(worker: Worker, scope: str, job_id: str) -> float:
    registry = worker.metrics.registry
    assert registry is not None
    labels = {"scope": scope, "job_id": job_id}
    return registry.get_sample_value("scheduler_retries_reposted_total", labels) or 0.0


@pytest.mark.parametrize("how", ["run_now", "slot"])
async def test_a_lost_retry_is_published_again_and_runs(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str, how: str
) -> None:
    """A manual run (its retry under a run id of its own) and a slot of the schedule (the retry's run id derived
    from the slot) fail once; their retry is purged; the watchdog publishes it again and attempt 2 succeeds."""
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    seeded = await control.seed(job_id="flaky", interval_seconds=HOUR, max_attempts=2, retry_backoff_sec=8,
                                default_params={"fail_until_attempt": 1})  # fmt: skip
    async with running_worker(fast_settings(settings, scope), {"flaky": (probe, ProbeParams)}) as worker:
        if how == "run_now":
            async with control.control() as c:
                await c.run_now("flaky")
        else:
            slot = now().replace(microsecond=0) - timedelta(seconds=10)
            await publish_to_work(amqp, scope, "flaky", backfill_message(scope, "flaky", seeded.epoch, slot, now()))
        await purge_the_retry(amqp, scope, "flaky")
        assert [r["attempt"] for r in await retries.owed_in(pool, scope)] == [1]  # recorded before it was lost

        async def second_attempt_succeeded() -> bool:
            rows = await control.runs("flaky")
            return any(r["attempt"] == 2 and r["status"] == RunStatus.SUCCEEDED for r in rows)

        await wait_until(second_attempt_succeeded, 40, "attempt 2, published again, succeeded")
        assert reposted(worker, scope, "flaky") == 1
        await wait_until(lambda: _none_owed(pool, scope), 20, "the owed retry settled once attempt 2 arrived")
    rows = await control.runs("flaky")
    assert sorted(r["attempt"] for r in rows) == [1, 2]
    assert next(r for r in rows if r["attempt"] == 1)["status"] == RunStatus.FAILED


async def _none_owed(pool: asyncpg.Pool, scope: str) -> bool:
    return not await retries.owed_in(pool, scope)


async def test_a_retry_that_arrives_is_settled_without_a_second_publish(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="flaky", interval_seconds=HOUR, max_attempts=2, retry_backoff_sec=1,
                       default_params={"fail_until_attempt": 1})  # fmt: skip
    async with running_worker(fast_settings(settings, scope), {"flaky": (probe, ProbeParams)}) as worker:
        async with control.control() as c:
            await c.run_now("flaky")

        async def settled() -> bool:
            rows = await control.runs("flaky")
            done = any(r["attempt"] == 2 and r["status"] == RunStatus.SUCCEEDED for r in rows)
            return done and await _none_owed(pool, scope)

        await wait_until(settled, 30, "attempt 2 ran and the owed retry was settled")
        assert reposted(worker, scope, "flaky") == 0
    rows = await control.runs("flaky")
    assert sorted(r["attempt"] for r in rows) == [1, 2]


async def test_retries_of_chain_slots_are_owed_and_settled_once_they_arrive(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    """Slots of a 1-second chain (claimed ahead, started with others at the slot) fail once each: each retry is
    recorded as owed on the run's own session, arrives, and is settled with no repost."""
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="flaky", interval_seconds=1, max_attempts=2, retry_backoff_sec=0.5,
                       default_params={"fail_until_attempt": 1})  # fmt: skip
    seen_owed = 0
    async with running_worker(fast_settings(settings, scope), {"flaky": (probe, ProbeParams)}) as worker:

        async def three_retried() -> bool:
            nonlocal seen_owed
            seen_owed = max(seen_owed, len(await retries.owed_in(pool, scope)))
            rows = await control.runs("flaky")
            return sum(1 for r in rows if r["attempt"] == 2 and r["status"] == RunStatus.SUCCEEDED) >= 3

        await wait_until(three_retried, 40, "three slots retried")
        await control.pause("flaky")
        await wait_until(lambda: _none_owed(pool, scope), 30, "every owed retry settled")
        assert reposted(worker, scope, "flaky") == 0
    assert seen_owed >= 1
    rows = await control.runs("flaky")
    assert all(r["epoch"] is not None for r in rows if r["attempt"] == 2)
