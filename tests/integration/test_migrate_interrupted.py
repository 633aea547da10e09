"""`migrate-queues` interrupted and run again, on the real broker: the messages waiting in a work queue are in the
old work queue, its holding queue or the new work queue at every moment, so a move killed with `kill -9` (or cut
off between a copy's confirm and the original's acknowledgement) loses none; the next run finishes the move, and
a copy left twice is run once by the worker (same run id). Thousands of waiting messages move without loss, and
`doctor` names a holding queue left behind."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest

from shared import chain, topology
from shared.context import RunContext
from shared.control import doctor, migrate
from shared.events.decide import event_run_id
from shared.events.envelope import EventInfo
from shared.messages import JobMessage, event_message, manual_message
from shared.publisher import Publisher
from shared.settings import Settings
from tests.integration.test_cli import cli_here
from tests.support.probe import ProbeParams
from tests.support.queues import declared_as
from tests.support.runtime import Control, fast_settings, now, running_worker, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
YEARLY = "0 0 1 1 *"  # no slot fires during a test: what runs comes from the waiting messages

# A CLI process that dies as `kill -9` would at its n-th copy into a queue (argv: the queue, n, the verb's arguments).
KILLED_AT_NTH_COPY = """
import os, signal, sys
from shared.publisher import Publisher
from scheduler_seed.cli import main

queue, nth, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
republish = Publisher.republish
copies = 0

async def dying(self, queue_name, body, properties):
    global copies
    if queue_name == queue:
        copies += 1
        if copies == nth:
            os.kill(os.getpid(), signal.SIGKILL)
    await republish(self, queue_name, body, properties)

Publisher.republish = dying
sys.exit(main(argv))
"""


async def _migrate_killed_at(settings: Settings, scope: str, queue: str, nth: int) -> None:
    """`migrate-queues --to quorum` in a process killed at its `nth` copy into `queue`."""
    env = {
        **os.environ, "AMQP_URL": settings.amqp_url.get_secret_value(),
        "DATABASE_URL": settings.database_url.get_secret_value(), "SCHEDULER_SCOPE": scope,
    }  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_AT_NTH_COPY, queue, str(nth), "migrate-queues", "--to", "quorum", cwd=ROOT,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == -9


@pytest.fixture(autouse=True)
async def _holding_queues_go(amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str) -> AsyncIterator[None]:
    """A test that fails half-way may leave a holding queue, which the scope's cleanup does not know by name."""
    yield
    channel = await amqp.channel()
    for queue in ("idle", "pair"):
        await channel.queue_delete(topology.holding_queue_name(cleanup_scope, queue))
    await channel.close()


async def _publish_waiting(amqp: aio_pika.abc.AbstractRobustConnection, scope: str, messages: list[JobMessage]) -> None:
    channel = await amqp.channel(publisher_confirms=True)
    publisher = Publisher(channel, scope)
    for first in range(0, len(messages), 500):
        await asyncio.gather(*(publisher.to_work("idle", m) for m in messages[first : first + 500]))
    await channel.close()


async def _count(amqp: aio_pika.abc.AbstractRobustConnection, name: str) -> int | None:
    """Messages ready in the queue `name`; None when it does not exist."""
    channel = await amqp.channel()
    try:
        declared = await channel.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return None
    finally:
        if not channel.is_closed:
            await channel.close()
    return int(declared.declaration_result.message_count or 0)


