"""A node frozen (SIGSTOP) while a worker's connection goes through it, on private highly available servers
(tests.chaos.ha_servers): the purge of a quorum delay queue led by that node, sent while it is frozen, is never
answered after the thaw (the old leader takes it, steps down, and drops it; RabbitMQ 3.10's channel waits 30 s,
then closes the whole connection with 541 INTERNAL_ERROR). The purge runs under the job's chain lock, which every
worker's claim of the job waits for. With the bound of shared.connection_watch the lock is given back after the
bound, the connection moves to another node, and deliveries go on there; nothing is delivered twice."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass

import aio_pika
import asyncpg
import pytest

from shared import chain, connect, connection_watch, topology
from shared.brokers import node_label
from shared.connection_watch import BrokerStalled
from shared.failover import FailoverConnection, channel_restored
from shared.locks import chain_lock, wait_for_chain
from tests.chaos.ha_servers import RabbitCluster
from tests.support.logcapture import capture_logs
from tests.support.runtime import until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUORUM = {"x-queue-type": "quorum"}
FREEZE_SEC = 12.0
PURGE_AFTER_SEC = 2.0  # into the freeze: the purge waits in the frozen node's socket, as the watchdog's did


@dataclass
class Freeze:
    outcome: BaseException | None  # what the locked purge ended with
    lock_held_sec: float  # from the purge being sent to the chain lock being free for another session
    after_thaw_sec: float  # from the thaw to the chain lock being free
    node_after: str
    delivered: list[int]


async def _declare(url: str, *names: str) -> None:
    """Quorum queues declared through one node: their leader is that node (client-local placement)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        for name in names:
            await channel.declare_queue(name, durable=True, arguments=QUORUM)
    finally:
        await connection.close()


async def _delete(cluster: RabbitCluster, *names: str) -> None:
    with contextlib.suppress(Exception):
        connection = await aio_pika.connect(cluster.nodes[1].url(), timeout=10)
        try:
            channel = await connection.channel()
            for name in names:
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name)
        finally:
            await connection.close()


async def _publish(channel: aio_pika.abc.AbstractChannel, queue: str, numbers: range) -> None:
    for n in numbers:
        await channel.default_exchange.publish(aio_pika.Message(str(n).encode()), routing_key=queue, timeout=10)


async def _freeze_during_locked_purge(cluster: RabbitCluster, dsn: str) -> Freeze:
    """A connection through node 0 consumes a work queue led by node 1 and purges, under the job's chain lock,
    a delay queue led by node 0 while node 0 is frozen."""
    loop = asyncio.get_running_loop()
    scope, job = f"t{secrets.token_hex(4)}", "frozen"
    delay, work = topology.delay_queue_name(scope, job), topology.work_queue_name(scope, "work")
    frozen = cluster.nodes[0]
    await _declare(frozen.url(), delay)
    await _declare(cluster.nodes[1].url(), work)
    assert (await cluster.leaders())[delay] == frozen.node
    client = await connect.rabbitmq(cluster.urls("guest", "guest"), "test", cap_sec=2, name=scope)
    assert isinstance(client, FailoverConnection) and client.node == node_label(frozen.url())
    holder = await asyncpg.connect(dsn)
    waiter = await asyncpg.connect(dsn)
    try:
        consuming = await client.channel()
        await consuming.set_qos(prefetch_count=10)
        delivered: list[int] = []

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            delivered.append(int(message.body))
            await message.ack()

        queue = await consuming.declare_queue(work, durable=True, arguments=QUORUM)
        await queue.consume(on_message)
        publishing = await client.channel(publisher_confirms=True)
        purging = await client.channel(publisher_confirms=True)
        await _publish(publishing, work, range(5))
        await until(lambda: len(delivered) == 5, 30)

        cluster.freeze(0)
        try:
            await asyncio.sleep(PURGE_AFTER_SEC)

            async def locked_purge() -> None:
                async with holder.transaction():
                    await chain_lock(holder, scope, job)
                    await chain.purge_delay_queue(purging, scope, job)

            sent = loop.time()
            purge = asyncio.create_task(locked_purge())
            await asyncio.sleep(0.5)
            lock_free = asyncio.create_task(wait_for_chain(waiter, scope, job))
            await asyncio.sleep(FREEZE_SEC - PURGE_AFTER_SEC - 0.5)
        finally:
            cluster.thaw(0)
        thawed = loop.time()
        await asyncio.wait_for(lock_free, 90)
        freed = loop.time()
        (outcome,) = await asyncio.wait_for(asyncio.gather(purge, return_exceptions=True), 90)

        await until(lambda: not client.is_closed and client.connected.is_set(), 90)
        assert await channel_restored(consuming, 60)
        await _publish(publishing, work, range(100, 120))
        await until(lambda: len(delivered) == 25, 60)
        await asyncio.sleep(1)  # anything delivered twice would come now
        return Freeze(
            outcome=outcome,
            lock_held_sec=round(freed - sent, 1),
            after_thaw_sec=round(freed - thawed, 1),
            node_after=client.node,
            delivered=list(delivered),
        )
    finally:
        cluster.thaw(0)
        await holder.close()
        await waiter.close()
        await client.close()
        await _delete(cluster, delay, work)


