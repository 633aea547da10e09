"""Publishing with publisher confirms: every publish waits for the broker's ack, a nack or a return raises.

One place knows where each kind of message goes: the delay queue (chain), the retry queue (retries and
buffered slots), the work queue (run-now, events, startup) and parking.

A publish is one frame set written to the channel and one confirmation awaited, under one deadline for the
whole of it: the message properties are built directly (persistent JSON), without an intermediate message
object, and no per-step timer is armed inside the client library.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel

from shared import topology
from shared.messages import JobMessage

PUBLISH_TIMEOUT_SEC = 10.0
PERSISTENT = 2  # AMQP delivery mode: written to disk by the broker before it confirms


def _properties(
    *, expiration_ms: int | None = None, headers: dict[str, Any] | None = None, message_id: str | None = None
) -> aiormq.spec.Basic.Properties:
    return aiormq.spec.Basic.Properties(
        content_type="application/json",
        delivery_mode=PERSISTENT,
        expiration=None if expiration_ms is None else str(expiration_ms),
        headers=headers or {},
        message_id=message_id,
    )


def until(fire_at: datetime, now: datetime) -> timedelta:
    """Time left until `fire_at`, never negative (RabbitMQ refuses a negative expiration), whole milliseconds."""
    ms = max(0, round((fire_at - now).total_seconds() * 1000))
    return timedelta(milliseconds=ms)


def _ms(delay: timedelta) -> int:
    return round(delay.total_seconds() * 1000)


class Publisher:
    """Routes job messages of one scope. The channel must have publisher confirms on (aio-pika's default)."""

    def __init__(
        self, channel: AbstractChannel, scope: str, timeout: float = PUBLISH_TIMEOUT_SEC, lead_ms: int = 0
    ) -> None:
        self.channel = channel
        self.scope = scope
        self.timeout = timeout
        self.lead = timedelta(milliseconds=lead_ms)  # chain messages leave their delay queue this much early

    async def _publish(
        self, exchange: str, routing_key: str, body: bytes, properties: aiormq.spec.Basic.Properties
    ) -> None:
        if self.channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError(f"{self.channel!r} closed")
        async with asyncio.timeout(self.timeout):
            # the channel underneath a robust channel is the current one (after a reconnect, the new one)
            channel = await self.channel.get_underlay_channel()
            await channel.basic_publish(
                body, exchange=exchange, routing_key=routing_key, properties=properties, mandatory=True
            )

    async def _to_queue(self, queue_name: str, body: bytes, properties: aiormq.spec.Basic.Properties) -> None:
        # Through the scope's exchange (delay and retry queues are bound to it under their own names), never the
        # default exchange: a user whose permissions end at `S.` may write `S.jobs` but not `amq.default`,
        # through which any queue of any scope could be reached.
        await self._publish(topology.exchange_name(self.scope), queue_name, body, properties)

    async def to_delay(self, message: JobMessage, fire_at: datetime, now: datetime) -> None:
        """The chain's next message: it waits in the job's delay queue and dead-letters into the work queue, the
        publisher's lead before `fire_at` (shared.lead)."""
        name = topology.delay_queue_name(self.scope, message.job_id)
        expiration = _ms(until(fire_at - self.lead, now))
        await self._to_queue(name, message.to_body(), _properties(expiration_ms=expiration))

    async def to_retry(self, message: JobMessage, delay_sec: float) -> None:
        name = topology.retry_queue_name(self.scope, message.job_id)
        await self._to_queue(name, message.to_body(), _properties(expiration_ms=round(delay_sec * 1000)))

    async def to_work(self, queue: str, message: JobMessage) -> None:
        """Straight to a work queue through the scope's exchange (run-now, events, startup)."""
        await self._to_queue(topology.work_queue_name(self.scope, queue), message.to_body(), _properties())

    async def emit(self, topic: str, body: bytes, message_id: str, headers: dict[str, Any] | None = None) -> None:
        """An event to the scope's `S.events` topic exchange, under its id. Not `mandatory`: an event no job
        subscribes to is simply not routed (that is not an error for whoever emits it)."""
        properties = aiormq.spec.Basic.Properties(
            content_type="application/json",
            delivery_mode=PERSISTENT,
            message_id=message_id,
            timestamp=datetime.now(UTC),
            headers=headers or {},
        )
        if self.channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError(f"{self.channel!r} closed")
        async with asyncio.timeout(self.timeout):
            channel = await self.channel.get_underlay_channel()
            await channel.basic_publish(
                body, exchange=topology.events_exchange_name(self.scope), routing_key=topic, properties=properties
            )

    async def park(self, body: bytes, reason: str, detail: str, source_queue: str, headers: dict[str, Any]) -> None:
        """Poison message to `S.jobs.dead`, with why in its headers and a short message_id to replay it by.
        The body is kept byte for byte."""
        parked_headers = {
            **{k: v for k, v in headers.items() if not k.startswith("x-death")},
            "x-park-reason": reason,
            "x-park-detail": detail[:1000],
            "x-original-queue": source_queue,
        }
        properties = _properties(headers=parked_headers, message_id=uuid.uuid4().hex[:12])
        await self._publish(topology.dead_name(self.scope), "", body, properties)
