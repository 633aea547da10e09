"""Many broker declarations at once: RabbitMQ answers each declaration on a channel in turn, so thousands of them
(seeding a large file, a worker starting on a scope of 10,000 jobs) go over several channels of one connection.

    spread      run calls over up to `CHANNELS` channels of a connection, one call at a time per channel
    missing     which of many queues do not exist: a passive declaration each (a few times cheaper for RabbitMQ than
                declaring an existing queue and its binding again), over up to `CHANNELS` channels
    by_queue    a worker's jobs by work queue, the queues with fewest jobs first (pure): the order in which it
                declares their delay queues and consumes each work queue once its own jobs' are declared
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection

from shared.store.jobs import JobRow

CHANNELS = 16


async def spread(
    channel: AbstractChannel,
    calls: Sequence[Callable[[AbstractChannel], Awaitable[None]]],
    connection: AbstractConnection | None = None,
) -> None:
    """Run `calls` over up to `CHANNELS` channels of `connection` (the one `channel` belongs to), each channel one
    call at a time. The first failure is raised once every lane has stopped (a failed declaration closes only its
    own lane). Without `connection` (aio-pika names no public way from a channel to its connection), the calls run
    one after the other on `channel`."""
    if len(calls) <= 1 or connection is None:
        for call in calls:
            await call(channel)
        return
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


async def missing(channel: AbstractChannel, names: Sequence[str]) -> set[str]:
    """The queues of `names` that do not exist, each asked with a passive declaration over up to `CHANNELS`
    channels of `channel`'s connection (RabbitMQ closes the channel that asked for a missing queue: that lane
    opens another and goes on)."""
    connection = (await channel.get_underlay_channel()).connection
    todo = list(reversed(names))
    absent: set[str] = set()

    async def lane() -> None:
        lane_channel = await connection.channel()
        try:
            while todo:
                name = todo.pop()
                try:
                    await lane_channel.queue_declare(name, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    absent.add(name)
                    lane_channel = await connection.channel()
        except BaseException:
            todo.clear()  # the other lanes stop after their current question
            raise
        finally:
            with contextlib.suppress(*_CLOSING_ERRORS):
                await lane_channel.close()

    results = await asyncio.gather(*(lane() for _ in range(min(CHANNELS, len(names)))), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return absent


_CLOSING_ERRORS = (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, ConnectionError)


def by_queue(queues: Iterable[str], jobs: Iterable[JobRow]) -> list[tuple[str, list[JobRow]]]:
    """Each of `queues` with its jobs of `jobs`, the queue with fewest jobs first (then by name): a worker starting
    on a large scope consumes its small queues seconds before the large ones are declared. Jobs of other queues are
    left out."""
    grouped: dict[str, list[JobRow]] = {queue: [] for queue in queues}
    for job in jobs:
        if job.queue in grouped:
            grouped[job.queue].append(job)
    return sorted(grouped.items(), key=lambda item: (len(item[1]), item[0]))
