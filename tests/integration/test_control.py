"""The control layer (`shared.control.Control`) against the real servers: each operator action, each typed
error, and reads that neither migrate nor wait for the migration lock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aio_pika
import aiormq
import asyncpg
import pytest
from pydantic import SecretStr

from shared import topology
from shared.control import (
    Control,
    DependencyDown,
    ErrorKind,
    InvalidDefinition,
    InvalidRequest,
    RunningNow,
    UnknownJob,
    UnknownParkedMessage,
    kind_of,
)
from shared.settings import Settings
from shared.store.migrate import MIGRATION_LOCK
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import fast_settings, running_worker, wait_until

pytestmark = pytest.mark.integration

YEARLY = "0 0 1 1 *"  # a chain that never fires during a test


@pytest.fixture
async def control(settings: Settings, cleanup_scope: str) -> AsyncIterator[Control]:
    async with Control(settings, cleanup_scope) as opened:
        yield opened


async def delay_depth(settings: Settings, scope: str, job_id: str) -> int | None:
    """Messages in the job's delay queue; None when the queue does not exist."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    try:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(topology.delay_queue_name(scope, job_id), passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


# -- jobs -------------------------------------------------------------------------------------------------------


async def test_put_creates_then_updates_a_job_each_time_replacing_its_chain(
    control: Control, settings: Settings
) -> None:
    created = await control.put({"job_id": "tick", "cron_expr": YEARLY})
    again = await control.put({"job_id": "tick", "cron_expr": YEARLY})
    edited = await control.put({"job_id": "tick", "interval_seconds": 3600})
    assert created.changed and not again.changed and edited.changed
    assert created.epoch < again.epoch < edited.epoch
    assert edited.first_slot is not None
    assert await delay_depth(settings, control.scope, "tick") == 1  # one chain, whatever the number of puts
    (status,) = await control.status()
    assert (status.job_id, status.enabled, status.epoch) == ("tick", True, edited.epoch)
    assert status.schedule.startswith("every 1 h")


async def test_an_invalid_definition_names_the_field_and_stores_nothing(control: Control) -> None:
    with pytest.raises(InvalidDefinition) as caught:
        await control.put({"job_id": "tick", "cron_expr": "61 * * * *"})
    assert caught.value.fields == ("cron_expr",) and "cron_expr" in str(caught.value)
    assert kind_of(caught.value) is ErrorKind.INVALID
    with pytest.raises(UnknownJob):
        await control.job("tick")


async def test_set_changes_any_field_now_and_a_bad_value_changes_nothing(control: Control, settings: Settings) -> None:
    seeded = await control.put({"job_id": "tick", "cron_expr": YEARLY})
    changed = await control.set("tick", {"interval_seconds": 60, "description": "every minute"})
    row = await control.job("tick")
    assert (row.interval_seconds, row.cron_expr, row.description) == (60, None, "every minute")
    assert changed.epoch == seeded.epoch + 1 and changed.first_slot is not None
    with pytest.raises(InvalidDefinition) as caught:
        await control.set("tick", {"timezone": "Mars/Olympus"})
    assert caught.value.fields == ("timezone",)
    with pytest.raises(InvalidRequest):
        await control.set("tick", {})
    assert (await control.job("tick")).epoch == changed.epoch
    assert await delay_depth(settings, control.scope, "tick") == 1


async def test_pause_with_a_note_ends_the_chain_and_resume_starts_one(control: Control, settings: Settings) -> None:
    await control.put({"job_id": "tick", "interval_seconds": 3600})
    paused = await control.pause("tick", note="maintenance window")
    (status,) = await control.status()
    assert not status.enabled and status.pause_note == "maintenance window" and status.next_slots == []
    assert paused.first_slot is None and await delay_depth(settings, control.scope, "tick") == 0
    resumed = await control.resume("tick")
    assert resumed.changed and resumed.epoch == paused.epoch + 1 and resumed.first_slot is not None
    assert await delay_depth(settings, control.scope, "tick") == 1