@pytest.mark.timeout(600)
@pytest.mark.broker_control
async def test_without_a_bound_a_purge_a_thawed_node_never_answers_holds_the_chain_lock_30_s(
    cluster: RabbitCluster, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker behaviour the bound is for (a control: `make test-broker-controls`)."""
    # without a bound (longer than the broker's own 30 s): the lock waits for the broker to close the connection
    monkeypatch.setattr(connection_watch, "RPC_TIMEOUT_SEC", 120.0)
    unbounded = await _freeze_during_locked_purge(cluster, database_url)
    print(f"\nunbounded purge: {unbounded}")
    assert not isinstance(unbounded.outcome, BrokerStalled)
    assert unbounded.after_thaw_sec > 20  # the broker's own 30 s past the thaw
    assert sorted(unbounded.delivered) == [*range(5), *range(100, 120)]


@pytest.mark.timeout(600)
async def test_a_purge_a_thawed_node_never_answers_gives_the_chain_lock_back_and_moves_the_connection(
    cluster: RabbitCluster, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen = node_label(cluster.nodes[0].url())
    monkeypatch.setattr(connection_watch, "RPC_TIMEOUT_SEC", 10.0)
    with capture_logs() as logs:
        bounded = await _freeze_during_locked_purge(cluster, database_url)
    print(f"bounded purge: {bounded}")

    assert isinstance(bounded.outcome, BrokerStalled), bounded.outcome
    stalled = [e for e in logs if e["event"] == "rabbitmq.call_stalled"]
    assert [(e["node"], e["call"].split()[0]) for e in stalled] == [(frozen, "queue.purge")]
    moves = [e for e in logs if e["event"] == "rabbitmq.failover"]
    assert moves and moves[0]["lost"] == frozen
    assert bounded.node_after != frozen
    assert sorted(bounded.delivered) == [*range(5), *range(100, 120)]  # deliveries went on, each message once
    # given back at the bound (10 s after the purge was sent, about when the node thaws): the broker alone keeps
    # it until 30 s past the thaw (the control above)
    assert bounded.after_thaw_sec < 20


async def _freeze_with_publishes(cluster: RabbitCluster, stall_sec: float | None) -> dict[str, object]:
    """A connection through node 0 publishes (with confirms) to, and consumes from, a queue led by node 1 while
    node 0 is frozen `FREEZE_LONG_SEC`; with `stall_sec`, a ConfirmWatch looks after it."""
    loop = asyncio.get_running_loop()
    scope = f"t{secrets.token_hex(4)}"
    work = topology.work_queue_name(scope, "work")
    frozen = node_label(cluster.nodes[0].url())
    await _declare(cluster.nodes[1].url(), work)
    client = await connect.rabbitmq(cluster.urls("guest", "guest"), "test", cap_sec=2, name=scope)
    assert isinstance(client, FailoverConnection) and client.node == frozen
    tasks: list[asyncio.Task[None]] = []
    try:
        consuming = await client.channel()
        await consuming.set_qos(prefetch_count=10)
        delivered: list[tuple[int, float]] = []

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            delivered.append((int(message.body), loop.time()))
            await message.ack()

        queue = await consuming.declare_queue(work, durable=True, arguments=QUORUM)
        await queue.consume(on_message)
        publishing = await client.channel(publisher_confirms=True)
        if stall_sec is not None:
            watch = connection_watch.ConfirmWatch([publishing], stall_sec)
            tasks.append(asyncio.create_task(watch.run()))
        confirmed: list[int] = []

        async def publish(n: int) -> None:
            with contextlib.suppress(Exception):  # timed out or the channel closed: not retried, not counted
                await _publish(publishing, work, range(n, n + 1))
                confirmed.append(n)

        async def publish_all() -> None:
            n = 0
            while True:
                tasks.append(asyncio.create_task(publish(n)))
                n += 1
                await asyncio.sleep(0.2)

        tasks.append(asyncio.create_task(publish_all()))
        await asyncio.sleep(2)
        cluster.freeze(0)
        frozen_at = loop.time()
        try:
            await asyncio.sleep(FREEZE_LONG_SEC)
        finally:
            cluster.thaw(0)
        thawed = loop.time()
        await asyncio.sleep(5)
        for task in tasks:
            task.cancel()
        await asyncio.sleep(3)
        numbers = [n for n, _ in delivered]
        during = [at for _, at in delivered if frozen_at + 1 < at < thawed]
        return {
            "node_after": client.node,
            "first_delivery_in_freeze_sec": round(min(during) - frozen_at, 1) if during else None,
            "delivered_in_freeze": len(during),
            "twice": sorted({n for n in numbers if numbers.count(n) > 1}),
            "confirmed_not_delivered": sorted(set(confirmed) - set(numbers)),
        }
    finally:
        for task in tasks:
            task.cancel()
        cluster.thaw(0)
        await client.close()
        await _delete(cluster, work)


FREEZE_LONG_SEC = 20.0


@pytest.mark.timeout(600)
@pytest.mark.broker_control
async def test_without_the_watch_a_connection_through_a_frozen_node_delivers_nothing_until_the_thaw(
    cluster: RabbitCluster,
) -> None:
    """The broker behaviour the watch is for (a control: `make test-broker-controls`)."""
    unwatched = await _freeze_with_publishes(cluster, None)
    print(f"\nunwatched: {unwatched}")
    assert unwatched["delivered_in_freeze"] == 0  # the connection waits for the node
    assert unwatched["twice"] == [] and unwatched["confirmed_not_delivered"] == []


@pytest.mark.timeout(600)
async def test_a_connection_whose_confirms_stop_moves_to_another_node_and_delivers_there_before_the_thaw(
    cluster: RabbitCluster,
) -> None:
    frozen = node_label(cluster.nodes[0].url())
    with capture_logs() as logs:
        watched = await _freeze_with_publishes(cluster, 5.0)
    print(f"watched (5 s): {watched}")

    stalled = [e for e in logs if e["event"] == "rabbitmq.confirms_stalled"]
    assert stalled and stalled[0]["node"] == frozen
    assert watched["node_after"] != frozen
    assert watched["delivered_in_freeze"] > 0  # moved while the node was still frozen, and went on there
    assert watched["twice"] == [] and watched["confirmed_not_delivered"] == []
