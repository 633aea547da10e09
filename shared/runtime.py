"""The state the run protocol works on: the worker's environment (`Env`, one per process), one consumed message
(`Delivery`), the run lock (`Lock`) and one message's way through the steps (`Turn`). Data only: the steps are
in `shared.protocol` (1-7) and `shared.execution` (8-10)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg

from shared.dependencies import AMQP_ERRORS
from shared.lead import SlotGates
from shared.lead_batch import LeadBatch
from shared.messages import JobMessage
from shared.metrics import Metrics
from shared.publisher import Publisher
from shared.registry import Handler, Registry
from shared.slot_batch import SlotBatch
from shared.store.jobs import JobCache, JobRow
from shared.store.runs import NewRun, RunRow

AtSlotWork = Callable[[Callable[[], None]], Awaitable[None]]
"""The at-the-slot part of a run claimed ahead, given the call that gives its place among the worker's
`WORKER_CONCURRENCY` handlers back (see `Turn.handler_done`)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Env:
    """Everything the protocol touches, passed in (no globals): one per worker process."""

    scope: str
    worker_id: str
    pool: asyncpg.Pool
    publisher: Publisher
    registry: Registry
    metrics: Metrics
    executor: ThreadPoolExecutor
    clock: Callable[[], datetime] = utcnow
    rng: Callable[[], float] = random.random
    inflight: set[uuid.UUID] = field(default_factory=set)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    dependency_backoff_sec: float = 1.0
    jobs: JobCache = field(default_factory=JobCache)
    dispatch_lead_sec: float = 0.0  # the lead chain messages are posted with (shared.lead)
    claim_linger_sec: float = 0.0  # how long a batched claim ahead may wait for others (shared.lead)
    # runs the at-the-slot part of a run claimed ahead: `wait` (outside the worker's concurrency limit), then
    # `work` (inside it, given the call that gives its place back once the handler returned); None: both in
    # turn, in the caller's task
    run_later: Callable[[Callable[[], Awaitable[None]], AtSlotWork], None] | None = None
    lead_batch: LeadBatch | None = None  # claims ahead made together (shared.lead_batch); None: one by one
    slot_batch: SlotBatch | None = None  # runs claimed ahead started together (shared.slot_batch); None: alone
    gates: SlotGates = field(default_factory=SlotGates)  # where the runs claimed ahead wait for their slot
    _series: dict[tuple[int, tuple[str, ...]], Any] = field(default_factory=dict)

    def series(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once per label set: the per-run metrics cost a dict lookup."""
        key = (id(metric), labels)
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = metric.labels(*labels)
        return child


class Delivery:
    """One consumed message and whether it has been settled (acked or nacked) yet."""

    def __init__(self, message: aio_pika.abc.AbstractIncomingMessage, queue: str) -> None:
        self.message = message
        self.queue = queue  # the work queue short name it was consumed from
        self.settled = False
        self.handler_done: Callable[[], None] | None = None  # gives its place among the handlers back (Turn)
        self.take_place: Callable[[], Awaitable[None]] | None = None  # takes it again after a give-back

    async def ack(self) -> None:
        if not self.settled:
            self.settled = True
            await self.message.ack()

    async def nack_requeue(self) -> None:
        if not self.settled:
            self.settled = True
            with contextlib.suppress(*AMQP_ERRORS, RuntimeError):
                await self.message.nack(requeue=True)


@dataclass(slots=True)
class Lock:
    """The run lock of step 4 and what the statement that took it found."""

    key: int | None  # the session advisory lock held on the run's connection, if any; None once released
    needed: bool  # False for overlap=allow_all
    stale: bool = False  # the job row the lock was asked for has changed since it was read: decide again
    claimed: bool | None = None  # step 5's usual insert, done with the lock: None when it was not attempted

    @property
    def free(self) -> bool:
        return self.key is not None or not self.needed


@dataclass(slots=True)
class Turn:
    """One message on its way through the protocol: what each step found, for the steps after it."""

    env: Env
    delivery: Delivery
    msg: JobMessage
    conn: asyncpg.Connection  # holds the run lock for the whole run
    job: JobRow | None = None
    handler: Handler | None = None
    run: NewRun | None = None
    lock: Lock | None = None
    existing: RunRow | None = None  # the row the slot already had, when the claim found one
    started_at: datetime | None = None  # set when the post of the next slot also started the run
    # gives the run's place among the worker's WORKER_CONCURRENCY handlers back as soon as its handler returned,
    # before the outcome is recorded and published (the limit is on handlers: in a herd, the next slot's
    # handlers then start without waiting for the bookkeeping of the ones before); None: held to the end
    handler_done: Callable[[], None] | None = None
