"""Slots beyond the per-message TTL ceiling are reached by re-arm hops: with the ceiling lowered to one second, a
four-second interval chain hops through its delay queue and runs each slot once, on time, with no run rows for
the hops."""

from __future__ import annotations

from itertools import pairwise

import aio_pika
import asyncpg
import pytest

from shared.settings import Settings
from tests.support.logcapture import capture_logs
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import Control, fast_settings, running_worker, slots_run_more_than_once, wait_until

pytestmark = pytest.mark.integration


async def test_far_slot_is_reached_by_hops_without_runs(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scope = cleanup_scope
    monkeypatch.setenv("SCHEDULER_TTL_CEILING_MS", "1000")  # the seed's publisher reads it too
    control = Control(pool, amqp, scope)
    worker_settings = fast_settings(settings, scope, scheduler_ttl_ceiling_ms=1000)

    async def succeeded(at_least: int) -> bool:
        return sum(1 for r in await control.runs("far") if r["status"] == "succeeded") >= at_least

    with capture_logs() as logs:
        await control.seed(job_id="far", interval_seconds=4, queue_type="quorum")
        async with running_worker(worker_settings, {"far": (probe, ProbeParams)}):
            await wait_until(lambda: succeeded(2), 30, "2 runs of the 4 s chain")
    rows = await control.runs("far")
    assert slots_run_more_than_once(rows) == []
    slots = [r["scheduled_for"] for r in rows]
    assert all((b - a).total_seconds() == 4 for a, b in pairwise(slots))  # only real slots have rows
    assert all(r["started_at"] >= r["scheduled_for"] for r in rows if r["started_at"] is not None)  # none early
    hops = [e for e in logs if e.get("event") == "chain.rearmed" and e.get("job_id") == "far"]
    assert len(hops) >= 2  # each slot 4 s away took hops of at most 1 s
    assert all(e["fire_at"] >= e["slot"] for e in hops)  # each hop carries its slot's fire time
