"""A raw body to a job's work queue, exactly as a person would publish it from the RabbitMQ management UI
(exchange `S.jobs`, routing key `S.jobs.<queue>`). The default body `{"job_id": JOB}` gives one manual run
with the job's default params."""

from __future__ import annotations

import json

import aio_pika
from aio_pika.abc import AbstractChannel

from shared import topology
from shared.publisher import PUBLISH_TIMEOUT_SEC


def default_body(job_id: str) -> bytes:
    return json.dumps({"job_id": job_id}).encode()


async def publish_raw(channel: AbstractChannel, scope: str, queue: str, body: bytes) -> str:
    """Through the scope's exchange with the work queue as routing key; returns the routing key. Publisher
    confirms and `mandatory` make an unroutable message an error instead of a silent loss."""
    exchange = await channel.get_exchange(topology.exchange_name(scope), ensure=False)
    routing_key = topology.work_queue_name(scope, queue)
    message = aio_pika.Message(body, content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
    await exchange.publish(message, routing_key=routing_key, mandatory=True, timeout=PUBLISH_TIMEOUT_SEC)
    return routing_key
