"""Connecting to RabbitMQ and PostgreSQL: wait with back-off until they answer, logging each attempt.

A worker started before its dependencies never exits because of them (the price-monitor crash loop of
`001_646fd6323acf08fa.txt` is the failure this avoids).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aio_pika
import asyncpg
import structlog
from aio_pika.abc import AbstractRobustConnection
from yarl import URL

from shared.store.pool import create_pool

log = structlog.get_logger("shared.connect")
T = TypeVar("T")


def backoff(attempt: int, cap_sec: float, rand: float) -> float:
    """0.5 s doubling per attempt up to the cap, with +-25 % jitter so restarted replicas do not stampede."""
    delay: float = min(cap_sec, 0.5 * 2.0 ** min(attempt - 1, 20)) * (0.75 + rand / 2)
    return delay


async def wait_for(
    dependency: str,
    where: str,
    attempt_fn: Callable[[], Awaitable[T]],
    cap_sec: float = 30.0,
    on_attempt: Callable[[bool], None] | None = None,
) -> T:
    """Call `attempt_fn` until it succeeds. Each failure is logged with the redacted address and the delay."""
    attempt = 0
    while True:
        attempt += 1
        try:
            result = await attempt_fn()
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,  # a session the server ended while the pool still held it
            aio_pika.exceptions.AMQPException,
            ConnectionError,
        ) as exc:
            if on_attempt:
                on_attempt(False)
            delay = backoff(attempt, cap_sec, random.random())
            log.warning(
                "dependency.waiting",
                dependency=dependency,
                at=where,
                attempt=attempt,
                error=f"{type(exc).__name__}: {exc}"[:300],
                retry_in_sec=round(delay, 2),
            )
            await asyncio.sleep(delay)
            continue
        if on_attempt:
            on_attempt(True)
        if attempt > 1:
            log.info("dependency.up", dependency=dependency, at=where, attempts=attempt)
        return result


OnAttempt = Callable[[bool], None] | None


async def rabbitmq(
    url: str, where: str, cap_sec: float = 30.0, name: str | None = None, on_attempt: OnAttempt = None
) -> AbstractRobustConnection:
    """A robust connection (it reconnects and redeclares by itself once established), named after the worker
    so an operator sees in the management UI which process it is."""
    named = str(URL(url).update_query(name=name)) if name else url  # aiormq takes connection_name from ?name=
    return await wait_for(
        "rabbitmq", where, lambda: aio_pika.connect_robust(named, timeout=10, reconnect_interval=2), cap_sec, on_attempt
    )


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
