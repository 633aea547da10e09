"""The slot ledger, timed pause and catch-up policies on the real servers: consumption stopped (or the job
paused, or its chain lost) for several periods, then resumed; every slot of the schedule has exactly one row."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

import aio_pika
import asyncpg
import pytest

from scheduler_seed.status import enabled_words
from shared import schedule, topology
from shared.control import jobs
from shared.decisions import CHAIN_CATCH_UP_SEC
from shared.definitions import load_definition
from shared.publisher import Publisher
from shared.settings import Settings
from shared.store import ledger, runs
from shared.vocabulary import RunStatus, TriggerSource
from tests.integration.test_cli import cli
from tests.support.api import serving
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import Control, fast_settings, now, running_worker, slots_run_more_than_once, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
Amqp = aio_pika.abc.AbstractRobustConnection
NO_RESEED = {"chain_lost_after_sec": "600"}  # the watchdog leaves these chains alone: the ledger alone is tested


def holes(rows: list[asyncpg.Record], definition: dict[str, Any]) -> list[datetime]:
    """Slots of the schedule between the job's first and last chain row that have no row (attempt 1)."""
    slots = sorted(r["scheduled_for"] for r in rows if r["epoch"] is not None and r["attempt"] == 1)
    plan = load_definition(definition).schedule()
    assert plan is not None and slots
    return sorted(set(schedule.slots_between(plan, slots[0], slots[-1])) - set(slots))


def gap_rows(rows: list[asyncpg.Record], status: RunStatus) -> list[asyncpg.Record]:
    return [r for r in rows if r["status"] == status.value]


