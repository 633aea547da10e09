"""Losing a message on purpose, as a RabbitMQ crash while dead-lettering would: for tests of what notices it."""

from __future__ import annotations

import aio_pika

from shared import topology
from tests.support.runtime import wait_until


async def purge_the_retry(amqp: aio_pika.abc.AbstractRobustConnection, scope: str, job_id: str) -> None:
    """Wait for a retry message in the job's retry queue, then purge it: lost."""
    channel = await amqp.channel()
    try:
        name = topology.retry_queue_name(scope, job_id)

        async def waiting() -> bool:
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return False
            return (queue.declaration_result.message_count or 0) >= 1

        await wait_until(waiting, 20, "the retry message in its queue")
        queue = await channel.declare_queue(name, passive=True)
        purged = await queue.purge()
        assert purged.message_count == 1
    finally:
        await channel.close()
