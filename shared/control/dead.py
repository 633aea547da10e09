"""Parked messages (`S.jobs.dead`): listed without consuming them, one replayed to its work queue after a fix,
or all purged. Nothing is ever requeued automatically."""

from __future__ import annotations

import contextlib
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from shared import topology
from shared.control.errors import InvalidRequest, UnknownParkedMessage
from shared.control.publish import publish_raw
from shared.control.results import DeadLetters, ParkedMessage, Purged, Replayed
from shared.names import is_valid_ident

SCAN_LIMIT = 100_000  # a replay looks this far into parking for the id


def parked(message: AbstractIncomingMessage) -> ParkedMessage:
    """A parked message with why it was parked, read from the headers the worker set."""
    headers: dict[str, Any] = dict(message.headers or {})
    return ParkedMessage(
        message_id=message.message_id,
        reason=_text(headers.get("x-park-reason")) or "?",
        detail=_text(headers.get("x-park-detail")) or "",
        original_queue=_text(headers.get("x-original-queue")),
        body=message.body,
    )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class Peek:
    """Messages taken from a queue without acking; whatever is not settled goes back on exit, in order."""

    def __init__(self, queue: AbstractQueue) -> None:
        self.queue = queue
        self.held: list[AbstractIncomingMessage] = []

    async def __aenter__(self) -> Peek:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for message in self.held:
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)

    async def next(self) -> AbstractIncomingMessage | None:
        message = await self.queue.get(no_ack=False, fail=False)
        if message is not None:
            self.held.append(message)
        return message

    async def settle(self, message: AbstractIncomingMessage) -> None:
        self.held.remove(message)
        await message.ack()


async def parking(channel: AbstractChannel, scope: str, queue_type: topology.QueueType) -> AbstractQueue:
    """The scope's parking queue (declared with its exchange, so an empty scope lists nothing, not an error), of
    the scope's queue type (`Settings.scheduler_queue_type`)."""
    return await topology.declare_scope(channel, scope, queue_type)


async def list_parked(channel: AbstractChannel, scope: str, limit: int, queue_type: topology.QueueType) -> DeadLetters:
    """Up to `limit` parked messages, oldest first; they stay parked."""
    queue = await parking(channel, scope, queue_type)
    total = queue.declaration_result.message_count or 0
    messages: list[ParkedMessage] = []
    async with Peek(queue) as peek:
        while len(messages) < limit and (message := await peek.next()) is not None:
            messages.append(parked(message))
    return DeadLetters(queue.name, total, messages)


async def replay(channel: AbstractChannel, scope: str, message_id: str, queue_type: topology.QueueType) -> Replayed:
    """Republish one parked message to its original work queue, then remove it from parking."""
    queue = await parking(channel, scope, queue_type)
    async with Peek(queue) as peek:
        for _ in range(SCAN_LIMIT):
            message = await peek.next()
            if message is None:
                break
            if message.message_id != message_id:
                continue
            found = parked(message)
            if found.original_queue is None or not is_valid_ident(found.original_queue):
                raise InvalidRequest(
                    f"parked message {message_id} names no work queue: `publish --job JOB --body ...` it"
                )
            routing_key = await publish_raw(channel, scope, found.original_queue, found.body)
            await peek.settle(message)  # only after the broker confirmed the republished copy
            return Replayed(message_id, found.reason, routing_key)
    raise UnknownParkedMessage(topology.dead_name(scope), message_id)


async def purge(channel: AbstractChannel, scope: str, queue_type: topology.QueueType) -> Purged:
    """Delete every parked message of the scope."""
    queue = await parking(channel, scope, queue_type)
    result = await queue.purge()
    return Purged(queue.name, result.message_count or 0)
