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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel

from shared import topology
from shared.errors import SchedulerError
from shared.messages import JobMessage
from shared.settings import TTL_CEILING_MS

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


def _reply_text(exc: aiormq.exceptions.PublishError) -> str:
    """What the broker said when it returned a mandatory message (NO_ROUTE: no queue bound for its key)."""
    return str(getattr(getattr(exc.message, "delivery", None), "reply_text", ""))


def until(fire_at: datetime, now: datetime) -> timedelta:
    """Time left until `fire_at`, never negative (RabbitMQ refuses a negative expiration), whole milliseconds."""
    ms = max(0, round((fire_at - now).total_seconds() * 1000))
    return timedelta(milliseconds=ms)


def _ms(delay: timedelta) -> int:
    return round(delay.total_seconds() * 1000)


class Publisher:
    """Routes job messages of one scope. The channel must have publisher confirms on (aio-pika's default)."""

    def __init__(
        self,
        channel: AbstractChannel,
        scope: str,
        timeout: float = PUBLISH_TIMEOUT_SEC,
        lead_ms: int = 0,
        ttl_ceiling_ms: int = TTL_CEILING_MS,
        declare_retry: Callable[[str], Awaitable[None]] | None = None,
        scope_queue_type: topology.QueueType = "classic",
    ) -> None:
        self.channel = channel
        self.scope = scope
        self.timeout = timeout
        self.lead = timedelta(milliseconds=lead_ms)  # chain messages leave their delay queue this much early
        self.ttl_ceiling_ms = ttl_ceiling_ms
        self.declare_retry = declare_retry  # declares a job's retry queue (by job id) on first need
        # the scope's queue type (Settings.scheduler_queue_type): its parking and event queues are of this type,
        # declared by whoever publishes for the scope
        self.scope_queue_type = scope_queue_type

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
        publisher's lead before `fire_at` (shared.lead). A slot further away than the TTL ceiling goes as a re-arm
        hop: posted with the ceiling as its TTL and `rearm_at` set to the slot's fire time, so the worker that
        receives it early posts it again."""
        ttl_ms = _ms(until(fire_at - self.lead, now))
        if ttl_ms > self.ttl_ceiling_ms:
            message = message.model_copy(update={"rearm_at": fire_at})
            ttl_ms = self.ttl_ceiling_ms
        elif message.rearm_at is not None:
            message = message.model_copy(update={"rearm_at": None})  # the last hop arrives as the slot itself
        name = topology.delay_queue_name(self.scope, message.job_id)
        await self._to_queue(name, message.to_body(), _properties(expiration_ms=ttl_ms))

    async def republish(self, queue_name: str, body: bytes, properties: aiormq.spec.Basic.Properties) -> None:
        """A message taken out of a queue of this scope, put back as it was (migrate-queues)."""
        await self._to_queue(queue_name, body, properties)

    async def to_retry(self, message: JobMessage, delay_sec: float) -> None:
        """A retry or a buffered slot into the job's retry queue. A retry queue is declared on first need: a
        publish the broker cannot route (NO_ROUTE: no such queue yet) declares it and is made again."""
        name = topology.retry_queue_name(self.scope, message.job_id)
        properties = _properties(expiration_ms=round(delay_sec * 1000))
        try:
            await self._to_queue(name, message.to_body(), properties)
        except aiormq.exceptions.PublishError as exc:
            if _reply_text(exc) != "NO_ROUTE":
                raise
            if self.declare_retry is None:  # a configuration error: retrying the publish cannot fix it
                raise SchedulerError(
                    f"retry queue {name!r} is not declared and this publisher cannot declare it"
                ) from None
            await self.declare_retry(message.job_id)
            await self._to_queue(name, message.to_body(), properties)

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
