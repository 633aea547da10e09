"""The worker's event consumers (I/O): for every job it serves that subscribes to events (and is not a paused job
holding them), one consumer on the job's event queue. `EventConsumers.refresh` brings the set in line with the
job rows; the worker calls it at start and after every job-state refresh (HEARTBEAT_SEC, 5 s by default, the same
read of the jobs: shared.job_metrics), so a
job created, changed, paused, resumed or deleted through the control layer is consumed or let go of within that
period (its queue is bound at once by the control layer: events published meanwhile wait in the queue)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine, Iterable, Sequence
from functools import partial
from typing import Any

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from shared import topology
from shared.dependencies import AMQP_ERRORS, describe
from shared.events.bindings import bind_job
from shared.events.consumer import handle_event
from shared.events.decide import subscriptions_of
from shared.failover import channel_restored
from shared.runtime import Env
from shared.store.jobs import JobRow

log = structlog.get_logger("shared.events.subscriptions")

RESTORE_WAIT_SEC = 30.0  # how long a consumer's cancel waits for its channel's restore after a reconnect


def wanted(jobs: Sequence[JobRow], queues: Iterable[str]) -> dict[str, list[str]]:
    """Pure: the jobs served by `queues` whose event queue this worker consumes now, with their patterns."""
    served = set(queues)
    every = subscriptions_of(jobs)
    out = {}
    for job in jobs:
        if job.queue not in served:
            continue
        patterns = every[job.job_id]
        if patterns and (job.enabled or job.on_paused_event != "hold"):
            out[job.job_id] = patterns
    return out


class EventConsumers:
    """The consumers of the event queues of the jobs one worker serves (owned by the worker, on its channel)."""

    def __init__(
        self,
        env: Env,
        channel: AbstractChannel,
        queues: Iterable[str],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.env = env
        self.channel = channel
        self.queues = list(queues)
        self.spawn = spawn  # runs a coroutine as a task the worker owns (and cancels, and waits for on drain)
        self._consuming: dict[str, tuple[AbstractQueue, str]] = {}
        self._held: set[str] = set()

    @property
    def job_ids(self) -> list[str]:
        return sorted(self._consuming)

    def hold(self, job_id: str) -> None:
        """A paused job holds its events: stop consuming now (the next refresh confirms it)."""
        self._held.add(job_id)

    async def refresh(self, jobs: Sequence[JobRow]) -> None:
        """Consume the event queues of `wanted(jobs)`, stop consuming the others. Each queue is bound again with
        its patterns first (idempotent), so a queue lost with a broker's data comes back."""
        want = wanted(jobs, self.queues)
        for job_id in [j for j in self._consuming if j not in want or j in self._held]:
            await self._stop(job_id)
        self._held.clear()
        for job_id, patterns in want.items():
            if job_id not in self._consuming:
                scope_type = self.env.publisher.scope_queue_type
                await bind_job(self.channel, self.env.scope, job_id, patterns, scope_type)
                queue = await topology.declare_event_queue(self.channel, self.env.scope, job_id, scope_type)
                tag = await queue.consume(partial(self._on_event, job_id))
                self._consuming[job_id] = (queue, tag)
                log.info("events.consuming", job_id=job_id, patterns=patterns)

    async def _stop(self, job_id: str) -> None:
        queue, tag = self._consuming.pop(job_id)
        await channel_restored(self.channel, RESTORE_WAIT_SEC)  # never cancel a tag a reconnect is restoring
        with contextlib.suppress(Exception):  # a queue deleted meanwhile has no consumer to cancel
            await queue.cancel(tag)
        log.info("events.stopped_consuming", job_id=job_id)

    async def _on_event(self, job_id: str, message: AbstractIncomingMessage) -> None:
        if job_id in self._held:  # prefetched before the consumer was cancelled: back to the queue, once
            await message.nack(requeue=True)
            return
        self.spawn(handle_event(self.env, job_id, message, self._hold_now))

    def _hold_now(self, job_id: str) -> None:
        self._held.add(job_id)
        if job_id in self._consuming:
            queue, tag = self._consuming.pop(job_id)
            self.spawn(self._cancel(job_id, queue, tag))

    async def _cancel(self, job_id: str, queue: AbstractQueue, tag: str) -> None:
        await channel_restored(self.channel, RESTORE_WAIT_SEC)  # as in _stop
        with contextlib.suppress(Exception):
            await queue.cancel(tag)
        log.info("events.held", job_id=job_id)

    async def close(self) -> None:
        for job_id in list(self._consuming):
            await self._stop(job_id)

    async def follow(self, jobs: list[JobRow]) -> None:
        """`refresh`, for the job-state poller (shared.job_metrics): RabbitMQ being down only delays the next
        refresh (logged); the consumers keep what they had and the poller goes on."""
        try:
            await self.refresh(jobs)
        except AMQP_ERRORS as exc:
            log.warning("events.refresh_failed", error=describe(exc))
