"""Many broker declarations at once: RabbitMQ answers each declaration on a channel in turn, so thousands of them
(seeding a large file, a worker starting on a scope of 10,000 jobs) go over several channels of one connection.

    spread      run calls over up to `CHANNELS` channels of a channel's connection, one call at a time per channel
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from aio_pika.abc import AbstractChannel, AbstractConnection

CHANNELS = 16


async def spread(channel: AbstractChannel, calls: Sequence[Callable[[AbstractChannel], Awaitable[None]]]) -> None:
    """Run `calls` over up to `CHANNELS` channels of `channel`'s connection, each channel one call at a time. The
    first failure is raised once every lane has stopped (a failed declaration closes only its own lane)."""
    if len(calls) <= 1:
        for call in calls:
            await call(channel)
        return
    connection: AbstractConnection = channel._connection  # type: ignore[attr-defined]
    todo = list(reversed(calls))

    async def lane() -> None:
        lane_channel = await connection.channel(publisher_confirms=False)
        try:
            while todo:
                await todo.pop()(lane_channel)
        except BaseException:
            todo.clear()  # the other lanes stop after their current call
            raise
        finally:
            if not lane_channel.is_closed:
                await lane_channel.close()

    results = await asyncio.gather(*(lane() for _ in range(min(CHANNELS, len(calls)))), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
