"""`dead`: the parked messages of `S.jobs.dead` (listed without consuming them), `--replay ID` to send one
back to its work queue after a fix, `--purge` to empty parking."""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from scheduler_seed import render
from scheduler_seed.errors import UsageError
from scheduler_seed.inputs import argtype, positive_int
from scheduler_seed.publish import publish_raw
from scheduler_seed.session import Session
from shared import topology
from shared.names import is_valid_ident

SCAN_LIMIT = 100_000  # --replay looks this far into parking for the id


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "dead",
        parents=[common],
        help="list, replay or purge parked messages",
        description="Without options: list parked messages (they stay parked). --replay ID republishes one to "
        "its original work queue and removes it from parking; --purge deletes them all.",
    )
    action = p.add_mutually_exclusive_group()
    action.add_argument("--replay", metavar="ID", help="the message id shown by `dead`")
    action.add_argument("--purge", action="store_true", help="delete every parked message")
    p.add_argument("--limit", type=argtype(positive_int), default=50, help="list at most this many (default 50)")
    p.set_defaults(execute=execute)


@dataclass(frozen=True, slots=True)
class Parked:
    message_id: str | None
    reason: str
    detail: str
    original_queue: str | None
    body: bytes

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> Parked:
        headers: dict[str, Any] = dict(message.headers or {})
        return cls(
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


def preview(body: bytes, limit: int = 60) -> str:
    try:
        return render.shorten(body.decode("utf-8"), limit) if body else "(empty)"
    except UnicodeDecodeError:
        return render.shorten(repr(body), limit)


def as_table(parked: list[Parked]) -> str:
    rows = [[p.message_id, p.reason, p.original_queue, render.shorten(p.detail, 60), preview(p.body)] for p in parked]
    return render.table(["ID", "REASON", "QUEUE", "DETAIL", "BODY"], rows)


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


async def execute(args: argparse.Namespace, session: Session) -> int:
    channel = await session.channel()
    await topology.declare_scope(channel, session.scope)
    queue = await channel.declare_queue(topology.dead_name(session.scope), durable=True)
    if args.purge:
        purged = await queue.purge()
        print(f"purged {purged.message_count} parked messages from {queue.name}")
        return 0
    total = queue.declaration_result.message_count
    async with Peek(queue) as peek:
        if args.replay:
            return await replay(session, peek, args.replay)
        parked: list[Parked] = []
        while len(parked) < args.limit and (message := await peek.next()) is not None:
            parked.append(Parked.of(message))
    if not parked:
        print(f"no parked messages in {queue.name}")
        return 0
    print(as_table(parked))
    print(f"{total} parked in {queue.name} (showing {len(parked)}); `dead --replay ID` sends one back")
    return 0


async def replay(session: Session, peek: Peek, message_id: str) -> int:
    for _ in range(SCAN_LIMIT):
        message = await peek.next()
        if message is None:
            break
        if message.message_id != message_id:
            continue
        parked = Parked.of(message)
        if parked.original_queue is None or not is_valid_ident(parked.original_queue):
            raise UsageError(f"parked message {message_id} names no work queue: `publish --job JOB --body ...` it")
        routing_key = await publish_raw(await session.channel(), session.scope, parked.original_queue, parked.body)
        await peek.settle(message)  # only after the broker confirmed the republished copy
        print(f"replayed {message_id} ({parked.reason}) to {routing_key}")
        return 0
    raise UsageError(f"no parked message with id {message_id!r} in {topology.dead_name(session.scope)}")
