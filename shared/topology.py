"""RabbitMQ topology of a scope: names, queue specs (pure) and their idempotent declaration (I/O).

Per scope ``S`` (see DESIGN section 3):

- exchange ``S.jobs`` (direct, durable); the routing key of a job message is its work queue name;
- work queue ``S.jobs.<queue>`` bound to ``S.jobs`` with its own name as binding key;
- delay queue ``S.jobs.<job_id>.delay`` and retry queue ``S.jobs.<job_id>.retry``, no consumers, whose
  messages expire (per-message TTL) and are dead-lettered to ``S.jobs`` with the work queue as routing key; the
  retry queue is declared on first need (the first retry or buffered slot of the job), so a job that never retries
  costs one queue of its own;
- parking ``S.jobs.dead``: a fanout exchange and a durable queue of the same name bound to it;
- events ``S.events`` (topic, durable): run outcomes (``job.<job_id>.<status>``) and emitted events; a job that
  subscribes has a durable event queue ``S.jobs.<job_id>.events`` bound to it with each of its patterns;
- while ``migrate-queues`` moves a work queue to another type, its holding queue ``S.jobs.<queue>.migrating``
  (classic, durable, no TTL, no consumers) keeps the work queue's waiting messages; it is gone once the move is done.

Identifiers never contain dots, so none of these names can be another one's: ``S.jobs.<queue>`` has three
dot-separated parts and the delay and retry queues have four. The one reserved short name is ``dead``.

RabbitMQ answers a redeclaration with other arguments by closing the channel (PRECONDITION_FAILED).
The ``declare_*`` functions turn that into `TopologyMismatch`, but the channel they were given is gone:
give them a dedicated declaration channel, and open a fresh one after a failure.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import aio_pika
import aio_pika.abc
import aiormq.exceptions
import structlog

from shared.errors import QueueTypeMismatch, SchedulerError, TopologyMismatch
from shared.names import check_ident

QueueType = Literal["classic", "quorum"]

DEAD_SUFFIX = "dead"
"""The short name of the parking queue, so no work queue may use it."""

_log = structlog.get_logger(__name__)


# -- names (pure) -----------------------------------------------------------------------------------------


def exchange_name(scope: str) -> str:
    """The direct exchange every job message of `scope` goes through: ``S.jobs``."""
    return f"{check_ident(scope, 'scope')}.jobs"


def work_queue_name(scope: str, queue: str) -> str:
    """The work queue for the short name `queue` (``buy-scanner``): ``S.jobs.buy-scanner``."""
    check_ident(queue, "queue name")
    if queue == DEAD_SUFFIX:
        raise ValueError(f"queue name {queue!r} is reserved for the parking queue {dead_name(scope)!r}")
    return f"{exchange_name(scope)}.{queue}"


def delay_queue_name(scope: str, job_id: str) -> str:
    """The queue holding the next slot of the chain of `job_id`: ``S.jobs.<job_id>.delay``."""
    return f"{exchange_name(scope)}.{check_ident(job_id, 'job id')}.delay"


def retry_queue_name(scope: str, job_id: str) -> str:
    """The queue holding retry and back-off messages of `job_id`: ``S.jobs.<job_id>.retry``."""
    return f"{exchange_name(scope)}.{check_ident(job_id, 'job id')}.retry"


def events_exchange_name(scope: str) -> str:
    """The topic exchange of `scope`'s events: ``S.events``."""
    return f"{check_ident(scope, 'scope')}.events"


def event_queue_name(scope: str, job_id: str) -> str:
    """The queue of the events `job_id` subscribes to: ``S.jobs.<job_id>.events``."""
    return f"{exchange_name(scope)}.{check_ident(job_id, 'job id')}.events"


def holding_queue_name(scope: str, queue: str) -> str:
    """Where `migrate-queues` keeps the waiting messages of the work queue `queue` while that queue is deleted and
    declared again with another type: ``S.jobs.<queue>.migrating`` (four parts, like a job's delay queue, but
    no job queue ends in ``migrating``)."""
    return f"{work_queue_name(scope, queue)}.migrating"


def dead_name(scope: str) -> str:
    """The parking fanout exchange and the queue bound to it (same name): ``S.jobs.dead``."""
    return f"{exchange_name(scope)}.{DEAD_SUFFIX}"