def caught_up(rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
    """Slot rows run by a catch-up (a revived gap row: manual trigger, slot of the chain)."""
    return [r for r in rows if r["epoch"] is not None and r["trigger_source"] == TriggerSource.MANUAL.value]


async def succeeded(control: Control, job_id: str, at_least: int, after: datetime | None = None) -> bool:
    rows = await control.runs(job_id)
    return sum(1 for r in rows if r["status"] == "succeeded" and (after is None or r["started_at"] > after)) >= at_least


async def test_a_late_message_within_the_grace_records_the_slots_it_jumps_over(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    definition = {"job_id": "jump", "interval_seconds": 1, "misfire_grace_sec": 60}
    await control.seed(**definition)
    handlers = {"jump": (probe, ProbeParams)}
    async with running_worker(fast_settings(settings, cleanup_scope, **NO_RESEED), handlers):
        await wait_until(lambda: succeeded(control, "jump", 2), 15, "two runs")
    # nobody consumes: the chain's message waits in the work queue, later than the few seconds a chain message may
    # be late and still go on from its own slot (decisions.CHAIN_CATCH_UP_SEC)
    await asyncio.sleep(CHAIN_CATCH_UP_SEC + 3.5)
    restarted = now()
    async with running_worker(fast_settings(settings, cleanup_scope, **NO_RESEED), handlers):
        await wait_until(lambda: succeeded(control, "jump", 2, after=restarted), 15, "runs after the restart")
    rows = await control.runs("jump")
    jumped = gap_rows(rows, RunStatus.SKIPPED_MISFIRE)
    assert len(jumped) >= 2 and all(r["error"].startswith("jumped over") for r in jumped), jumped
    assert holes(rows, definition) == []
    assert slots_run_more_than_once(rows) == []
    assert caught_up(rows) == []  # catchup = "none" (the default) runs none of them


async def test_an_outage_longer_than_the_grace_catches_up_the_most_recent_slots_once(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    definition = {
        "job_id": "all", "interval_seconds": 1, "misfire_grace_sec": 1, "catchup": "all", "catchup_max": 2,
        "catchup_rate_per_sec": 4,
    }  # fmt: skip
    await control.seed(**definition)
    handlers = {"all": (probe, ProbeParams)}
    async with running_worker(fast_settings(settings, cleanup_scope, **NO_RESEED), handlers):
        await wait_until(lambda: succeeded(control, "all", 2), 15, "two runs")
    await asyncio.sleep(4.5)
    restarted = now()
    async with running_worker(fast_settings(settings, cleanup_scope, **NO_RESEED), handlers):
        await wait_until(lambda: succeeded(control, "all", 4, after=restarted), 20, "catch-up and chain runs")

        async def two_caught_up() -> bool:
            return len(caught_up(await control.runs("all"))) == 2

        await wait_until(two_caught_up, 15, "two catch-up runs")
    rows = await control.runs("all")
    recovered = caught_up(rows)
    assert {r["status"] for r in recovered} == {"succeeded"}
    skipped = gap_rows(rows, RunStatus.SKIPPED_MISFIRE)
    restarted_slots = [r["scheduled_for"] for r in skipped if r["scheduled_for"] < restarted]
    assert restarted_slots, "the outage left slots that were not caught up"
    # the most recent missed slots ran: every slot still skipped is older than those that were caught up
    assert max(restarted_slots) < min(r["scheduled_for"] for r in recovered)
    assert holes(rows, definition) == []
    assert slots_run_more_than_once(rows) == []


async def test_pause_and_resume_record_paused_slots_and_latest_runs_the_last_once(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    definition = {"job_id": "late", "interval_seconds": 1, "catchup": "latest"}
    await control.seed(**definition)
    async with running_worker(fast_settings(settings, cleanup_scope, **NO_RESEED), {"late": (probe, ProbeParams)}):
        await wait_until(lambda: succeeded(control, "late", 2), 15, "two runs")
        await control.pause("late", note="maintenance")
        paused_at = now()
        await asyncio.sleep(3.0)
        change = await control.resume("late")
        assert change.gaps >= 2 and change.catchup == 1
        await wait_until(lambda: succeeded(control, "late", 2, after=paused_at + timedelta(seconds=3)), 15, "runs")

        async def one_caught_up() -> bool:
            return [r["status"] for r in caught_up(await control.runs("late"))] == ["succeeded"]

        await wait_until(one_caught_up, 15, "the latest paused slot run once")
    rows = await control.runs("late")
    paused = gap_rows(rows, RunStatus.PAUSED)
    assert len(paused) == change.gaps - 1 and all(r["error"] == "paused: maintenance" for r in paused)
    (recovered,) = caught_up(rows)
    assert recovered["scheduled_for"] > max(r["scheduled_for"] for r in paused)
    assert holes(rows, definition) == []
    assert slots_run_more_than_once(rows) == []
    listed = await cli(settings, cleanup_scope, "runs", "late", "--gaps")
    assert listed.code == 0 and listed.out.count(" paused ") == len(paused), listed.out


async def test_a_timed_pause_is_resumed_by_the_watchdog_and_the_audit_shows_both(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    await control.seed(job_id="nap", interval_seconds=1)
    async with running_worker(fast_settings(settings, cleanup_scope, **NO_RESEED), {"nap": (probe, ProbeParams)}):
        await wait_until(lambda: succeeded(control, "nap", 1), 15, "a run")
        async with control.control() as c:
            until = now() + timedelta(seconds=2)
            await c.pause("nap", note="short nap", until=until)
            (status,) = await c.status()
            assert enabled_words(status).startswith("paused until ")

        async def enabled() -> bool:
            return bool((await control.job("nap"))["enabled"])

        await wait_until(enabled, 20, "the watchdog to resume the job")
        resumed_at = now()
        await wait_until(lambda: succeeded(control, "nap", 1, after=resumed_at), 15, "a run after the resume")
        async with control.control() as c:
            audit = await c.audit(job_id="nap")
    assert [(e.action, e.actor) for e in audit[:2]] == [("resume", "watchdog"), ("pause", "library")]
    assert audit[1].note == "short nap" and audit[1].after is not None and audit[1].after["paused_until"]
    row = await control.job("nap")
    assert row["paused_until"] is None and row["paused_from"] is None
    assert gap_rows(await control.runs("nap"), RunStatus.PAUSED), "the slots of the pause have rows"


async def test_a_lost_chain_gets_missed_rows_when_the_watchdog_reseeds_it(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    definition = {"job_id": "lost", "interval_seconds": 1}
    await control.seed(**definition)
    fast = fast_settings(settings, cleanup_scope, chain_lost_after_sec="2")
    async with running_worker(fast, {"lost": (probe, ProbeParams)}):
        await wait_until(lambda: succeeded(control, "lost", 2), 15, "two runs")
        channel = await amqp.channel()
        try:
            queue = await channel.get_queue(topology.delay_queue_name(cleanup_scope, "lost"), ensure=False)

            async def purged() -> bool:  # the chain's message, lost (as when dead-lettering drops it)
                return bool((await queue.purge()).message_count)

            await wait_until(purged, 10, "the chain's message purged")
        finally:
            await channel.close()

        async def missed() -> bool:
            return bool(gap_rows(await control.runs("lost"), RunStatus.MISSED))

        await wait_until(missed, 20, "missed rows after the reseed")
        reseeded = now()
        await wait_until(lambda: succeeded(control, "lost", 1, after=reseeded), 15, "a run of the new chain")
    rows = await control.runs("lost")
    assert all(r["error"].startswith("chain lost (overdue)") for r in gap_rows(rows, RunStatus.MISSED))
    assert holes(rows, definition) == []
    assert slots_run_more_than_once(rows) == []


async def test_the_api_pauses_until_a_time_and_lists_gaps(
    settings: Settings, pool: asyncpg.Pool, cleanup_scope: str
) -> None:
    async with serving(settings, cleanup_scope) as api:
        created = await api.post("/jobs", json={"job_id": "gapped", "interval_seconds": 3600})
        assert created.status_code == 201, created.text
        naive = await api.post("/jobs/gapped/pause", json={"until": "2030-01-01T00:00:00"})
        assert naive.status_code == 422 and "until" in naive.text
        past = await api.post("/jobs/gapped/pause", json={"until": "2020-01-01T00:00:00Z"})
        assert past.status_code == 422 and "future" in past.text
        paused = await api.post("/jobs/gapped/pause", json={"note": "n", "until": "2030-01-01T00:00:00Z"})
        assert paused.status_code == 200, paused.text
        status = (await api.get("/jobs/gapped")).json()["status"]
        assert status["enabled"] is False and status["paused_until"].startswith("2030-01-01T00:00:00")
        gaps = await api.get("/jobs/gapped/runs", params={"gaps": "true"})
        assert gaps.status_code == 200 and gaps.json() == []
        slots = [now().replace(microsecond=0) - timedelta(hours=h) for h in (2, 1)]
        async with pool.acquire() as conn:
            await ledger.insert_gaps(conn, cleanup_scope, "gapped", 1, slots, RunStatus.MISSED, "chain lost", None)
            await runs.claim(conn, runs.NewRun(uuid.uuid4(), cleanup_scope, "gapped", None, "manual", now(), 1, {}),
                             RunStatus.CLAIMED, "w")  # fmt: skip
        listed = (await api.get("/jobs/gapped/runs", params={"gaps": "true"})).json()
        assert [(r["status"], r["error"]) for r in listed] == [("missed", "chain lost")] * 2
        assert listed[0]["scheduled_for"] > listed[1]["scheduled_for"]  # newest first
        assert len((await api.get("/jobs/gapped/runs")).json()) == 3


async def test_a_resume_that_cannot_post_the_first_slot_leaves_the_job_paused_and_writes_no_rows(
    pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    await control.seed(job_id="held", interval_seconds=1)
    await control.pause("held", note="maintenance")
    await asyncio.sleep(2.2)  # two slots kept from running by the pause
    at_pause = gap_rows(await control.runs("held"), RunStatus.PAUSED)  # slots already due when it paused, if any
    channel = await amqp.channel()
    try:
        broken = Publisher(channel, cleanup_scope)

        async def broker_gone(*args: Any, **kwargs: Any) -> None:
            raise aio_pika.exceptions.AMQPConnectionError("broker gone")

        broken.to_delay = broker_gone  # type: ignore[method-assign]
        async with pool.acquire() as conn:
            with pytest.raises(aio_pika.exceptions.AMQPConnectionError):
                await jobs.resume_job(conn, channel, broken, cleanup_scope, "held", now())
    finally:
        await channel.close()
    row = await control.job("held")
    assert not row["enabled"] and row["pause_note"] == "maintenance"  # still paused, as before the attempt
    assert gap_rows(await control.runs("held"), RunStatus.PAUSED) == at_pause  # the attempt wrote no row

    change = await control.resume("held")  # the broker is back: the resume goes through, gap rows and all
    assert change.gaps >= 2 and (await control.job("held"))["enabled"]
    assert len(gap_rows(await control.runs("held"), RunStatus.PAUSED)) == len(at_pause) + change.gaps
