"""Which exceptions mean "a server is down or went away", for PostgreSQL and RabbitMQ: one classification
for the worker, the watchdog, the background loops and the control layer.

Such an error is never a reason to drop a message or to crash: the message goes back to the broker, the write
is retried with back-off, the loop starts over. Any other exception is a bug or bad input and is handled as such.
"""

from __future__ import annotations

import aio_pika
import aiormq
import asyncpg

from shared.vocabulary import Dependency

SESSION_LOST: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # a pooled connection whose session the server just ended (restart, pg_terminate_backend), handed out
    # before asyncpg saw the socket close: "cannot switch to state ...; another operation is in progress"
    asyncpg.InternalClientError,
)
"""PostgreSQL errors after which the session is gone, and every session lock it held with it."""

DB_ERRORS: tuple[type[BaseException], ...] = (
    *SESSION_LOST,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash recovery in progress
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
)
"""PostgreSQL is down, restarting or out of room: retry later."""

AMQP_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aio_pika.exceptions.AMQPException,
    # a publish on a robust channel that is closed until it reconnects (a RuntimeError, not an AMQPError)
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
)
"""RabbitMQ is down, restarting, or the channel closed: retry later."""

CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    *DB_ERRORS,
    *AMQP_ERRORS,
    TimeoutError,
    asyncpg.PostgresError,  # while connecting: the server refuses logins (starting up, too many clients)
)
"""What a connection attempt (or a probe such as a periodic read) may meet while a server is not up."""


def classify(exc: BaseException) -> Dependency | None:
    """The server an exception says is unavailable, or None for any other error."""
    if isinstance(exc, DB_ERRORS):
        return Dependency.POSTGRES
    if isinstance(exc, AMQP_ERRORS):
        return Dependency.RABBITMQ
    return None


def describe(exc: BaseException, limit: int = 300) -> str:
    """An exception as one bounded line for a log (type and message; never a traceback)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text.splitlines()[0][:limit] if text else type(exc).__name__