# -- specs (pure) -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue as RabbitMQ knows it: name, durability and (immutable) arguments."""

    name: str
    durable: bool
    arguments: Mapping[str, Any] = field(hash=False)


def _spec(name: str, arguments: Mapping[str, Any]) -> QueueSpec:
    return QueueSpec(name=name, durable=True, arguments=MappingProxyType(dict(arguments)))


def _type_arguments(queue_type: QueueType) -> dict[str, Any]:
    if queue_type == "classic":
        return {}
    if queue_type == "quorum":
        return {"x-queue-type": "quorum"}
    raise ValueError(f"queue_type {queue_type!r} is not 'classic' or 'quorum'")


def work_queue_spec(scope: str, queue: str, queue_type: QueueType = "classic") -> QueueSpec:
    """The durable work queue `queue` of `scope`."""
    return _spec(work_queue_name(scope, queue), _type_arguments(queue_type))


def _dead_letter_to_work_queue(scope: str, queue: str, queue_type: QueueType) -> dict[str, Any]:
    arguments = _type_arguments(queue_type)
    arguments["x-dead-letter-exchange"] = exchange_name(scope)
    arguments["x-dead-letter-routing-key"] = work_queue_name(scope, queue)
    if queue_type == "quorum":
        # at-least-once keeps a chain message until the work queue confirmed it; RabbitMQ only honours it
        # together with reject-publish (with drop-head it silently falls back to at-most-once).
        arguments["x-dead-letter-strategy"] = "at-least-once"
        arguments["x-overflow"] = "reject-publish"
    # Never x-expires: a queue that expires as a whole drops its messages without dead-lettering them.
    return arguments


def delay_queue_spec(scope: str, job_id: str, queue: str, queue_type: QueueType = "classic") -> QueueSpec:
    """The delay queue of `job_id`, dead-lettering expired messages into the work queue `queue`."""
    return _spec(delay_queue_name(scope, job_id), _dead_letter_to_work_queue(scope, queue, queue_type))


def retry_queue_spec(scope: str, job_id: str, queue: str, queue_type: QueueType = "classic") -> QueueSpec:
    """The retry queue of `job_id`: the same arguments as its delay queue."""
    return _spec(retry_queue_name(scope, job_id), _dead_letter_to_work_queue(scope, queue, queue_type))


def dead_queue_spec(scope: str, queue_type: QueueType = "classic") -> QueueSpec:
    """The durable parking queue of `scope`: the scope's queue type (a classic queue lives on one node and is
    unreachable while that node is down, which would stop every consumer's reconnection on a cluster)."""
    return _spec(dead_name(scope), _type_arguments(queue_type))


def holding_queue_spec(scope: str, queue: str) -> QueueSpec:
    """The holding queue of the work queue `queue`: classic and durable whatever the type moved to or from (it
    outlives both), no TTL and no dead-lettering (what waits there must not go anywhere by itself)."""
    return _spec(holding_queue_name(scope, queue), {})


def event_queue_spec(scope: str, job_id: str, queue_type: QueueType = "classic") -> QueueSpec:
    """The durable event queue of `job_id`: no arguments but its type (it is read, not dead-lettered)."""
    return _spec(event_queue_name(scope, job_id), _type_arguments(queue_type))


# -- PRECONDITION_FAILED -> TopologyMismatch (pure) -------------------------------------------------------

# RabbitMQ 3.10: "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-routing-key' for queue 'q'
# in vhost '/': received 'b' but current is 'a'"; a value may also read "none"
# or "the value 'e' of type 'longstr'".
_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<argument>[^']+)' for (?:queue|exchange) '(?P<name>[^']+)' in vhost '[^']*': "
    r"received (?P<received>.+?) but current is (?P<current>.+?)\s*$"
)
_TYPED_VALUE = re.compile(r"^the value (?P<value>.+) of type '[^']+'$")


def _readable_value(server_value: str) -> str:
    match = _TYPED_VALUE.match(server_value)
    return match["value"] if match else server_value


def _type_of(value: str) -> str:
    """A queue type as RabbitMQ's refusal names it: no argument (``none``) is classic."""
    bare = value.strip("'")
    return "classic" if bare in ("none", "") else bare


