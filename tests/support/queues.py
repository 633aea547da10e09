"""What a queue on the broker is, asked the way RabbitMQ answers it."""

from __future__ import annotations

import aio_pika

from shared import topology


async def declared_as(amqp: aio_pika.abc.AbstractRobustConnection, spec: topology.QueueSpec) -> bool:
    """True when `spec` redeclares without a refusal (same type and arguments as the queue that exists)."""
    channel = await amqp.channel()
    try:
        await channel.declare_queue(spec.name, durable=True, arguments=dict(spec.arguments))
        return True
    except aio_pika.exceptions.ChannelPreconditionFailed:
        return False
    finally:
        if not channel.is_closed:
            await channel.close()
