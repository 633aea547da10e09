"""Consumers across a reconnect (shared.worker: `_keep_consuming`, `forget_consumer`).

The HA soak with faults 1-2 s apart lost chain messages this way: after `close_all_connections`, a worker looked
at its channel while the robust connection was still restoring its consumers one queue after the other (seconds,
on a loaded cluster of quorum queues), took one not restored yet for a consumer the broker had cancelled, consumed
the queue again and cancelled the old tag while the restore registered that tag again. aiormq drops a tag's
callback on any cancel-ok for it: the broker kept a consumer the worker no longer had, and each message it was
given (every third one, with three consumers) stayed unacknowledged and unseen until the channel closed. The worker
now looks only at a channel restored in full, and forgets a cancelled consumer without a basic.cancel."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import aio_pika
import asyncpg
import pytest
from yarl import URL

from shared import topology
from shared.settings import Settings
from shared.worker import forget_consumer
from tests.support.faults import close_rabbitmq_connections
from tests.support.logcapture import capture_logs
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import Control, fast_settings, now, running_worker, wait_until

pytestmark = pytest.mark.integration


async def has_consumer(amqp: aio_pika.abc.AbstractRobustConnection, scope: str, queue: str) -> bool:
    channel = await amqp.channel()
    try:
        declared = await channel.declare_queue(topology.work_queue_name(scope, queue), passive=True)
        return bool(declared.declaration_result.consumer_count)
    finally:
        await channel.close()


async def test_a_slow_consumer_restore_is_waited_for_and_every_slot_after_it_runs(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="tick", interval_seconds=1)
    restore = aio_pika.RobustQueue.restore

    async def slow_restore(self: aio_pika.RobustQueue, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(2.0)  # a queue of a loaded cluster: the worker looks at its consumers meanwhile
        await restore(self, *args, **kwargs)

    monkeypatch.setattr(aio_pika.RobustQueue, "restore", slow_restore)

    async def ran_after(since: datetime, count: int) -> bool:
        rows = await control.runs("tick")
        return sum(1 for r in rows if r["status"] == "succeeded" and r["scheduled_for"] > since) >= count

    async def first_run_after(since: datetime) -> datetime:
        rows = await control.runs("tick")
        return min(r["scheduled_for"] for r in rows if r["status"] == "succeeded" and r["scheduled_for"] > since)

    with capture_logs() as logs:
        # the watchdog waits 30 s before it calls a chain lost: a message waiting out the slow restore is not
        # reseeded meanwhile (a message really lost leaves a gap, which the checks below find)
        worker_settings = fast_settings(settings, scope, chain_lost_after_sec="30")
        async with running_worker(worker_settings, {"tick": (probe, ProbeParams)}) as worker:
            await wait_until(lambda: ran_after(now() - timedelta(hours=1), 2), 20, "2 runs before the fault")
            assert await asyncio.to_thread(close_rabbitmq_connections, worker.worker_id) == 1
            # restored: the broker counts a consumer on the work queue again (each queue's restore takes 2 s here, and
            # the watchdog may reseed a chain whose message waited that long: slots of that time are not looked at)
            await wait_until(lambda: has_consumer(amqp, scope, "tick"), 40, "the work queue consumed again")
            # the chain's next post may still wait on the other channels' restore (seconds): slots it arrives too
            # late for are recorded as jumped over. The chain is back once a slot after the restore has run.
            restored = now()
            await wait_until(lambda: ran_after(restored, 1), 40, "a run after the consumers were restored")
            back = await first_run_after(restored)
            await wait_until(lambda: ran_after(back, 6), 40, "6 runs after the chain was back")
    cancelled = [e for e in logs if e.get("event") == "worker.consumer_cancelled"]
    assert cancelled == [], "a consumer being restored was taken for one the broker cancelled"
    rows = [r for r in await control.runs("tick") if r["scheduled_for"] > back]
    # every slot after the chain was back was taken by a worker: run, or skipped by the overlap policy when a run slowed
    # by a loaded machine still held the lock (a slot whose message was stuck has no row: the gap check below)
    taken = {"succeeded", "skipped_locked"}
    notable = {"chain.reseeded", "rabbitmq.confirms_stalled", "rabbitmq.call_stalled", "worker.consuming_again"}
    seen = [(e.get("timestamp"), e["event"], e.get("reason")) for e in logs if e.get("event") in notable]
    untaken = [(r["scheduled_for"], r["status"], r["error"]) for r in rows if r["status"] not in taken]
    assert untaken == [], f"every slot after {back} was taken: {untaken}; {seen}"
    slots = sorted(r["scheduled_for"] for r in rows)
    assert all((b - a).total_seconds() == 1.0 for a, b in pairwise(slots)), slots


async def test_a_forgotten_consumer_keeps_its_callback_and_is_not_restored_after_a_reconnect(
    settings: Settings, cleanup_scope: str
) -> None:
    """`forget_consumer` (what the worker does with a consumer the broker cancelled) sends nothing: were the consumer
    still there after all, its messages would still reach its callback; and a reconnect no longer restores it. Pins
    the aio-pika behaviour it relies on (a RobustQueue keeps the consumers it restores in `_consumers`)."""
    name_tag = f"forget-{secrets.token_hex(4)}"
    url = str(URL(settings.amqp_urls[0]).update_query(name=name_tag))
    connection = await aio_pika.connect_robust(url, reconnect_interval=0.2)
    try:
        channel = await connection.channel()
        name = topology.work_queue_name(cleanup_scope, "forget")
        queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        seen: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            seen.put_nowait(message.body)

        tag = await queue.consume(on_message)
        forget_consumer(queue, tag)
        await channel.default_exchange.publish(aio_pika.Message(b"still-read"), routing_key=name)
        assert await asyncio.wait_for(seen.get(), 10) == b"still-read"  # no cancel went out: it still consumes

        before = await channel.get_underlay_channel()
        assert await asyncio.to_thread(close_rabbitmq_connections, name_tag) == 1
        underlay = await _reopened(channel, before)  # reconnected, every queue and consumer restored
        assert tag not in underlay.consumers, "a forgotten consumer came back with the reconnect"
        await channel.queue_delete(name)
    finally:
        await connection.close()


async def test_a_cancel_answered_after_a_consume_of_the_same_tag_leaves_a_consumer_nobody_reads(
    amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    """Why the worker never cancels a consumer it thinks is gone (`shared.worker.forget_consumer`): aiormq registers
    a consumer's callback before it sends basic.consume and removes it on the cancel-ok of an earlier basic.cancel
    of the same tag. The broker keeps the consumer; what it delivers there is never seen, never acked."""
    channel = await amqp.channel()
    name = topology.work_queue_name(cleanup_scope, "ghost")
    await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    underlay = await channel.get_underlay_channel()
    seen: list[bytes] = []

    async def on_message(message: Any) -> None:
        seen.append(message.body)

    try:
        cancel = asyncio.create_task(underlay.basic_cancel("restored"))  # on the wire first
        await asyncio.sleep(0)
        consume = asyncio.create_task(underlay.basic_consume(name, on_message, consumer_tag="restored"))
        await asyncio.gather(cancel, consume)
        assert "restored" not in underlay.consumers  # the client forgot the consumer it had just registered
        for i in range(3):
            await channel.default_exchange.publish(aio_pika.Message(f"m{i}".encode()), routing_key=name)
        held = await _held_by_a_consumer(name, 3)
        assert held and seen == [], f"the broker holds 3 messages for a consumer nobody reads: {held}, {seen}"
    finally:
        await channel.queue_delete(name)
        await channel.close()


async def _reopened(channel: aio_pika.abc.AbstractChannel, before: Any, within_sec: float = 30) -> Any:
    """The channel's new underlying channel once the robust connection has reopened and restored it."""
    async with asyncio.timeout(within_sec):
        while True:
            await channel.ready()  # type: ignore[attr-defined]
            underlay = await channel.get_underlay_channel()
            if underlay is not before and not underlay.is_closed:
                return underlay
            await asyncio.sleep(0.2)


async def _held_by_a_consumer(name: str, count: int, within_sec: float = 20) -> dict[str, Any]:
    """The queue's row once `count` messages are unacknowledged to its one consumer (quorum queue counters are
    refreshed every few seconds), or {}."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_sec
    while loop.time() < deadline:
        out = await asyncio.to_thread(
            subprocess.run,
            ["rabbitmqctl", "-q", "list_queues", "name", "messages_unacknowledged", "consumers", "--formatter", "json"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        row = next((q for q in json.loads(out.stdout or "[]") if q["name"] == name), {})
        if row.get("messages_unacknowledged") == count and row.get("consumers") == 1:
            return dict(row)
        await asyncio.sleep(1)
    return {}
