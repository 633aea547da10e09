"""The server's connections: one asyncpg pool and one robust RabbitMQ connection, kept by background tasks.

The server starts and answers `/healthz` whether or not PostgreSQL and RabbitMQ are up: each connection is made
by a task that retries with back-off (logged) until it succeeds, after which the pool replaces dead connections
and the robust connection reconnects by itself. A request that needs a server that is not there gets
`DependencyDown`, which the error mapping turns into a 503 with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

import aio_pika
import aiormq
import asyncpg
import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from shared.backoff import forever
from shared.brokers import parse_amqp_urls
from shared.control import Control, DependencyDown
from shared.control.session import POSTGRES, RABBITMQ
from shared.dependencies import CONNECT_ERRORS, DB_ERRORS, describe
from shared.failover import named, open_failover
from shared.settings import Settings
from shared.store.migrate import migrate
from shared.store.pool import create_pool

log = structlog.get_logger(__name__)

ACQUIRE_SEC = 5.0  # a person (or a bot) is waiting: a pool that cannot give a connection soon is a 503
CHANNEL_SEC = 5.0
PROBE_SEC = 2.0
RETRY_CAP_SEC = 10.0
NAME = "scheduler-api"
# errors only the RabbitMQ client raises (a ConnectionError alone could be either server's)
AMQP_LIBRARY_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aio_pika.exceptions.AMQPException,
    aiormq.exceptions.ChannelInvalidStateError,
)
SERVER_GONE: tuple[type[BaseException], ...] = (*AMQP_LIBRARY_ERRORS, *DB_ERRORS)


class Backend:
    """PostgreSQL and RabbitMQ for the server's requests (see the module docstring)."""

    def __init__(self, settings: Settings, scope: str, pool_size: int = 10) -> None:
        self.settings = settings
        self.scope = scope
        self.pool_size = pool_size
        self.pool: asyncpg.Pool | None = None
        self.amqp: AbstractRobustConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Begin connecting (returns at once; the connections come when the servers answer)."""
        self._tasks = [
            asyncio.create_task(self._connect_postgres(), name="api-postgres"),
            asyncio.create_task(self._connect_rabbitmq(), name="api-rabbitmq"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.amqp is not None:
            with contextlib.suppress(Exception):
                await self.amqp.close()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), 10)
        self.pool, self.amqp = None, None

    async def _connect_postgres(self) -> None:
        dsn = self.settings.database_url.get_secret_value()

        async def attempt() -> asyncpg.Pool:
            pool = await create_pool(dsn, min_size=1, max_size=self.pool_size, timeout=10, application_name=NAME)
            try:
                async with pool.acquire() as conn:
                    await migrate(conn)  # borrowed sessions never migrate: the server does it once it connects
            except BaseException:
                await pool.close()
                raise
            return pool

        self.pool = await forever("postgres", attempt, cap_sec=RETRY_CAP_SEC, event="api.dependency_waiting")
        log.info("api.connected", dependency="postgres", url=self.settings.database_url_redacted)

    async def _connect_rabbitmq(self) -> None:
        # named in the management UI (aiormq takes the connection name from ?name=)
        urls = named(parse_amqp_urls(self.settings.amqp_url.get_secret_value()), NAME)
        turn = itertools.count()

        async def attempt() -> AbstractRobustConnection:
            return await open_failover(urls, start=next(turn), cap_sec=RETRY_CAP_SEC, where="api")

        self.amqp = await forever("rabbitmq", attempt, cap_sec=RETRY_CAP_SEC, event="api.dependency_waiting")
        log.info("api.connected", dependency="rabbitmq", url=self.settings.amqp_url_redacted)

    def _postgres_down(self, detail: str) -> DependencyDown:
        return DependencyDown(POSTGRES, self.settings.database_url_redacted, detail)

    def _rabbitmq_down(self, detail: str) -> DependencyDown:
        return DependencyDown(RABBITMQ, self.settings.amqp_url_redacted, detail)

    async def _open_channel(self) -> AbstractChannel:
        if self.amqp is None or self.amqp.is_closed:
            raise self._rabbitmq_down("not connected; the server keeps trying")
        try:
            return await asyncio.wait_for(
                self.amqp.channel(publisher_confirms=True, on_return_raises=True), CHANNEL_SEC
            )
        except (TimeoutError, RuntimeError) as exc:  # a robust connection between reconnects refuses channels
            raise self._rabbitmq_down(f"no channel: {type(exc).__name__}") from None

    @contextlib.asynccontextmanager
    async def control(self, actor: str) -> AsyncIterator[Control]:
        """A Control for one request: a pooled connection, and a channel opened only if the action publishes."""
        if self.pool is None:
            raise self._postgres_down("not connected; the server keeps trying")
        opened: list[AbstractChannel] = []

        async def open_channel() -> AbstractChannel:
            opened.append(await self._open_channel())
            return opened[-1]

        try:
            conn = await self.pool.acquire(timeout=ACQUIRE_SEC)
        except TimeoutError:
            raise self._postgres_down(f"no connection within {ACQUIRE_SEC:g} s") from None
        except CONNECT_ERRORS as exc:  # the pool could not open a connection: the server is down
            raise self._postgres_down(describe(exc)) from None
        try:
            yield Control.borrowing(conn, None, self.scope, actor=actor, open_channel=open_channel, amqp=self.amqp)
        except SERVER_GONE as exc:  # a server went away mid-action: say which
            raise self._down(exc) from None
        finally:
            for channel in opened:
                with contextlib.suppress(Exception):
                    await channel.close()
            with contextlib.suppress(Exception):
                await self.pool.release(conn)

    def _down(self, exc: BaseException) -> DependencyDown:
        detail = describe(exc)
        return self._rabbitmq_down(detail) if isinstance(exc, AMQP_LIBRARY_ERRORS) else self._postgres_down(detail)

    async def health(self) -> dict[str, str]:
        """Each server: `up` or `down` (a short probe of PostgreSQL; RabbitMQ: the connection's state)."""
        return {"postgres": await self._probe_postgres(), "rabbitmq": self._rabbitmq_state()}

    async def _probe_postgres(self) -> str:
        if self.pool is None:
            return "down"
        try:
            async with asyncio.timeout(PROBE_SEC):
                await self.pool.fetchval("SELECT 1")
        except Exception:  # any failure of the probe means the server cannot be used now
            return "down"
        return "up"

    def _rabbitmq_state(self) -> str:
        return "up" if self.amqp is not None and not self.amqp.is_closed else "down"
