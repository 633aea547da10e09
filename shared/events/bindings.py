"""Binding and unbinding event queues (I/O): what a change to the jobs of a scope does to RabbitMQ's routing.

A job's subscriptions (`decide.subscriptions`) depend on its own `triggers_on` and on the `on_success` of the other
jobs, so a change to one job can change another's bindings: `sync` compares the subscriptions before and after a
change for every job it may touch, binds what is new and unbinds what is gone, at once. Workers notice the queues
to consume within their refresh period (`subscriptions.EventConsumers`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import aio_pika
import aio_pika.abc
import structlog

from shared import topology
from shared.events.decide import Subscriber, subscriptions

log = structlog.get_logger("shared.events.bindings")


def affected(before: Sequence[Subscriber], after: Sequence[Subscriber], job_ids: Iterable[str]) -> set[str]:
    """The jobs whose bindings a change to `job_ids` may move: themselves and every job either version of them
    names in `on_success`."""
    touched = set(job_ids)
    for job in (*before, *after):
        if job.job_id in touched:
            touched.update(job.on_success)
    return touched


def plan(
    before: Sequence[Subscriber], after: Sequence[Subscriber], job_ids: Iterable[str]
) -> dict[str, tuple[list[str], list[str], bool]]:
    """Per affected job that exists after the change: (patterns to bind, patterns to unbind, keeps a queue). Pure."""
    old = {job.job_id: job for job in before}
    new = {job.job_id: job for job in after}
    out: dict[str, tuple[list[str], list[str], bool]] = {}
    for job_id in sorted(affected(before, after, job_ids)):
        was = subscriptions(old[job_id], before) if job_id in old else []
        now = subscriptions(new[job_id], after) if job_id in new else []
        if job_id not in new and not was:
            continue
        if was or now:
            out[job_id] = (now, sorted(set(was) - set(now)), bool(now))
    return out


async def bind_job(
    channel: aio_pika.abc.AbstractChannel,
    scope: str,
    job_id: str,
    patterns: Iterable[str],
    queue_type: topology.QueueType,
) -> None:
    """Declare the job's event queue (of the scope's queue type) and bind it to `S.events` with each pattern
    (idempotent)."""
    patterns = list(patterns)
    if not patterns:
        return
    exchange = await topology.declare_events_exchange(channel, scope)
    queue = await topology.declare_event_queue(channel, scope, job_id, queue_type)
    for pattern in patterns:
        # the plain queue's bind, not the robust one's: a robust queue would remember the binding and put it back
        # after a reconnect, even once the control layer has unbound it
        await aio_pika.Queue.bind(queue, exchange, routing_key=pattern)  # type: ignore[arg-type]


async def sync(
    channel: aio_pika.abc.AbstractChannel,
    scope: str,
    before: Sequence[Subscriber],
    after: Sequence[Subscriber],
    job_ids: Iterable[str],
    queue_type: topology.QueueType,
) -> None:
    """Bring the bindings of the jobs a change touched to what the definitions after it say. A job that no longer
    subscribes to anything loses its event queue (and the events waiting in it: nothing would run them). Event
    queues are of the scope's queue type, `queue_type`."""
    for job_id, (bind, unbind, keeps) in plan(before, after, job_ids).items():
        if keeps:
            await bind_job(channel, scope, job_id, bind, queue_type)
            queue = await topology.declare_event_queue(channel, scope, job_id, queue_type)
            for pattern in unbind:
                await queue.unbind(topology.events_exchange_name(scope), routing_key=pattern)
        elif any(j.job_id == job_id for j in after):
            await channel.queue_delete(topology.event_queue_name(scope, job_id))
        log.info("events.bindings_synced", job_id=job_id, bound=bind, unbound=unbind, queue=keeps)
