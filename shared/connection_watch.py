"""A synchronous broker call that does not come back: bound it, and move its connection to the next node.

Why: RabbitMQ 3.10 may never answer a quorum-queue command a channel makes synchronously (`queue.purge`) while
the queue's leader is frozen (SIGSTOP, a VM paused, a long GC or I/O stall). Sent through another node, it goes to
the frozen leader and gets no reply. Sent through the frozen node itself, it waits in that node's socket; after the
thaw the old leader takes it, learns of the new leader, steps down, and drops it. Either way the channel waits 30 s
(its timeout for the command), then crashes on the `timeout` (`case_clause`), and a crashed channel takes its whole
connection with it (541 INTERNAL_ERROR). Meanwhile the connection looks healthy: heartbeats flow, the other
channels deliver and confirm. What stalls is whatever waits for that one reply, and the chain's purge waits under
the job's chain lock in PostgreSQL, where every worker's claim of that job (and, batched, of the jobs claimed with
it) queues behind it.

So a call that holds something of the fleet's gets a bound (`RPC_TIMEOUT_SEC`, like the publish timeout); past
it, one warning line (`rabbitmq.call_stalled`) names the call and the node, the underlying connection is closed
(a robust connection reconnects at once, a `FailoverConnection` to the next node, restoring its channels and
consumers), and `BrokerStalled` is raised: an AMQP error, so callers treat it as "RabbitMQ unavailable, retry
later" and roll back what they held. The broker would close that connection itself when its 30 s are up anyway;
closing it first ends the stall sooner and at a moment of the client's choosing. When the connection's own node
is healthy (the leader was frozen elsewhere), the move costs one reconnection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiormq
import structlog
from aio_pika.abc import AbstractChannel

from shared.brokers import node_label

log = structlog.get_logger("shared.connection_watch")

T = TypeVar("T")

RPC_TIMEOUT_SEC = 10.0
"""How long a synchronous call made under a lock may wait for the broker's answer (the broker's own bound for a
quorum-queue command is 30 s, after which it closes the whole connection)."""

CLOSE_TIMEOUT_SEC = 5.0


class BrokerStalled(aiormq.exceptions.AMQPError):
    """A synchronous broker call got no answer within its bound; its connection was closed (to be reopened)."""

    reason = "%s"  # aiormq's repr would call it "an unspecified AMQP error"


async def bounded(
    channel: AbstractChannel, what: str, call: Callable[[], Awaitable[T]], within_sec: float | None = None
) -> T:
    """`await call()` (an RPC on `channel`), at most `within_sec` (default `RPC_TIMEOUT_SEC`). Past that: log,
    close the channel's underlying connection so its robust owner reconnects (to the next node), raise
    `BrokerStalled`."""
    if within_sec is None:
        within_sec = RPC_TIMEOUT_SEC
    underlay = await channel.get_underlay_channel()
    connection = underlay.connection
    try:
        async with asyncio.timeout(within_sec):
            return await call()
    except TimeoutError:
        node = node_of(connection)
        log.warning("rabbitmq.call_stalled", call=what, node=node, waited_sec=within_sec, action="reconnect_next_node")
        error = BrokerStalled(f"{what}: no answer from {node} within {within_sec} s")
        await abandon(connection, error)
        raise error from None


def node_of(connection: Any) -> str:
    """`host:port` of an aiormq connection (never its password)."""
    try:
        return node_label(str(connection.url))
    except Exception:  # a label for a log line: never the reason a call fails
        return "?"


async def abandon(connection: Any, error: BaseException) -> None:
    """Close an aiormq connection as lost (its robust owner sees an unexpected close and reconnects). The socket
    goes at once; a broker busy with the stalled call need not answer."""
    if connection is None or connection.is_closed:
        return
    with contextlib.suppress(Exception):
        await connection.close(error, timeout=CLOSE_TIMEOUT_SEC)


class Oldest:
    """How long the oldest unconfirmed publish of each channel has waited: pure bookkeeping, the clock passed in.
    A channel is known by a key; its oldest pending delivery tag is looked at on each tick. The same tag as on
    the last tick keeps its first sighting; another tag (or none) starts over."""

    def __init__(self) -> None:
        self._seen: dict[object, tuple[int, float]] = {}

    def age(self, key: object, tag: int | None, now: float) -> float:
        if tag is None:
            self._seen.pop(key, None)
            return 0.0
        seen = self._seen.get(key)
        if seen is None or seen[0] != tag:
            self._seen[key] = (tag, now)
            return 0.0
        return now - seen[1]

    def forget(self) -> None:
        self._seen.clear()


class ConfirmWatch:
    """Moves a connection whose publisher confirms stopped coming back.

    A connection through a node that was frozen can stay open, heartbeats and all, while the confirms of what
    was published through it do not come for a minute after the thaw (the publishes the old leader took before
    stepping down are lost, and the queue holds the later ones until the channel resends them). Every publish
    times out meanwhile and is retried on the same connection. When the oldest unconfirmed publish on one of
    `channels` has waited `stall_sec` (the broker not blocking the connection for an alarm), the connection is
    closed, with one warning line (`rabbitmq.confirms_stalled`), and its robust owner reopens it on the next
    node."""

    def __init__(self, channels: list[AbstractChannel], stall_sec: float, period_sec: float = 1.0) -> None:
        self.channels = channels
        self.stall_sec = stall_sec
        self.period_sec = period_sec
        self.oldest = Oldest()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.period_sec)
            for channel in self.channels:
                if await self.check(channel, loop.time()):
                    break

    async def check(self, channel: AbstractChannel, now: float) -> bool:
        """True when `channel`'s connection was found stalled and closed."""
        try:
            underlay = await channel.get_underlay_channel()
        except Exception:  # closed or reconnecting: nothing to watch now
            return False
        if underlay.is_closed or underlay.connection.is_closed:  # the old one, until the channel is restored
            return False
        confirmations = getattr(underlay, "confirmations", None) or {}
        tag = next(iter(confirmations), None)  # in publish order: the first is the oldest
        waited = self.oldest.age(id(underlay), tag, now)
        connection = underlay.connection
        if waited < self.stall_sec or blocked(connection):
            return False
        node = node_of(connection)
        log.warning(
            "rabbitmq.confirms_stalled", node=node, waited_sec=round(waited, 1), pending=len(confirmations),
            action="reconnect_next_node",
        )  # fmt: skip
        self.oldest.forget()
        await abandon(connection, BrokerStalled(f"no publisher confirm from {node} for {waited:.0f} s"))
        return True


def blocked(connection: Any) -> bool:
    """Whether the broker blocks the connection (a memory or disk alarm: confirms wait for it everywhere, moving
    would not help). aiormq keeps that in a private event; unknown counts as not blocked."""
    unblocked = getattr(connection, "_Connection__connection_unblocked", None)
    return unblocked is not None and not unblocked.is_set()
