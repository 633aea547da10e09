"""Failover on private highly available servers (tests.chaos.ha_servers): a connection naming every node of a
three-node RabbitMQ cluster moves to another node when its own is killed, and keeps its quorum queue and consumer;
a pool naming a PostgreSQL primary and its synchronous standby fails while there is no primary, then lands on the
promoted standby with every committed row, and the advisory locks of the old primary are gone with it (which is
why a run whose lock connection dies is cancelled: tests/integration/test_runtime_basics.py covers that path)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import aio_pika
import asyncpg
import pytest

from shared import connect
from shared.dependencies import DB_ERRORS
from shared.failover import FailoverConnection, channel_restored
from shared.store.pool import create_pool
from tests.chaos.ha_servers import PgPair, RabbitCluster
from tests.chaos.replication_loss import measure
from tests.support.runtime import until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def pair() -> Iterator[PgPair]:
    servers = PgPair()
    try:
        yield servers.start()
    finally:
        servers.remove()


@pytest.mark.timeout(300)
async def test_a_connection_moves_to_the_next_node_when_its_node_is_killed(cluster: RabbitCluster) -> None:
    name = f"t{secrets.token_hex(4)}.ha"
    connection = await connect.rabbitmq(cluster.short_url("guest", "guest"), "test", cap_sec=2, name=name)
    assert isinstance(connection, FailoverConnection)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        received: list[bytes] = []

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            received.append(message.body)
            await message.ack()

        await queue.consume(on_message)
        await channel.default_exchange.publish(aio_pika.Message(b"before"), routing_key=name)
        await until(lambda: received == [b"before"])

        first = connection.node
        (index,) = [i for i, n in enumerate(cluster.nodes) if first.endswith(f":{n.port}")]
        cluster.kill(index)
        await until(lambda: connection.connected.is_set() and connection.node != first)
        # `connected` is set before aio-pika restores the channels on the new node: publish once this one is back
        assert await channel_restored(channel, within_sec=60)

        await channel.default_exchange.publish(aio_pika.Message(b"after"), routing_key=name)
        await until(lambda: received == [b"before", b"after"])  # the consumer came back on the new node
        await cluster.restart(index)
        await channel.queue_delete(name)
    finally:
        await connection.close()


@pytest.mark.timeout(300)
async def test_a_pool_fails_while_there_is_no_primary_then_finds_the_promoted_standby_with_every_row(
    pair: PgPair,
) -> None:
    pool = await create_pool(pair.dsn(), min_size=1, max_size=2, timeout=5)
    try:
        await pool.execute("CREATE TABLE ha_rows (n int PRIMARY KEY)")
        await pool.executemany("INSERT INTO ha_rows VALUES ($1)", [(n,) for n in range(200)])
        lock_conn = await asyncpg.connect(pair.dsn(), timeout=5)
        assert await lock_conn.fetchval("SELECT pg_try_advisory_lock(42)")
        ended = asyncio.Event()
        lock_conn.add_termination_listener(lambda _: ended.set())

        switch = asyncio.create_task(pair.switchover(gap_sec=3))
        await asyncio.wait_for(ended.wait(), 30)  # the session holding the lock is gone with the old primary
        with pytest.raises(DB_ERRORS):
            await pool.fetchval("SELECT count(*) FROM ha_rows")
        await switch

        deadline = asyncio.get_running_loop().time() + 60
        while True:
            try:
                count = await pool.fetchval("SELECT count(*) FROM ha_rows")
                break
            except DB_ERRORS:
                assert asyncio.get_running_loop().time() < deadline, "no primary found after the promotion"
                await asyncio.sleep(0.5)
        assert count == 200
        assert await pool.fetchval("SELECT NOT pg_is_in_recovery()")
        assert await pool.fetchval("SELECT pg_try_advisory_lock(42)"), "the old primary's lock did not carry over"
        await pool.execute("INSERT INTO ha_rows VALUES (200)")
    finally:
        await pool.close()


@pytest.mark.timeout(300)
async def test_a_promoted_synchronous_standby_has_every_acknowledged_commit_and_an_asynchronous_one_does_not() -> None:
    """The primary's link to its standby stalls for half a second, then the primary dies mid-stream."""
    synchronous = await measure(True, seconds=2, writers=4, lag=0.5)
    assert synchronous["acknowledged_commits"] > 0 and synchronous["missing_on_promoted_standby"] == 0, synchronous
    asynchronous = await measure(False, seconds=2, writers=4, lag=0.5)
    assert asynchronous["missing_on_promoted_standby"] > 0, asynchronous