def mismatch_from_reply(reply_text: str, name: str) -> SchedulerError:
    """Turn the text of a PRECONDITION_FAILED refusal to declare `name` into an error an operator can act on.

    An "inequivalent arg" refusal becomes a `TopologyMismatch` naming the entity and the differing argument;
    any other refusal (an argument RabbitMQ rejects outright, say) is a plain `SchedulerError` with the text.
    """
    match = _INEQUIVALENT.search(reply_text)
    if match:
        declared, existing = _readable_value(match["received"]), _readable_value(match["current"])
        if match["argument"] == "x-queue-type":
            return QueueTypeMismatch(match["name"], _type_of(declared), _type_of(existing))
        detail = f"declared {declared}, existing {existing}"
        return TopologyMismatch(name=match["name"], argument=match["argument"], detail=detail)
    if "inequivalent" in reply_text:
        return TopologyMismatch(name=name, argument="arguments", detail=reply_text)
    return SchedulerError(f"RabbitMQ refused to declare {name!r}: {reply_text}")


@contextlib.contextmanager
def _translating_refusal(name: str) -> Iterator[None]:
    try:
        yield
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        reply_text = str(exc.args[0]) if exc.args else str(exc)
        raise mismatch_from_reply(reply_text, name) from exc


# -- declaration (I/O) ------------------------------------------------------------------------------------


async def _declare_queue(channel: aio_pika.abc.AbstractChannel, spec: QueueSpec) -> aio_pika.abc.AbstractQueue:
    with _translating_refusal(spec.name):
        return await channel.declare_queue(spec.name, durable=spec.durable, arguments=dict(spec.arguments))


async def _declare_exchange(
    channel: aio_pika.abc.AbstractChannel, name: str, type_: aio_pika.ExchangeType
) -> aio_pika.abc.AbstractExchange:
    with _translating_refusal(name):
        return await channel.declare_exchange(name, type_, durable=True)


async def declare_events_exchange(channel: aio_pika.abc.AbstractChannel, scope: str) -> aio_pika.abc.AbstractExchange:
    """Declare the ``S.events`` topic exchange of `scope`. Idempotent."""
    return await _declare_exchange(channel, events_exchange_name(scope), aio_pika.ExchangeType.TOPIC)


async def declare_event_queue(
    channel: aio_pika.abc.AbstractChannel, scope: str, job_id: str, queue_type: QueueType
) -> aio_pika.abc.AbstractQueue:
    """Declare the durable event queue of `job_id`, of the scope's queue type (`Settings.scheduler_queue_type`),
    no other argument."""
    return await _declare_queue(channel, event_queue_spec(scope, job_id, queue_type))


async def declare_scope(
    channel: aio_pika.abc.AbstractChannel, scope: str, queue_type: QueueType
) -> aio_pika.abc.AbstractQueue:
    """Declare the ``S.jobs`` exchange, the parking exchange and queue (of the scope's queue type,
    `Settings.scheduler_queue_type`) and the ``S.events`` exchange of `scope`. Idempotent.

    Give it a dedicated declaration channel: on `TopologyMismatch` RabbitMQ has closed the channel.
    """
    await _declare_exchange(channel, exchange_name(scope), aio_pika.ExchangeType.DIRECT)
    dead_exchange = await _declare_exchange(channel, dead_name(scope), aio_pika.ExchangeType.FANOUT)
    dead_queue = await _declare_queue(channel, dead_queue_spec(scope, queue_type))
    await dead_queue.bind(dead_exchange, routing_key="")
    await declare_events_exchange(channel, scope)
    return dead_queue


async def declare_work_queue(
    channel: aio_pika.abc.AbstractChannel, scope: str, queue: str, queue_type: QueueType = "classic"
) -> aio_pika.abc.AbstractQueue:
    """Declare the work queue `queue` and bind it to ``S.jobs`` under its own name; return it. Idempotent.

    Also declares ``S.jobs`` (idempotent), so the binding never fails on a scope not declared yet.
    Give it a dedicated declaration channel: on `TopologyMismatch` RabbitMQ has closed the channel.
    """
    exchange = await _declare_exchange(channel, exchange_name(scope), aio_pika.ExchangeType.DIRECT)
    spec = work_queue_spec(scope, queue, queue_type)
    work_queue = await _declare_queue(channel, spec)
    await work_queue.bind(exchange, routing_key=spec.name)
    return work_queue


