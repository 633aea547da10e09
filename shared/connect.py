"""Connecting to RabbitMQ and PostgreSQL: wait with back-off until they answer, logging each attempt.

A worker started before its dependencies never exits because of them (the price-monitor crash loop of
`001_646fd6323acf08fa.txt` is the failure this avoids).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from aio_pika.abc import AbstractRobustConnection

from shared.backoff import forever
from shared.brokers import parse_amqp_urls
from shared.failover import named, open_failover
from shared.store.pool import create_pool

T = TypeVar("T")


async def wait_for(
    dependency: str,
    where: str,
    attempt_fn: Callable[[], Awaitable[T]],
    cap_sec: float = 30.0,
    on_attempt: Callable[[bool], None] | None = None,
) -> T:
    """Call `attempt_fn` until it succeeds. Each failure is logged (`dependency.waiting`) with the delay."""
    return await forever(
        where, attempt_fn, cap_sec=cap_sec, on_attempt=on_attempt, event="dependency.waiting", dependency=dependency
    )


OnAttempt = Callable[[bool], None] | None


async def rabbitmq(
    url: str, where: str, cap_sec: float = 30.0, name: str | None = None, on_attempt: OnAttempt = None
) -> AbstractRobustConnection:
    """A robust connection (it reconnects and redeclares by itself once established), named after the worker
    so an operator sees in the management UI which process it is. `url` may name several nodes of a cluster
    (shared/brokers.py): each first attempt goes to the next node, and so does each reconnection later."""
    urls = named(parse_amqp_urls(url), name)
    turn = itertools.count()

    async def attempt() -> AbstractRobustConnection:
        return await open_failover(urls, start=next(turn), cap_sec=cap_sec, where=where)

    return await wait_for("rabbitmq", where, attempt, cap_sec, on_attempt)


async def postgres_pool(
    dsn: str, where: str, max_size: int, cap_sec: float = 30.0, name: str | None = None, on_attempt: OnAttempt = None
) -> asyncpg.Pool:
    return await wait_for(
        "postgres",
        where,
        lambda: create_pool(dsn, min_size=1, max_size=max_size, timeout=10, application_name=name),
        cap_sec,
        on_attempt,
    )
