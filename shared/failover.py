"""A robust RabbitMQ connection over the nodes of a cluster: when its node fails, it reconnects to the next one.

aio-pika's `RobustConnection` reconnects (and restores its channels, queues and consumers) to the one URL it was
given. `FailoverConnection` keeps that machinery and changes only where each attempt goes: every reconnection
attempt is made to the next node of the list (the node just lost is the one most likely down), with back-off
between failed attempts, and one log line per move naming the nodes (`host:port`, never a password).

Hook: aio-pika clears `transport` right before every reconnection attempt; the setter below is where the next
node is chosen. tests/unit/test_brokers.py pins the aio-pika behaviour this relies on.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import aio_pika
import structlog
from yarl import URL

from shared.backoff import backoff
from shared.brokers import node_label

log = structlog.get_logger("shared.failover")


class FailoverConnection(aio_pika.RobustConnection):
    """A robust connection to `urls[start]` that moves to the following node on each reconnection attempt."""

    def __init__(self, urls: Sequence[str], start: int = 0, cap_sec: float = 30.0, **kwargs: Any) -> None:
        if not urls:
            raise ValueError("FailoverConnection needs at least one URL")
        self._fo_urls = [URL(u) for u in urls]
        self._fo_index = start % len(self._fo_urls)
        self._fo_cap = cap_sec
        self._fo_first = 0.5
        self._fo_failures = 0
        self._fo_pending = False  # an attempt was started and has not connected yet
        self._fo_attempts = 0
        self._fo_transport: Any = None
        self._fo_armed = False
        super().__init__(self._fo_urls[self._fo_index], **kwargs)
        self._fo_armed = True

    @property
    def node(self) -> str:
        """`host:port` of the node this connection uses (or tries next)."""
        return node_label(str(self._fo_urls[self._fo_index]))

    @property
    def url(self) -> URL:
        return self._fo_urls[self._fo_index]

    @url.setter
    def url(self, value: URL) -> None:  # aio-pika sets it in __init__ and update_secret
        self._fo_urls[self._fo_index] = URL(value)

    @property
    def transport(self) -> Any:
        return self._fo_transport

    @transport.setter
    def transport(self, value: Any) -> None:
        if value is None and self._fo_armed and not self._close_called:
            self._next_attempt()
        self._fo_transport = value

    @property
    def reconnect_interval(self) -> float:
        """The pause aio-pika takes after an attempt: short after a success, growing while attempts fail."""
        if not self._fo_pending:
            return self._fo_first
        return backoff(self._fo_failures + 1, self._fo_cap, random.random(), self._fo_first)

    @reconnect_interval.setter
    def reconnect_interval(self, value: Any) -> None:
        self._fo_first = max(0.1, float(value))

    def _next_attempt(self) -> None:
        """Called before each reconnection attempt: after the first, every attempt goes to the next node."""
        if self._fo_pending:
            self._fo_failures += 1
        if self._fo_attempts > 0 and len(self._fo_urls) > 1:
            lost = self.node
            self._fo_index = (self._fo_index + 1) % len(self._fo_urls)
            log.warning(
                "rabbitmq.failover", lost=lost, next=self.node, failed_attempts=self._fo_failures,
                nodes=len(self._fo_urls),
            )  # fmt: skip
        self._fo_attempts += 1
        self._fo_pending = True

    async def _on_connected(self) -> None:
        await super()._on_connected()
        self._fo_pending = False
        self._fo_failures = 0
        log.info("rabbitmq.connected", node=self.node, nodes=len(self._fo_urls))


async def channel_restored(channel: Any, within_sec: float) -> bool:
    """Whether a robust channel is open with every queue and consumer restored after its last reconnection,
    waiting up to `within_sec`. A consumer must not be cancelled while its channel is being restored: aiormq
    registers a consumer's callback before it sends basic.consume and drops it on any cancel-ok for the tag, so a
    cancel answered after the restore's consume leaves the broker delivering to a consumer the client forgot."""
    ready = getattr(channel, "ready", None)
    if ready is None:  # not a robust channel: nothing is ever restored on it
        return True
    try:
        async with asyncio.timeout(within_sec):
            await ready()
    except TimeoutError:
        return False
    return True


def named(urls: Sequence[str], name: str | None) -> list[str]:
    """The URLs with `?name=` set (aiormq takes the connection name shown in the management UI from it)."""
    return [str(URL(u).update_query(name=name)) if name else u for u in urls]


async def open_failover(
    urls: Sequence[str], start: int = 0, cap_sec: float = 30.0, connect_sec: float = 10, where: str = ""
) -> FailoverConnection:
    """One attempt at `urls[start]`; on failure the node is named in a log line (when there are several) and the
    error raised, so the caller's retry loop tries `start + 1` next."""
    connection = FailoverConnection(urls, start=start, cap_sec=cap_sec, reconnect_interval=1)
    try:
        await connection.connect(timeout=connect_sec)
    except BaseException as exc:
        if len(urls) > 1:
            log.warning(
                "rabbitmq.node_unreachable", node=connection.node, where=where, nodes=len(urls),
                error=type(exc).__name__,
            )  # fmt: skip
        await connection.close()
        raise
    return connection


async def connect_any(urls: Sequence[str], connect_sec: float) -> aio_pika.abc.AbstractConnection:
    """A plain (not robust) connection to the first node of `urls` that answers, for short-lived clients (the
    CLI, preflight). Raises the last node's error when none does."""
    last: BaseException | None = None
    for url in urls:
        try:
            return await aio_pika.connect(url, timeout=connect_sec)
        except Exception as exc:
            last = exc
            if len(urls) > 1:
                log.warning("rabbitmq.node_unreachable", node=node_label(url), error=type(exc).__name__)
    assert last is not None
    raise last
