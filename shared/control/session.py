"""The connections one control session uses: a PostgreSQL connection and a RabbitMQ channel with publisher
confirms, each opened on first use and closed on exit.

Only write actions migrate the schema (`db(write=True)`): a read must work for a role that may not create
anything and must not queue behind the migration lock. Connect timeouts are short: a person is waiting.
A server that does not answer becomes one `DependencyDown` naming the redacted URL and how to start it.
`wait_for_servers` is the patient variant for a one-shot seeder container.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractConnection

from shared.backoff import backoff
from shared.brokers import parse_amqp_urls, passwords
from shared.control.errors import DependencyDown
from shared.dependencies import CONNECT_ERRORS, describe
from shared.failover import connect_any
from shared.preflight import check_postgres, check_rabbitmq
from shared.publisher import Publisher
from shared.settings import Settings
from shared.store.migrate import migrate
from shared.store.pool import connect as pg_connect

CONNECT_TIMEOUT_SEC = 5.0
POSTGRES, RABBITMQ = "PostgreSQL", "RabbitMQ"


class Session:
    """Lazily opened connections for one scope. Either opened from `settings` (and closed by `close`), or
    borrowed (`Session.borrowing`): the caller's connection and channel, never closed here."""

    def __init__(self, settings: Settings | None, scope: str, timeout: float = CONNECT_TIMEOUT_SEC) -> None:
        self.settings = settings
        self.scope = scope
        self.timeout = timeout
        self._db: asyncpg.Connection | None = None
        self._migrated = False
        self._amqp: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._open_channel: Callable[[], Awaitable[AbstractChannel]] | None = None
        self._owned = True

    @classmethod
    def borrowing(
        cls,
        conn: asyncpg.Connection,
        channel: AbstractChannel | None,
        scope: str,
        open_channel: Callable[[], Awaitable[AbstractChannel]] | None = None,
        amqp: AbstractConnection | None = None,
    ) -> Session:
        """A session over connections the caller opened and closes (tests, a server with its own pool). Instead
        of a channel, `open_channel` may give one on first use (the caller closes it too): a read that never
        publishes then works while RabbitMQ is down. `amqp` is the connection the channels are of: what needs
        further channels (`doctor`, `migrate-queues`, declarations over several lanes) opens them there."""
        session = cls(None, scope)
        session._db, session._channel, session._owned = conn, channel, False
        session._open_channel = open_channel
        session._amqp = amqp
        return session

    def _settings(self) -> Settings:
        if self.settings is None:  # a borrowing session has both connections from the start
            raise RuntimeError("this session borrows its connections and cannot open new ones")
        return self.settings

    async def db(self, *, write: bool = False) -> asyncpg.Connection:
        """The PostgreSQL connection; with `write`, the schema is migrated first (idempotent, under the
        migration lock)."""
        if self._db is None:
            settings = self._settings()
            try:
                self._db = await asyncio.wait_for(pg_connect(settings.database_url.get_secret_value()), self.timeout)
            except CONNECT_ERRORS as exc:
                url = settings.database_url.get_secret_value()
                raise DependencyDown(POSTGRES, settings.database_url_redacted, _detail(exc, url)) from None
        if write and not self._migrated and self._owned:
            await migrate(self._db)
            self._migrated = True
        return self._db

    async def channel(self) -> AbstractChannel:
        """A channel with publisher confirms; an unroutable publish raises instead of vanishing."""
        if self._channel is None and self._open_channel is not None:
            self._channel = await self._open_channel()
        if self._channel is None:
            settings = self._settings()
            try:
                self._amqp = await connect_any(parse_amqp_urls(settings.amqp_url.get_secret_value()), self.timeout)
            except CONNECT_ERRORS as exc:
                url = settings.amqp_url.get_secret_value()
                raise DependencyDown(RABBITMQ, settings.amqp_url_redacted, _detail(exc, url)) from None
            self._channel = await self._amqp.channel(publisher_confirms=True, on_return_raises=True)
        return self._channel

    @property
    def amqp(self) -> AbstractConnection | None:
        """The RabbitMQ connection of `channel()`: opened with it, or lent by the caller; None when a borrowing
        session was lent a channel only."""
        return self._amqp

    def connection(self) -> AbstractConnection:
        """The RabbitMQ connection, for further channels (a refused declaration closes its channel): call
        `channel()` first. A session borrowing a channel without its connection cannot give one."""
        if self._amqp is None:
            raise RuntimeError("this session has no RabbitMQ connection: open channel() first, or lend one (amqp=)")
        return self._amqp

    async def publisher(self) -> Publisher:
        settings = self.settings or Settings()  # borrowing: read from the environment
        return Publisher(
            await self.channel(), self.scope, ttl_ceiling_ms=settings.scheduler_ttl_ceiling_ms,
            scope_queue_type=settings.scheduler_queue_type,
        )  # fmt: skip

    async def close(self) -> None:
        """Close what this session opened (nothing, when it borrows)."""
        if not self._owned:
            return
        if self._amqp is not None:
            with contextlib.suppress(Exception):
                await self._amqp.close()
        if self._db is not None:
            with contextlib.suppress(Exception):
                await self._db.close()
        self._amqp = self._channel = self._db = None


def _detail(exc: BaseException, url: str) -> str:
    """The error as one line, with the URL's password masked should a client library have quoted it."""
    text = describe(exc).strip().rstrip(":")
    for password in passwords(url):  # every node's, when the URL names several
        text = text.replace(password, "***")
    return text


async def wait_for_servers(settings: Settings, wait_sec: float, say: Callable[[str], None]) -> None:
    """Wait (with back-off) until RabbitMQ and PostgreSQL both answer, up to `wait_sec`; DependencyDown after.
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
            url = settings.amqp_url_redacted if server == RABBITMQ else settings.database_url_redacted
            raise DependencyDown(server, url, f"still down after {wait_sec:g} s: {problem}")
        await asyncio.sleep(min(left, backoff(attempt, 5.0, random.random())))


async def _check_both(settings: Settings, wait_sec: float) -> dict[str, str | None]:
    amqp, pg = await asyncio.gather(
        check_rabbitmq(settings.amqp_url.get_secret_value(), wait_sec),
        check_postgres(settings.database_url.get_secret_value(), wait_sec),
    )
    return {RABBITMQ: amqp, POSTGRES: pg}
