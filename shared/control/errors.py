"""What an operator action can fail with, as types a caller maps to its own answer in one place.

Every error is a `SchedulerError`. `kind_of` sorts any exception into an `ErrorKind`: the CLI turns the kind
into an exit code, an HTTP API into a status (NOT_FOUND 404, INVALID 422, CONFLICT 409, UNAVAILABLE 503,
FAILED 500), a bot into a reply. The messages are one line an operator can act on and never hold a secret.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from pydantic import ValidationError

from shared.dependencies import classify
from shared.errors import ConfigError, DependencyUnavailable, SchedulerError, TopologyMismatch, UnknownJob
from shared.preflight import HOW_TO_START

__all__ = [
    "ActionFailed",
    "DependencyDown",
    "ErrorKind",
    "InvalidDefinition",
    "InvalidRequest",
    "MoveUnderWay",
    "RunningNow",
    "UnknownJob",
    "UnknownParkedMessage",
    "kind_of",
]


class ErrorKind(StrEnum):
    """How a caller should answer a failed action."""

    NOT_FOUND = "not_found"  # the job (or parked message) named does not exist
    INVALID = "invalid"  # the request cannot be done as given; nothing was changed
    CONFLICT = "conflict"  # the job is running now; another move of the scope's queues is under way
    UNAVAILABLE = "unavailable"  # RabbitMQ or PostgreSQL does not answer
    FAILED = "failed"  # tried, and it did not work out (no outcome in time, no worker, a refused declaration)


class InvalidRequest(SchedulerError):
    """Arguments the action cannot use (a range backwards, nothing to change); `field` names the input at fault
    when there is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class InvalidDefinition(InvalidRequest, ConfigError):
    """A job definition (or a change to one) that does not validate. `fields` names every field at fault;
    the message has one line per problem, each naming the job and the field."""

    def __init__(self, message: str, fields: Sequence[str]) -> None:
        super().__init__(message, fields[0] if fields else None)
        self.fields = tuple(fields)


class UnknownParkedMessage(SchedulerError):
    """No parked message with this id in the scope's parking queue."""

    def __init__(self, scope_dead_queue: str, message_id: str) -> None:
        self.message_id = message_id
        super().__init__(f"no parked message with id {message_id!r} in {scope_dead_queue}")


class RunningNow(SchedulerError):
    """run-now found a live run of the job (the 409 of `000_655093b4cfd23bb8.txt`): nothing was queued."""

    def __init__(self, job_id: str, run_id: uuid.UUID, status: str, worker: str | None, since: datetime) -> None:
        self.job_id = job_id
        self.run_id = run_id
        self.status = status
        self.worker = worker
        self.since = since
        super().__init__(
            f"job {job_id!r} is running now (run {run_id}, {status} on {worker} since {since.isoformat()})"
        )


class MoveUnderWay(SchedulerError):
    """Another `migrate-queues` of the scope holds the move lock: nothing was touched."""

    def __init__(self, scope: str, holder: str | None) -> None:
        self.scope = scope
        self.holder = holder
        by = f" ({holder})" if holder else ""
        super().__init__(
            f"another migrate-queues of scope {scope!r} is under way{by}; nothing was touched: run it again once "
            "that one is done (a move that was killed needs no waiting: PostgreSQL frees its lock at once)"
        )


class DependencyDown(DependencyUnavailable):
    """RabbitMQ or PostgreSQL does not answer. `url` is redacted; the message says how to start the server."""

    def __init__(self, server: str, url: str, detail: str) -> None:
        self.server = server
        self.url = url
        self.detail = detail
        super().__init__(f"{server} at {url} is not reachable ({detail}); {HOW_TO_START[server]}")


class ActionFailed(SchedulerError):
    """The action was tried and did not reach its end (no live worker, no outcome in time)."""


def kind_of(exc: BaseException) -> ErrorKind | None:
    """The kind of a failed action, or None for an error nobody meant (a bug: show it as such)."""
    if isinstance(exc, UnknownJob | UnknownParkedMessage):
        return ErrorKind.NOT_FOUND
    if isinstance(exc, RunningNow | MoveUnderWay):
        return ErrorKind.CONFLICT
    if isinstance(exc, InvalidRequest | ConfigError | ValidationError):
        return ErrorKind.INVALID
    if isinstance(exc, DependencyUnavailable) or classify(exc) is not None:
        return ErrorKind.UNAVAILABLE
    if isinstance(exc, ActionFailed | TopologyMismatch | SchedulerError):
        return ErrorKind.FAILED
    return None
