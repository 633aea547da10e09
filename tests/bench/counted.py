"""`python -m tests.bench.counted LOOP`: one fixed exchange with PostgreSQL and RabbitMQ on the event loop LOOP
(uvloop or asyncio), counted by tests.bench.counters; prints the counts as one JSON object.

The same exchange has the same counts on either loop: the check that the bench's counters do not depend on the loop
its workers run on (tests/bench/test_counters.py).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import aio_pika
import asyncpg

from shared import event_loop
from shared.settings import Settings
from tests.bench import counters

PUBLISHES = 3


async def exchange(settings: Settings) -> None:
    """Prepared statements, a simple query of two statements and a transaction; publishes with confirms, their
    deliveries and acks, on a private queue."""
    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        await conn.fetchval("SELECT $1::int + 1", 1)
        await conn.execute("SELECT 1; SELECT 2")
        async with conn.transaction():
            await conn.fetch("SELECT generate_series(1, $1::int)", 3)
    finally:
        await conn.close()
    connection = await aio_pika.connect(settings.amqp_urls[0])
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for i in range(PUBLISHES):
            await channel.default_exchange.publish(aio_pika.Message(str(i).encode()), routing_key=queue.name)
        received = 0
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                received += 1
                if received == PUBLISHES:
                    break
    finally:
        await connection.close()


def main(loop: str) -> dict[str, Any]:
    counters.install()
    choice = event_loop.choose("uvloop" if loop == "uvloop" else "asyncio")
    event_loop.run(exchange(Settings()), choice)
    return {"loop": choice.name, **counters.COUNTS}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
