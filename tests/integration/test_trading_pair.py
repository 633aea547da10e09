"""The shipped trading pair of `deploy/jobs/real.toml`: `trading-cycle` (hourly at :01) and `position-management`
(:01 :16 :31 :46) share the lock group `trading`, so at every :01 both want the lock at the same instant. Both run
at every such slot, one after the other, and none is recorded `skipped_locked`.

The definitions are the shipped ones as written, with one rewrite: the cadence is compressed (hour -> 8 s,
quarter hour -> 2 s, the same 4:1 ratio) onto the clock grid (`align`), as cron slots are, so the two jobs'
slots coincide the way every :01 does."""

from __future__ import annotations

import asyncio
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from shared.context import RunContext
from shared.control.validation import jobs_file
from shared.definitions import JobDefinition
from shared.settings import Settings
from shared.vocabulary import RunStatus
from tests.support.probe import ProbeParams
from tests.support.runtime import Control, fast_settings, overlaps, running_worker, wait_until

pytestmark = pytest.mark.integration

REAL_FILE = Path(__file__).resolve().parents[2] / "deploy" / "jobs" / "real.toml"
CADENCE = {"trading-cycle": 8, "position-management": 2}  # seconds for an hour and a quarter hour
RUN_SEC = 0.5  # each run holds the group lock this long, so the second job of a shared slot must wait


def shipped_pair() -> list[JobDefinition]:
    """The two trading jobs as shipped, with only their cadence rewritten (compressed, on the clock grid)."""
    shipped = {d.job_id: d for d in jobs_file(REAL_FILE)}
    return [
        shipped[job_id].model_copy(update={"cron_expr": None, "interval_seconds": every, "align": True})
        for job_id, every in CADENCE.items()
    ]


async def busy(ctx: RunContext, params: ProbeParams) -> None:
    """Stands in for the trading work: holds the lock for a while (extra params, the shipped ones, accepted)."""
    await asyncio.sleep(RUN_SEC)


async def test_the_shipped_trading_pair_both_run_at_every_shared_slot(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    pair = shipped_pair()
    assert {d.lock_group for d in pair} == {"trading"} and {d.queue_name for d in pair} == {"trading"}
    async with control.control() as c:
        for definition in pair:
            await c.put(JobDefinition.model_validate(definition.model_dump()))  # validated again, as a seed does
    async with running_worker(fast_settings(settings, cleanup_scope), {"trading": (busy, ProbeParams)}):
        await wait_until(lambda: _pairs_decided(control, 3), 90, "three shared slots decided for both jobs")
    rows = [r for r in await control.runs() if r["trigger_source"] == "scheduler"]
    by_job: dict[str, dict[datetime, list[asyncpg.Record]]] = {job_id: {} for job_id in CADENCE}
    for r in rows:
        by_job[r["job_id"]].setdefault(r["scheduled_for"], []).append(r)
    cycles = sorted(s for s, runs in by_job["trading-cycle"].items() if _succeeded(runs))
    skipped = [(r["job_id"], r["status"]) for r in rows if r["status"].startswith("skipped")]
    assert skipped == []  # no skipped_locked, no skipped_misfire
    assert len(cycles) >= 3
    for slot in cycles:
        pair_runs = [_succeeded(by_job[job_id].get(slot, [])) for job_id in CADENCE]
        assert all(run is not None for run in pair_runs), f"slot {slot}: {pair_runs}"
        waits = sorted((run["started_at"] - slot).total_seconds() for run in pair_runs if run is not None)
        assert waits[1] >= RUN_SEC * 0.8, f"slot {slot}: the second run did not wait for the first: {waits}"
    quarter = sorted(s for s, runs in by_job["position-management"].items() if _succeeded(runs) and s <= cycles[-1])
    assert {(b - a).total_seconds() for a, b in pairwise(quarter)} == {2.0}  # every quarter-hour slot ran too
    assert overlaps([r for r in rows if r["started_at"] is not None]) == []  # one lock group: never at once


def _succeeded(runs: list[asyncpg.Record]) -> asyncpg.Record | None:
    return next((r for r in runs if r["status"] == "succeeded"), None)


async def _pairs_decided(control: Control, n: int) -> bool:
    """At least `n` trading-cycle slots where both jobs have a final outcome (run, or skipped: the assertions
    say which); position management's own slots in between need not be."""
    decided: dict[str, set[datetime]] = {job_id: set() for job_id in CADENCE}
    for r in await control.runs():
        if r["trigger_source"] == "scheduler" and RunStatus(r["status"]).terminal:
            decided[r["job_id"]].add(r["scheduled_for"])
    return len(decided["trading-cycle"] & decided["position-management"]) >= n
