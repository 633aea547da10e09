"""The CLI's connections: PostgreSQL (migrated on first use) and a RabbitMQ channel with publisher confirms.

Connect timeouts are short: a person is waiting. A server that does not answer becomes one `Unreachable` line
naming the redacted URL and how to start it. `wait_for_servers` is the patient variant for the compose seeder.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from types import TracebackType

import aio_pika
import aiormq
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractConnection

from scheduler_seed.errors import Unreachable
from shared.backoff import backoff
from shared.preflight import HOW_TO_START, check_postgres, check_rabbitmq
from shared.publisher import Publisher
from shared.settings import Settings
from shared.store.migrate import migrate
from shared.store.pool import connect as pg_connect

CONNECT_TIMEOUT_SEC = 5.0
PG_CONNECT_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
AMQP_CONNECT_ERRORS = (OSError, asyncio.TimeoutError, aio_pika.exceptions.AMQPException, aiormq.exceptions.AMQPError)


def unreachable(server: str, url: str, error: BaseException | str) -> Unreachable:
    detail = error if isinstance(error, str) else f"{type(error).__name__}: {error}".strip().rstrip(":")
    return Unreachable(f"{server} at {url} is not reachable ({detail}); {HOW_TO_START[server]}")


class Session:
    """Lazily opened connections for one command; `async with Session(...)` closes whatever was opened."""

    def __init__(self, settings: Settings, scope: str, timeout: float = CONNECT_TIMEOUT_SEC) -> None:
        self.settings = settings
        self.scope = scope
        self.timeout = timeout
        self._db: asyncpg.Connection | None = None
        self._amqp: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def db(self) -> asyncpg.Connection:
        """The PostgreSQL connection, with the schema migrated (idempotent, under the migration lock)."""
        if self._db is None:
            try:
                self._db = await asyncio.wait_for(
                    pg_connect(self.settings.database_url.get_secret_value()), self.timeout
                )
            except PG_CONNECT_ERRORS as exc:
                raise unreachable("PostgreSQL", self.settings.database_url_redacted, exc) from None
            await migrate(self._db)
        return self._db

    async def channel(self) -> AbstractChannel:
        """A channel with publisher confirms; an unroutable publish raises instead of vanishing."""
        if self._channel is None:
            try:
                self._amqp = await aio_pika.connect(self.settings.amqp_url.get_secret_value(), timeout=self.timeout)
            except AMQP_CONNECT_ERRORS as exc:
                raise unreachable("RabbitMQ", self.settings.amqp_url_redacted, exc) from None
            self._channel = await self._amqp.channel(publisher_confirms=True, on_return_raises=True)
        return self._channel

    async def publisher(self) -> Publisher:
        return Publisher(await self.channel(), self.scope)

    async def close(self) -> None:
        if self._amqp is not None:
            with contextlib.suppress(Exception):
                await self._amqp.close()
        if self._db is not None:
            with contextlib.suppress(Exception):
                await self._db.close()


async def wait_for_servers(settings: Settings, wait_sec: float, say: Callable[[str], None]) -> None:
    """Wait (with back-off) until RabbitMQ and PostgreSQL both answer, up to `wait_sec`; raise Unreachable after.
    `say` gets one line each time a server's state changes, so a log shows what was waited for."""
    deadline = time.monotonic() + wait_sec
    attempt = 0
    reported: dict[str, str | None] = {}
    while True:
        attempt += 1
        problems = await _check_both(settings, min(CONNECT_TIMEOUT_SEC, max(1.0, deadline - time.monotonic())))
        for server, problem in problems.items():
            if reported.get(server, "") != problem:
                say(f"{server}: {'up' if problem is None else 'waiting (' + problem + ')'}")
                reported[server] = problem
        down = {server: problem for server, problem in problems.items() if problem is not None}
        if not down:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            server, problem = next(iter(down.items()))
            url = settings.amqp_url_redacted if server == "RabbitMQ" else settings.database_url_redacted
            raise unreachable(server, url, f"still down after {wait_sec:g} s: {problem}")
        await asyncio.sleep(min(left, backoff(attempt, 5.0, random.random())))


async def _check_both(settings: Settings, wait_sec: float) -> dict[str, str | None]:
    amqp, pg = await asyncio.gather(
        check_rabbitmq(settings.amqp_url.get_secret_value(), wait_sec),
        check_postgres(settings.database_url.get_secret_value(), wait_sec),
    )
    return {"RabbitMQ": amqp, "PostgreSQL": pg}