async def test_seed_file_refuses_a_dangling_on_success_before_changing_anything(
    control: Control, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text('[jobs.step1]\ninterval_seconds = 5\non_success = ["step2"]\n')
    with pytest.raises(InvalidDefinition) as caught:
        await control.seed_file(path)
    assert caught.value.fields == ("on_success",)
    assert await control.jobs() == []


@pytest.mark.parametrize(
    "action",
    ["job", "pause", "resume", "set", "delete", "run_now", "runs", "publish", "plan_backfill"],
)
async def test_an_unknown_job_is_not_found_for_every_action(control: Control, action: str) -> None:
    calls = {
        "job": lambda: control.job("ghost"),
        "pause": lambda: control.pause("ghost"),
        "resume": lambda: control.resume("ghost"),
        "set": lambda: control.set("ghost", {"interval_seconds": 5}),
        "delete": lambda: control.delete("ghost"),
        "run_now": lambda: control.run_now("ghost"),
        "runs": lambda: control.runs("ghost"),
        "publish": lambda: control.publish("ghost"),
        "plan_backfill": lambda: control.plan_backfill("ghost", "now-1h", "now"),
    }
    with pytest.raises(UnknownJob) as caught:
        await calls[action]()
    assert (caught.value.job_id, caught.value.scope) == ("ghost", control.scope)
    assert kind_of(caught.value) is ErrorKind.NOT_FOUND


# -- runs -------------------------------------------------------------------------------------------------------


async def test_run_now_refuses_a_running_job_naming_the_live_run_and_queue_waits_behind_it(
    control: Control, settings: Settings
) -> None:
    await control.put({"job_id": "slow", "cron_expr": YEARLY, "max_attempts": 1})
    async with running_worker(fast_settings(settings, control.scope), {"slow": (probe, ProbeParams)}):
        first = await control.run_now("slow", {"sleep_sec": 3})
        assert first.worker_live and first.routing_key == f"{control.scope}.jobs.slow"

        async def running() -> bool:
            return any(r.status == "running" for r in await control.runs("slow"))

        await wait_until(running, 15, "the long run to start")
        with pytest.raises(RunningNow) as caught:
            await control.run_now("slow")
        assert caught.value.run_id == first.run_id and caught.value.status == "running"
        assert caught.value.since is not None and kind_of(caught.value) is ErrorKind.CONFLICT
        assert len(await control.runs("slow")) == 1  # nothing was queued

        queued = await control.run_now("slow", {"sleep_sec": 0.1}, queue=True)  # waits for the run in its way
        outcome = await control.wait_for(queued)
        assert outcome.run_id == queued.run_id and outcome.succeeded  # not skipped, though overlap = skip
        assert (await control.wait_for(first)).succeeded
    recorded = {r.run_id: r for r in await control.runs("slow")}
    first_end, queued_start = recorded[first.run_id].finished_at, recorded[queued.run_id].started_at
    assert first_end is not None and queued_start is not None and queued_start >= first_end  # after it, not beside


async def test_wait_for_follows_a_failed_run_through_its_retries(control: Control, settings: Settings) -> None:
    await control.put({"job_id": "flaky", "cron_expr": YEARLY, "max_attempts": 2, "retry_backoff_sec": 0.1})
    retried = []
    async with running_worker(fast_settings(settings, control.scope), {"flaky": (probe, ProbeParams)}):
        queued = await control.run_now("flaky", {"fail_until_attempt": 1})
        outcome = await control.wait_for(queued, on_retry=retried.append)
    assert [r.status for r in retried] == ["failed"] and retried[0].run_id == queued.run_id
    assert outcome.succeeded and outcome.attempt == 2


async def test_backfill_runs_missing_slots_once_and_refuses_a_future_end(control: Control, settings: Settings) -> None:
    await control.put({"job_id": "past", "interval_seconds": 1, "align": True, "enabled": False})
    with pytest.raises(InvalidRequest) as caught:
        await control.plan_backfill("past", "now-1m", "2999-01-01T00:00")
    assert caught.value.field == "to" and "in the future" in str(caught.value)
    end = (await control.job("past")).created_at.replace(microsecond=0) - timedelta(seconds=2)
    plan = await control.plan_backfill("past", end - timedelta(seconds=2), end)
    assert len(plan.todo) == 3
    async with running_worker(fast_settings(settings, control.scope), {"past": (probe, ProbeParams)}):
        done = await control.backfill(plan)
    assert done.published == done.succeeded == 3
    again = await control.plan_backfill("past", end - timedelta(seconds=2), end)
    assert again.todo == [] and set(again.done.values()) == {"succeeded"}


async def test_a_job_without_a_schedule_has_nothing_to_backfill(control: Control) -> None:
    await control.put({"job_id": "hand", "reschedule_mode": "none"})
    with pytest.raises(InvalidRequest, match="nothing to backfill"):
        await control.plan_backfill("hand", "now-1h", "now")


async def test_delete_ends_the_chain_and_removes_row_and_own_queues_but_keeps_history(
    control: Control, settings: Settings
) -> None:
    await control.put({"job_id": "gone", "interval_seconds": 3600})
    async with running_worker(fast_settings(settings, control.scope), {"gone": (probe, ProbeParams)}):
        assert (await control.wait_for(await control.run_now("gone"))).succeeded
    deleted = await control.delete("gone")
    assert deleted.job_id == "gone"
    with pytest.raises(UnknownJob):
        await control.job("gone")
    assert await delay_depth(settings, control.scope, "gone") is None  # its delay queue is gone
    (run,) = await control.runs("gone")  # the history stays
    assert run.status == "succeeded"
    channel = await control.session.channel()
    await channel.queue_delete(topology.work_queue_name(control.scope, "gone"))  # the fixture knows no deleted job


# -- parked messages --------------------------------------------------------------------------------------------


async def test_parked_messages_are_listed_without_consuming_replayed_by_id_and_purged(
    control: Control, settings: Settings
) -> None:
    await control.put({"job_id": "hand", "cron_expr": YEARLY})
    async with running_worker(fast_settings(settings, control.scope), {"hand": (probe, ProbeParams)}):
        published = await control.publish("hand", b"[1, 2]")
        assert published.routing_key == f"{control.scope}.jobs.hand" and published.size == 6

        async def parked() -> bool:
            return (await control.dead_letters()).total == 1

        await wait_until(parked, 15, "the garbage to be parked")
    listed = await control.dead_letters()
    assert (await control.dead_letters()).total == 1  # listing consumed nothing
    (message,) = listed.messages
    assert message.reason == "schema" and message.original_queue == "hand" and message.body == b"[1, 2]"
    with pytest.raises(UnknownParkedMessage) as caught:
        await control.replay("0123456789ab")
    assert kind_of(caught.value) is ErrorKind.NOT_FOUND
    purged = await control.purge_dead()
    assert purged.count == 1 and (await control.dead_letters()).messages == []


# -- dependencies and migrations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "url", "server"),
    [
        ("amqp_url", "amqp://guest:s3cret@127.0.0.1:1/", "RabbitMQ"),
        ("database_url", "postgresql://postgres:s3cret@127.0.0.1:1/postgres", "PostgreSQL"),
    ],
)
async def test_a_server_that_does_not_answer_is_dependency_down_without_the_secret(
    settings: Settings, scope: str, field: str, url: str, server: str
) -> None:
    broken = settings.model_copy(update={field: SecretStr(url)})
    async with Control(broken, scope) as control:
        with pytest.raises(DependencyDown) as caught:
            await (control.dead_letters() if server == "RabbitMQ" else control.status())
    down = caught.value
    assert down.server == server and "***" in down.url and kind_of(down) is ErrorKind.UNAVAILABLE
    assert "s3cret" not in str(down) and "s3cret" not in down.url and down.url in str(down)


