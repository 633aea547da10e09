"""Topology against a real RabbitMQ: the delay -> dead-letter -> work hop, idempotence, clear mismatches."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from shared.errors import TopologyMismatch
from shared.topology import (
    QueueType,
    dead_name,
    declare_job,
    declare_scope,
    delay_queue_name,
    delete_scope,
    exchange_name,
    retry_queue_name,
    work_queue_name,
)

pytestmark = pytest.mark.integration

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@dataclass
class Scope:
    """A throwaway scope and every job and work queue a test declared in it, for cleanup."""

    name: str
    job_ids: set[str] = field(default_factory=set)
    queues: set[str] = field(default_factory=set)

    def track(self, job_id: str, queue: str) -> None:
        """Remember a job and its work queue before declaring them, so a failing test still cleans up."""
        self.job_ids.add(job_id)
        self.queues.add(queue)


@pytest.fixture
async def connection() -> AsyncIterator[AbstractRobustConnection]:
    conn = await aio_pika.connect_robust(AMQP_URL)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def scope(connection: AbstractRobustConnection) -> AsyncIterator[Scope]:
    under_test = Scope(name="t" + secrets.token_hex(4))
    try:
        yield under_test
    finally:
        async with connection.channel() as channel:
            await delete_scope(channel, under_test.name, under_test.job_ids, under_test.queues)


async def _declare_job(
    connection: AbstractRobustConnection,
    scope: Scope,
    job_id: str,
    queue: str,
    queue_type: QueueType = "classic",
) -> None:
    """Declare scope and job on a channel of their own, as the framework is meant to be used."""
    scope.track(job_id, queue)
    async with connection.channel() as channel:
        await declare_scope(channel, scope.name, "classic")
        await declare_job(channel, scope.name, job_id, queue, queue_type)


async def _message_count(connection: AbstractRobustConnection, queue_name: str) -> int:
    # A fresh channel: a robust channel answers a passive declare of a queue it knows from its cache.
    async with connection.channel() as channel:
        queue = await channel.declare_queue(queue_name, passive=True)
        count = queue.declaration_result.message_count
        assert count is not None
        return count


async def _next_message(channel: AbstractChannel, queue_name: str, within_s: float) -> AbstractIncomingMessage:
    queue = await channel.declare_queue(queue_name, passive=True)
    async with asyncio.timeout(within_s):
        while True:
            message = await queue.get(no_ack=True, fail=False)
            if message is not None:
                return message
            await asyncio.sleep(0.01)


async def _publish_to_queue(channel: AbstractChannel, queue_name: str, expiration: timedelta | None) -> None:
    message = aio_pika.Message(
        b'{"job_id": "tick"}',
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        expiration=expiration,
    )
    await channel.default_exchange.publish(message, routing_key=queue_name, timeout=5)


async def _assert_delay_hop(connection: AbstractRobustConnection, scope: str, job_id: str, queue: str) -> None:
    """A 300 ms message in the delay queue shows up in the work queue after its TTL, not before."""
    delay, work = delay_queue_name(scope, job_id), work_queue_name(scope, queue)
    async with connection.channel() as channel:
        started = time.monotonic()
        await _publish_to_queue(channel, delay, timedelta(milliseconds=300))
        await asyncio.sleep(0.1)
        assert await _message_count(connection, work) == 0
        message = await _next_message(channel, work, within_s=5)
        elapsed = time.monotonic() - started

    assert elapsed >= 0.28
    assert message.expiration is None  # dead-lettering strips the TTL: it does not expire again
    death = message.headers["x-death"]
    assert isinstance(death, list)
    first = death[0]
    assert isinstance(first, dict)
    assert first["queue"] == delay
    assert first["reason"] == "expired"
    assert first["original-expiration"] == "300"
    assert await _message_count(connection, delay) == 0


async def test_delay_message_reaches_work_queue_after_ttl_via_dlx(
    connection: AbstractRobustConnection, scope: Scope
) -> None:
    await _declare_job(connection, scope, "tick", "tick")
    await _assert_delay_hop(connection, scope.name, "tick", "tick")


async def test_delay_queue_feeds_a_shared_work_queue(connection: AbstractRobustConnection, scope: Scope) -> None:
    await _declare_job(connection, scope, "monitor-start", "price-monitor")
    await _declare_job(connection, scope, "monitor-stop", "price-monitor")
    await _assert_delay_hop(connection, scope.name, "monitor-stop", "price-monitor")


async def test_declare_twice_is_idempotent(connection: AbstractRobustConnection, scope: Scope) -> None:
    await _declare_job(connection, scope, "tick", "tick")
    work, delay = work_queue_name(scope.name, "tick"), delay_queue_name(scope.name, "tick")
    async with connection.channel() as channel:
        jobs = await channel.declare_exchange(exchange_name(scope.name), passive=True)
        await jobs.publish(aio_pika.Message(b"{}"), routing_key=work, timeout=5)
        await _publish_to_queue(channel, delay, timedelta(seconds=60))
    assert (await _message_count(connection, work), await _message_count(connection, delay)) == (1, 1)

    await _declare_job(connection, scope, "tick", "tick")

    assert (await _message_count(connection, work), await _message_count(connection, delay)) == (1, 1)
    with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):  # declared on the job's first retry only
        await _message_count(connection, retry_queue_name(scope.name, "tick"))


async def test_redeclare_with_other_argument_gives_clear_error(
    connection: AbstractRobustConnection, scope: Scope
) -> None:
    scope.track("tick", "tick")
    delay = delay_queue_name(scope.name, "tick")
    async with connection.channel() as channel:
        await channel.declare_queue(
            delay,
            durable=True,
            arguments={
                "x-dead-letter-exchange": exchange_name(scope.name),
                "x-dead-letter-routing-key": work_queue_name(scope.name, "elsewhere"),
            },
        )

    with pytest.raises(TopologyMismatch) as raised:
        await _declare_job(connection, scope, "tick", "tick")

    assert raised.value.name == delay
    assert raised.value.argument == "x-dead-letter-routing-key"
    assert work_queue_name(scope.name, "tick") in raised.value.detail
    assert work_queue_name(scope.name, "elsewhere") in raised.value.detail
    assert "delete" in str(raised.value)


async def test_switching_an_existing_job_to_quorum_is_a_mismatch(
    connection: AbstractRobustConnection, scope: Scope
) -> None:
    await _declare_job(connection, scope, "tick", "tick")

    with pytest.raises(TopologyMismatch) as raised:
        await _declare_job(connection, scope, "tick", "tick", queue_type="quorum")

    assert raised.value.name == work_queue_name(scope.name, "tick")
    assert raised.value.argument == "x-queue-type"


async def test_quorum_job_hops_from_delay_to_work_queue(connection: AbstractRobustConnection, scope: Scope) -> None:
    await _declare_job(connection, scope, "tick", "tick", queue_type="quorum")
    await _declare_job(connection, scope, "tick", "tick", queue_type="quorum")
    await _assert_delay_hop(connection, scope.name, "tick", "tick")


async def test_parked_message_lands_in_the_dead_queue(connection: AbstractRobustConnection, scope: Scope) -> None:
    dead = dead_name(scope.name)
    async with connection.channel() as channel:
        await declare_scope(channel, scope.name, "classic")
        exchange = await channel.declare_exchange(dead, passive=True)
        parked = aio_pika.Message(
            b"not json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={"x-park-reason": "unparseable"},
        )
        await exchange.publish(parked, routing_key="any-key", timeout=5)
        message = await _next_message(channel, dead, within_s=5)

    assert message.body == b"not json"
    assert message.headers["x-park-reason"] == "unparseable"
    assert await _message_count(connection, dead) == 0