async def declare_job(
    channel: aio_pika.abc.AbstractChannel,
    scope: str,
    job_id: str,
    queue: str,
    queue_type: QueueType = "classic",
) -> None:
    """Declare what the chain of `job_id` needs: its work queue (bound) and delay queue. Idempotent. The retry
    queue is declared on first need (`declare_retry_queue`).

    The work queue is declared first, so an expiring message never finds its dead-letter target missing.
    Raises `TopologyMismatch` when one of them exists with other arguments (queue arguments are immutable);
    the channel is then closed by RabbitMQ, so give this a dedicated declaration channel.
    """
    await declare_work_queue(channel, scope, queue, queue_type)
    await declare_chain_queues(channel, scope, job_id, queue, queue_type)


async def declare_holding_queue(
    channel: aio_pika.abc.AbstractChannel, scope: str, queue: str
) -> aio_pika.abc.AbstractQueue:
    """Declare the holding queue of the work queue `queue`, bound to ``S.jobs`` under its own name (messages are
    published through the scope's exchange, see Publisher). Idempotent."""
    await _declare_exchange(channel, exchange_name(scope), aio_pika.ExchangeType.DIRECT)
    return await _declare_bound(channel, scope, holding_queue_spec(scope, queue))


async def declare_chain_queues(
    channel: aio_pika.abc.AbstractChannel,
    scope: str,
    job_id: str,
    queue: str,
    queue_type: QueueType = "classic",
) -> int:
    """`declare_job` without the work queue (declared already: seeding many jobs declares each work queue once):
    the job's delay queue (its retry queue comes on first need). Returns how many messages wait in it."""
    declared = await _declare_bound(channel, scope, delay_queue_spec(scope, job_id, queue, queue_type))
    return int(getattr(declared.declaration_result, "message_count", 0) or 0)


async def declare_retry_queue(
    channel: aio_pika.abc.AbstractChannel, scope: str, job_id: str, queue: str, queue_type: QueueType = "classic"
) -> None:
    """Declare the retry queue of `job_id` (bound), on the first retry or buffered slot of the job. Idempotent."""
    await _declare_bound(channel, scope, retry_queue_spec(scope, job_id, queue, queue_type))


async def _declare_bound(
    channel: aio_pika.abc.AbstractChannel, scope: str, spec: QueueSpec
) -> aio_pika.abc.AbstractQueue:
    declared = await _declare_queue(channel, spec)
    # Bound under its own name, so chain and retry messages are published through `S.jobs` (see Publisher).
    await declared.bind(exchange_name(scope), routing_key=spec.name)
    return declared


# -- deletion (I/O) ---------------------------------------------------------------------------------------


async def delete_job_queues(channel: aio_pika.abc.AbstractChannel, scope: str, job_id: str) -> None:
    """Delete the delay, retry and event queues of `job_id` with any messages in them (delete, tests)."""
    await channel.queue_delete(delay_queue_name(scope, job_id))
    await channel.queue_delete(retry_queue_name(scope, job_id))
    await channel.queue_delete(event_queue_name(scope, job_id))


async def _delete_quietly(channel: aio_pika.abc.AbstractChannel, name: str, *, exchange: bool) -> None:
    try:
        if exchange:
            await channel.exchange_delete(name)
        else:
            await channel.queue_delete(name)
    except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, TimeoutError) as exc:
        _log.warning("topology.delete_failed", name=name, exchange=exchange, error=repr(exc))


async def delete_scope(
    channel: aio_pika.abc.AbstractChannel, scope: str, job_ids: Iterable[str], queues: Iterable[str]
) -> None:
    """Best-effort removal of a scope's topology (tests, teardown): a failed deletion is logged, not raised.

    Deletes the work queues `queues` (short names), the delay and retry queues of `job_ids`, the parking
    queue and exchange, the event queues of `job_ids`, and the ``S.jobs`` and ``S.events`` exchanges. Messages in
    them are lost. Missing entities are fine.
    """
    queue_names = [work_queue_name(scope, queue) for queue in queues]
    for job_id in job_ids:
        queue_names += [delay_queue_name(scope, job_id), retry_queue_name(scope, job_id)]
        queue_names.append(event_queue_name(scope, job_id))
    queue_names.append(dead_name(scope))
    for name in queue_names:
        await _delete_quietly(channel, name, exchange=False)
    for name in (dead_name(scope), exchange_name(scope), events_exchange_name(scope)):
        await _delete_quietly(channel, name, exchange=True)