async def test_reads_do_not_wait_for_the_migration_lock_and_writes_do(
    control: Control, settings: Settings, database_url: str
) -> None:
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)  # a migration in progress, say
        assert await asyncio.wait_for(control.status(), 5) == []
        with pytest.raises(UnknownJob):
            await asyncio.wait_for(control.runs("ghost"), 5)
        async with Control(settings, control.scope) as writer:
            with pytest.raises(TimeoutError):  # a write migrates first, so it waits for the lock
                await asyncio.wait_for(writer.put({"job_id": "tick", "cron_expr": YEARLY}), 1.5)
    finally:
        await holder.close()
    assert await control.jobs() == []


async def test_set_repairs_a_stored_definition_that_no_longer_validates(control: Control, pool: asyncpg.Pool) -> None:
    """A cron expression accepted by older rules and refused now (cron reads `5/15` as 5 and drops the step): the job
    gets no schedule, and `set` must still be able to fix it."""
    await control.put({"job_id": "old", "cron_expr": YEARLY})
    await pool.execute(
        "UPDATE scheduler.jobs SET cron_expr = '5/15 * * * *' WHERE scope = $1 AND job_id = 'old'", control.scope
    )
    with pytest.raises(InvalidDefinition):  # the refusal still names the field when the change keeps it
        await control.set("old", {"description": "still broken"})
    repaired = await control.set("old", {"cron_expr": "5-59/15 * * * *"})
    assert repaired.changed and repaired.first_slot is not None and repaired.first_slot.minute in (5, 20, 35, 50)