async def _take_all(
    amqp: aio_pika.abc.AbstractRobustConnection, name: str
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    channel = await amqp.channel()
    queue = await channel.get_queue(name, ensure=False)
    taken = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        taken.append(message)
    await channel.close()
    return taken


def _run_ids(messages: list[aio_pika.abc.AbstractIncomingMessage]) -> Counter[str]:
    return Counter(json.loads(m.body)["run_id"] for m in messages)


async def _doctor_line(pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, scope: str) -> str:
    async with pool.acquire() as conn:
        findings = await doctor.diagnose(conn, amqp, scope, None)
    (finding,) = [f for f in findings if f.check == "migrate-queues"]
    return finding.line


async def test_kill_9_before_the_work_queue_is_filled_again_loses_nothing_and_the_next_run_finishes(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scope = cleanup_scope
    await Control(pool, amqp, scope).seed(job_id="idle", cron_expr=YEARLY)
    waiting = [manual_message("idle", {"mark": i}, now()) for i in range(150)]
    await _publish_waiting(amqp, scope, waiting)
    work, holding = topology.work_queue_name(scope, "idle"), topology.holding_queue_name(scope, "idle")
    # the first copy into the work queue: before this move, the first publish after the old queue was deleted,
    # with every waiting message in the process's memory only
    await _migrate_killed_at(settings, scope, work, 1)

    assert await _count(amqp, work) == 0  # declared with its new type, not filled yet
    assert await _count(amqp, holding) == len(waiting)
    assert "FAIL migrate-queues: a move is under way or was interrupted: " in await _doctor_line(pool, amqp, scope)
    again = await cli_here(capsys, settings, scope, "migrate-queues", "--to", "quorum")
    assert again.code == 0, again.err
    assert "work queue 'idle': quorum -> quorum (an interrupted move, finished now); 1 job(s), " in again.out
    assert f"{len(waiting)} ready message(s) moved" in again.out
    assert await _count(amqp, holding) is None
    assert await declared_as(amqp, topology.work_queue_spec(scope, "idle", "quorum"))
    assert "ok   migrate-queues: no move interrupted" in await _doctor_line(pool, amqp, scope)
    moved = await _take_all(amqp, work)
    assert _run_ids(moved) == Counter(str(m.run_id) for m in waiting)  # each once
    assert all(m.delivery_mode == 2 and m.content_type == "application/json" for m in moved)


async def test_kill_9_while_the_work_queue_empties_loses_nothing_and_duplicates_at_most_a_batch(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="idle", cron_expr=YEARLY)
    waiting = [manual_message("idle", {"mark": i}, now()) for i in range(250)]
    await _publish_waiting(amqp, scope, waiting)
    work, holding = topology.work_queue_name(scope, "idle"), topology.holding_queue_name(scope, "idle")
    await _migrate_killed_at(settings, scope, holding, 150)  # in the second batch: the first is acknowledged
    assert await _count(amqp, work) == len(waiting) - migrate.MOVE_BATCH  # the broker took the second batch back
    async with control.control() as c:
        (moved,) = await c.migrate_queues("quorum")
    assert moved.resumed
    copies = _run_ids(await _take_all(amqp, work))
    assert set(copies) == {str(m.run_id) for m in waiting} and max(copies.values()) <= 2
    assert sum(copies.values()) - len(waiting) < migrate.MOVE_BATCH  # of the second batch, what was confirmed


async def test_cut_off_between_confirm_and_ack_leaves_a_batch_twice_and_the_worker_runs_each_once(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="idle", cron_expr=YEARLY, overlap="allow_all", max_parallel=8)
    waiting = [manual_message("idle", {"mark": i}, now()) for i in range(250)]
    for i in (120, 121):  # in the second batch: the one left twice
        event = EventInfo(topic=f"order.{i}", id=f"ev-{i}", payload={"i": i})
        waiting[i] = event_message(scope, "idle", event_run_id(scope, "idle", event.id), event, None, now())
    await _publish_waiting(amqp, scope, waiting)
    acknowledged = migrate._acknowledge
    batches = 0

    async def cut_off_at_the_second(batch: list[aio_pika.abc.AbstractIncomingMessage]) -> None:
        nonlocal batches
        batches += 1
        if batches == 2:  # its copies are confirmed in the holding queue; the originals go back to the work queue
            raise ConnectionError("connection lost")
        await acknowledged(batch)

    monkeypatch.setattr(migrate, "_acknowledge", cut_off_at_the_second)
    with pytest.raises(ConnectionError):
        async with control.control() as c:
            await c.migrate_queues("quorum")
    monkeypatch.setattr(migrate, "_acknowledge", acknowledged)
    work, holding = topology.work_queue_name(scope, "idle"), topology.holding_queue_name(scope, "idle")
    assert await _count(amqp, holding) == 2 * migrate.MOVE_BATCH
    assert await _count(amqp, work) == len(waiting) - migrate.MOVE_BATCH

    async with control.control() as c:
        (moved,) = await c.migrate_queues("quorum")
    assert moved.moved_messages == len(waiting) + migrate.MOVE_BATCH  # the second batch twice
    assert moved.resumed and (moved.before, moved.after) == ("classic", "quorum")
    assert await _count(amqp, holding) is None

    ran: list[uuid.UUID] = []

    async def record(ctx: RunContext, params: ProbeParams) -> None:
        ran.append(ctx.run_id)

    async def drained() -> bool:
        return await _count(amqp, work) == 0 and len(ran) >= len(waiting)

    async with running_worker(fast_settings(settings, scope), {"idle": (record, ProbeParams)}):
        await wait_until(drained, 60, "every waiting message taken")
        await asyncio.sleep(1.0)  # a duplicate run would start now
    assert Counter(ran) == Counter(m.run_id for m in waiting)  # each run once, the two event runs included
    rows = await control.runs("idle")
    assert Counter(r["run_id"] for r in rows) == Counter(m.run_id for m in waiting)


async def test_thousands_of_waiting_messages_move_without_loss_and_keep_their_properties(
    pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="idle", cron_expr=YEARLY)
    waiting = [manual_message("idle", {"mark": i}, now()) for i in range(2500)]
    await _publish_waiting(amqp, scope, waiting)
    channel = await amqp.channel(publisher_confirms=True)
    properties: dict[str, Any] = {"headers": {"x-origin": "by hand", "n": 7}, "message_id": "by-hand-1"}
    by_hand = manual_message("idle", {"mark": "by hand"}, now())
    await channel.default_exchange.publish(
        aio_pika.Message(by_hand.to_body(), content_type="application/json", delivery_mode=2, **properties),
        routing_key=topology.work_queue_name(scope, "idle"),
    )
    await channel.close()
    started, cpu = time.monotonic(), time.process_time()
    async with control.control() as c:
        (there,) = await c.migrate_queues("quorum")
    took, took_cpu = time.monotonic() - started, time.process_time() - cpu
    async with control.control() as c:
        (back,) = await c.migrate_queues("classic")
    print(f"2,501 waiting messages to quorum: {took:.2f} s ({took_cpu:.2f} s CPU)")
    assert there.moved_messages == back.moved_messages == len(waiting) + 1
    assert not there.resumed and not back.resumed
    moved = await _take_all(amqp, topology.work_queue_name(scope, "idle"))
    assert _run_ids(moved) == Counter(str(m.run_id) for m in [*waiting, by_hand])
    (copy,) = [m for m in moved if m.message_id == "by-hand-1"]
    assert copy.headers == properties["headers"] and copy.content_type == "application/json"
    assert copy.delivery_mode == 2
    assert await _count(amqp, topology.holding_queue_name(scope, "idle")) is None


async def test_interrupted_while_chains_start_again_the_next_run_starts_every_chain(
    pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    for job_id in ("a", "b"):
        await control.seed(job_id=job_id, cron_expr=YEARLY, queue="pair")
    replace_after = chain.replace_after

    async def cut_off_at_b(*args: Any) -> Any:
        if args[3].job_id == "b":  # a's chain is posted, b's delay queue declared and empty
            raise ConnectionError("connection lost")
        return await replace_after(*args)

    monkeypatch.setattr(chain, "replace_after", cut_off_at_b)
    with pytest.raises(ConnectionError):
        async with control.control() as c:
            await c.migrate_queues("quorum")
    monkeypatch.setattr(chain, "replace_after", replace_after)
    assert await _count(amqp, topology.holding_queue_name(scope, "pair")) == 0  # the move's mark, left behind
    assert await _count(amqp, topology.delay_queue_name(scope, "b")) == 0

    async with control.control() as c:
        (moved,) = await c.migrate_queues("quorum")
    assert moved.resumed and set(moved.next_slots) == {"a", "b"} and all(moved.next_slots.values())
    for job_id in ("a", "b"):
        assert await _count(amqp, topology.delay_queue_name(scope, job_id)) == 1  # one chain each
        assert await declared_as(amqp, topology.delay_queue_spec(scope, job_id, "pair", "quorum"))
    assert await _count(amqp, topology.holding_queue_name(scope, "pair")) is None
    async with control.control() as c:
        assert await c.migrate_queues("quorum") == []
