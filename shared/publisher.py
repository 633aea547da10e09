"""Publishing with publisher confirms: every publish waits for the broker's ack, a nack or a return raises.

One place knows where each kind of message goes: the delay queue (chain), the retry queue (retries and
buffered slots), the work queue (run-now, events, startup) and parking.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

from shared import topology
from shared.messages import JobMessage

PUBLISH_TIMEOUT_SEC = 10.0


def _message(
    body: bytes,
    *,
    expiration: timedelta | None = None,
    headers: dict[str, Any] | None = None,
    message_id: str | None = None,
) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        expiration=expiration,
        headers=headers,
        message_id=message_id,
    )


def until(fire_at: datetime, now: datetime) -> timedelta:
    """Time left until `fire_at`, never negative (RabbitMQ refuses a negative expiration), whole milliseconds."""
    ms = max(0, round((fire_at - now).total_seconds() * 1000))
    return timedelta(milliseconds=ms)


class Publisher:
    """Routes job messages of one scope. The channel must have publisher confirms on (aio-pika's default)."""

    def __init__(self, channel: AbstractChannel, scope: str, timeout: float = PUBLISH_TIMEOUT_SEC) -> None:
        self.channel = channel
        self.scope = scope
        self.timeout = timeout

    async def _to_queue(self, queue_name: str, message: aio_pika.Message) -> None:
        # Through the scope's exchange (delay and retry queues are bound to it under their own names), never the
        # default exchange: a user whose permissions end at `S.` may write `S.jobs` but not `amq.default`,
        # through which any queue of any scope could be reached.
        exchange = await self.channel.get_exchange(topology.exchange_name(self.scope), ensure=False)
        await exchange.publish(message, routing_key=queue_name, timeout=self.timeout)

    async def to_delay(self, message: JobMessage, fire_at: datetime, now: datetime) -> None:
        """The chain's next message: it waits in the job's delay queue and dead-letters into the work queue."""
        name = topology.delay_queue_name(self.scope, message.job_id)
        await self._to_queue(name, _message(message.to_body(), expiration=until(fire_at, now)))

    async def to_retry(self, message: JobMessage, delay_sec: float) -> None:
        name = topology.retry_queue_name(self.scope, message.job_id)
        await self._to_queue(
            name, _message(message.to_body(), expiration=timedelta(milliseconds=round(delay_sec * 1000)))
        )

    async def to_work(self, queue: str, message: JobMessage) -> None:
        """Straight to a work queue through the scope's exchange (run-now, events, startup)."""
        exchange = await self.channel.get_exchange(topology.exchange_name(self.scope), ensure=False)
        await exchange.publish(
            _message(message.to_body()), routing_key=topology.work_queue_name(self.scope, queue), timeout=self.timeout
        )

    async def park(self, body: bytes, reason: str, detail: str, source_queue: str, headers: dict[str, Any]) -> None:
        """Poison message to `S.jobs.dead`, with why in its headers and a short message_id to replay it by.
        The body is kept byte for byte."""
        exchange = await self.channel.get_exchange(topology.dead_name(self.scope), ensure=False)
        parked_headers = {
            **{k: v for k, v in headers.items() if not k.startswith("x-death")},
            "x-park-reason": reason,
            "x-park-detail": detail[:1000],
            "x-original-queue": source_queue,
        }
        parked = _message(body, headers=parked_headers, message_id=uuid.uuid4().hex[:12])
        await exchange.publish(parked, routing_key="", timeout=self.timeout)
