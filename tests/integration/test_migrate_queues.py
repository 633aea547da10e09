"""`migrate-queues` on the real broker with a worker running: the scope moves from classic to quorum and back,
the worker consumes again from the redeclared queue, every slot runs once and none is skipped, a run-now
message waiting in a work queue survives, and the move is in the audit."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise

import aio_pika
import asyncpg
import pytest

from shared import topology
from shared.locks import migrate_lock_key
from shared.messages import manual_message
from shared.publisher import Publisher
from shared.settings import Settings
from tests.integration.test_cli import cli_here
from tests.support.logcapture import capture_logs
from tests.support.probe import ProbeParams, probe
from tests.support.queues import declared_as
from tests.support.runtime import Control, fast_settings, now, running_worker, slots_run_more_than_once, wait_until

pytestmark = pytest.mark.integration


def _lost_slots(rows: list[asyncpg.Record]) -> list[datetime]:
    """One-second slots without a row between two rows, other than those a late run stepped over (a run posts the
    slot after its start: the slots it was late for are not run, by design)."""
    lost = []
    for a, b in pairwise(rows):
        missing = a["scheduled_for"] + timedelta(seconds=1)
        while missing < b["scheduled_for"]:
            if a["started_at"] is None or missing > a["started_at"]:
                lost.append(missing)
            missing += timedelta(seconds=1)
    return lost


async def test_scope_moves_to_quorum_and_back_under_a_running_worker(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="tick", interval_seconds=1)
    await control.seed(job_id="idle", cron_expr="0 0 1 1 *")  # no worker serves it: its run-now message waits
    channel = await amqp.channel(publisher_confirms=True)
    await Publisher(channel, scope).to_work("idle", manual_message("idle", {"mark": 1}, now()))

    async def chain_slots() -> list[asyncpg.Record]:
        return [r for r in await control.runs("tick") if r["epoch"] is not None and r["attempt"] == 1]

    async def finished(at_least: int) -> bool:
        return sum(1 for r in await chain_slots() if r["status"] == "succeeded") >= at_least

    with capture_logs() as logs:
        async with running_worker(fast_settings(settings, scope), {"tick": (probe, ProbeParams)}):
            await wait_until(lambda: finished(2), 20, "2 runs before the move")
            async with control.control() as c:
                moved = await c.migrate_queues("quorum")
            assert {m.queue: (m.before, m.after) for m in moved} == {
                "idle": ("classic", "quorum"), "tick": ("classic", "quorum"),
            }  # fmt: skip
            before = len(await chain_slots())
            await wait_until(lambda: finished(before + 3), 30, "3 runs after the move to quorum")
            async with control.control() as c:
                (back,) = await c.migrate_queues("classic", queue="tick")
                assert await c.migrate_queues("quorum", queue="idle") == []  # already there: nothing to do
            assert (back.before, back.after) == ("quorum", "classic")
            before = len(await chain_slots())
            await wait_until(lambda: finished(before + 3), 30, "3 runs after the move back")
    rows = await chain_slots()
    assert slots_run_more_than_once(await control.runs("tick")) == []
    assert not _lost_slots(rows), _lost_slots(rows)
    assert any(e.get("event") == "worker.consuming_again" for e in logs)
    assert await declared_as(amqp, topology.work_queue_spec(scope, "tick", "classic"))
    assert await declared_as(amqp, topology.delay_queue_spec(scope, "tick", "tick", "classic"))
    assert await declared_as(amqp, topology.work_queue_spec(scope, "idle", "quorum"))
    assert await declared_as(amqp, topology.delay_queue_spec(scope, "idle", "idle", "quorum"))
    assert (await control.job("idle"))["queue_type"] == "quorum"
    waiting = await channel.declare_queue(topology.work_queue_name(scope, "idle"), passive=True)
    assert waiting.declaration_result.message_count == 1  # the run-now message moved with its queue
    await channel.close()
    async with control.control() as c:
        entries = [e for e in await c.audit(20) if e.action == "migrate-queues"]
    assert len(entries) == 3


async def test_cli_verb_moves_a_queue_and_refuses_an_unknown_one(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scope = cleanup_scope
    await Control(pool, amqp, scope).seed(job_id="solo", cron_expr="0 0 1 1 *")
    moved = await cli_here(capsys, settings, scope, "migrate-queues", "--to", "quorum", "--queue", "solo")
    assert moved.code == 0 and "work queue 'solo': classic -> quorum; 1 job(s)" in moved.out
    assert "solo next " in moved.out
    again = await cli_here(capsys, settings, scope, "migrate-queues", "--to", "quorum")
    assert again.code == 0 and "nothing to move" in again.out
    unknown = await cli_here(capsys, settings, scope, "migrate-queues", "--to", "quorum", "--queue", "nope")
    assert unknown.code != 0 and "no job of scope" in unknown.error_line and "'nope'" in unknown.error_line


async def test_a_second_move_of_the_scope_is_refused_while_one_is_under_way(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A move holds the scope's move lock (a PostgreSQL session lock) from start to end: another one, from
    another session, is refused with exit code 3 and one line naming the session in the way, and touches no
    queue; once the first is done (or killed: its session ends), the move goes ahead."""
    scope = cleanup_scope
    await Control(pool, amqp, scope).seed(job_id="solo", cron_expr="0 0 1 1 *")
    work = topology.work_queue_spec(scope, "solo", "classic")
    async with pool.acquire() as first:  # the move under way
        await first.execute("SELECT set_config('application_name', 'first-move', false)")
        assert await first.fetchval("SELECT pg_try_advisory_lock($1)", migrate_lock_key(scope))
        refused = await cli_here(capsys, settings, scope, "migrate-queues", "--to", "quorum")
        assert refused.code == 3
        assert f"another migrate-queues of scope '{scope}' is under way" in refused.error_line
        assert "'first-move'" in refused.error_line and "nothing was touched" in refused.error_line
        assert await declared_as(amqp, work)  # still classic: not touched
        await first.execute("SELECT pg_advisory_unlock_all()")
        await first.execute("RESET application_name")
    moved = await cli_here(capsys, settings, scope, "migrate-queues", "--to", "quorum")
    assert moved.code == 0 and "work queue 'solo': classic -> quorum" in moved.out
    async with pool.acquire() as conn:  # the move gave its lock back
        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", migrate_lock_key(scope))
        await conn.execute("SELECT pg_advisory_unlock_all()")
