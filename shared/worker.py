"""The worker: a service registers handlers for its work queues, then `Worker.run()` serves them.

    worker = Worker("buy_scanner")

    @worker.handler("buy-scanner", params=ScanParams)
    async def scan(ctx: RunContext, params: ScanParams) -> None: ...

    if __name__ == "__main__":
        worker.run()

Start-up waits for RabbitMQ and PostgreSQL (never exits because they are not up yet), migrates, declares the
topology of its queues, registers itself as live, posts `run_on_startup` messages once per service boot, then
consumes with a bounded prefetch and runs the watchdog. SIGTERM/SIGINT: stop consuming, let running handlers
finish within the grace period, then cancel them and record it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from shared import connect, event_loop, heap, lanes, logs, queue_types, topology
from shared.backoff import forever
from shared.connection_watch import ConfirmWatch
from shared.dependencies import AMQP_ERRORS, DB_ERRORS
from shared.errors import ConfigError, TopologyMismatch
from shared.events.subscriptions import EventConsumers
from shared.failover import channel_restored
from shared.job_metrics import keep_job_metrics
from shared.lead_batch import LeadBatch
from shared.liveness import Liveness
from shared.locks import startup_lock_key
from shared.messages import startup_message
from shared.metrics import Metrics, new_registry
from shared.metrics_http import serve
from shared.protocol import handle_delivery
from shared.publisher import Publisher
from shared.readiness import Probe, Readiness
from shared.registry import HandlerFn, Registry
from shared.runtime import AtSlotWork, Delivery, Env, utcnow
from shared.seeding import declare_retry_for
from shared.settings import Settings, unknown_variables_line
from shared.slot_batch import SlotBatch
from shared.store import jobs as jobs_store
from shared.store import workers
from shared.store.jobs import JobRow
from shared.store.migrate import migrate
from shared.watchdog import Leadership, Watchdog, standard_sweeps

log = structlog.get_logger("shared.worker")
VERSION = "0.1.0"


def refusal_line(exc: aiormq.exceptions.AMQPError, settings: Settings) -> str:
    """RabbitMQ's ACCESS_REFUSED as one line an operator can act on."""
    text = str(exc.args[0]) if exc.args else str(exc)
    return (
        f"RabbitMQ refused access: {text}. The user in AMQP_URL ({settings.amqp_url_redacted}) "
        f"may only use its own scope's resources; SCHEDULER_SCOPE is {settings.scheduler_scope!r}: "
        "use that scope's user, or give the user permissions on it"
    )


def warn_unknown_variables() -> None:
    """One warning line at start naming SCHEDULER_* variables nothing reads (a typo is otherwise silent)."""
    line = unknown_variables_line(os.environ)
    if line is not None:
        log.warning("settings.unknown_variables", message=line)


DRAIN_ROUNDS = 10
"""Stopping waits for the worker's tasks, then for those they started meanwhile, this many times at most."""


class Place:
    """A place among the worker's `WORKER_CONCURRENCY`, given back once (when the handler returned, or at the end)."""

    __slots__ = ("_held", "_semaphore")

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore = semaphore
        self._held = True

    @classmethod
    async def take(cls, semaphore: asyncio.Semaphore) -> Place:
        await semaphore.acquire()
        return cls(semaphore)

    def give_back(self) -> None:
        if self._held:
            self._held = False
            self._semaphore.release()

    async def take_again(self) -> None:
        """Hold it again (a message that gave its place back to claim ahead goes the way of one message after all)."""
        if not self._held:
            await self._semaphore.acquire()
            self._held = True


class Worker:
    """One worker process serving the work queues its handlers are registered for."""

    def __init__(self, service: str, settings: Settings | None = None, metrics: Metrics | None = None) -> None:
        self.service = service
        self.settings = settings or Settings()
        self.registry = Registry()
        self.metrics = metrics or Metrics(new_registry())
        self.worker_id = f"{service}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.stop_event = asyncio.Event()
        self.ready = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._env: Env | None = None
        self._events: EventConsumers | None = None
        self.readiness = Readiness()  # what /readyz answers; attached once the worker consumes

    def handler(self, queue: str, params: Any = None, job: str | None = None) -> Any:
        """Decorator: `@worker.handler("queue-name", params=Model)` (or `job=` for one job of a shared queue)."""
        return self.registry.handler(queue, params, job)

    def register(self, queue: str, fn: HandlerFn, params: Any = None, job: str | None = None) -> None:
        self.registry.register(queue, fn, params, job)

    def run(self) -> None:
        """Blocking entry point for `python -m services.<name>`."""
        logs.configure(
            self.settings.log_level,
            loki_url=self.settings.loki_url,
            metrics=self.metrics,
            service=self.service,
            scope=self.settings.scheduler_scope,
        )
        try:
            loop = event_loop.choose(self.settings.scheduler_event_loop)
        except event_loop.EventLoopUnavailable as exc:  # before connecting anywhere: installing it is the fix
            log.error("worker.event_loop_unavailable", error=str(exc))
            print(f"error: {self.service}: {exc}", file=sys.stderr)
            sys.exit(2)
        try:
            event_loop.run(self.serve(install_signals=True, freeze_heap=True), loop)
        except (TopologyMismatch, ConfigError) as exc:
            log.error("worker.topology_mismatch", error=str(exc))
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except aiormq.exceptions.ChannelAccessRefused as exc:  # a configuration error: retrying cannot fix it
            line = refusal_line(exc, self.settings)
            log.error("worker.access_refused", error=line)
            print(f"error: {self.service}: {line}", file=sys.stderr)
            sys.exit(2)

    def stop(self) -> None:
        self.stop_event.set()

    async def serve(self, install_signals: bool = False, freeze_heap: bool = False) -> None:
        """Run until `stop()` (or SIGTERM/SIGINT when `install_signals`). `freeze_heap`: the process is this
        worker's own (`run`): once up, what start-up built is frozen out of the collector's full passes."""
        s = self.settings
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        if not self.registry.queues:
            raise RuntimeError(f"service {self.service!r} registered no handlers")
        warn_unknown_variables()
        server = serve(s.metrics_port, self.metrics.registry, self.readiness)
        self.metrics.worker.info(
            {"service": self.service, "scope": s.scheduler_scope, "mode": s.mode, "version": VERSION}
        )
        log.info("worker.starting", worker=self.worker_id, queues=self.registry.queues, amqp=s.amqp_url_redacted)
        log.info("worker.event_loop", loop=event_loop.running_loop_name(), setting=s.scheduler_event_loop)
        async with AsyncExitStack() as stack:
            if server is not None:
                stack.callback(server.server_close)
                stack.callback(server.shutdown)
            if not await self._start_until_up(stack):
                return  # stopped before it was up
            self.ready.set()
            if freeze_heap:
                heap.freeze_startup()  # full collections skip what start-up built (shared.heap)
            await self.stop_event.wait()
            await self._drain()

    async def _start_until_up(self, outer: AsyncExitStack) -> bool:
        """Start; when RabbitMQ or PostgreSQL goes away half-way (both restart during a deploy), close what was
        opened and start again after a back-off: a worker never exits because a dependency blinked while it
        started. A refused user or a topology mismatch still ends it: retrying cannot fix those."""

        async def attempt() -> AsyncExitStack | None:
            if self.stop_event.is_set():
                return None  # stopped before it was up
            stack = AsyncExitStack()
            try:
                await self._start(stack)
            except BaseException:
                await stack.aclose()
                raise
            return stack

        stack = await forever(
            "worker.start", attempt, cap_sec=self.settings.dependency_retry_max_sec,
            errors=(*DB_ERRORS, *AMQP_ERRORS), fatal=(aiormq.exceptions.ChannelAccessRefused,),
            event="worker.start_interrupted",
        )  # fmt: skip
        if stack is None:
            return False
        outer.push_async_callback(stack.aclose)
        return True

    def _up(self, dependency: str) -> Any:
        return lambda ok: self.metrics.dependency_up.labels(dependency).set(1 if ok else 0)

    async def _start(self, stack: AsyncExitStack) -> None:
        s = self.settings
        dsn = s.database_url.get_secret_value()
        cap = s.dependency_retry_max_sec
        pool = await connect.postgres_pool(
            dsn, "startup", s.pool_size, cap, name=self.worker_id, on_attempt=self._up("postgres")
        )
        stack.push_async_callback(pool.close)
        await connect.wait_for("postgres", "migrate", lambda: self._migrate(pool), cap)
        amqp = await connect.rabbitmq(
            s.amqp_url.get_secret_value(), "startup", cap, name=self.worker_id, on_attempt=self._up("rabbitmq")
        )
        stack.push_async_callback(amqp.close)
        publish_channel = await amqp.channel(publisher_confirms=True, on_return_raises=True)
        declare_retry = partial(self._declare_retry, amqp, pool)
        publisher = Publisher(
            publish_channel, s.scheduler_scope, lead_ms=s.scheduler_dispatch_lead_ms,
            ttl_ceiling_ms=s.scheduler_ttl_ceiling_ms, declare_retry=declare_retry,
            scope_queue_type=s.scheduler_queue_type,
        )  # fmt: skip
        jobs = await self._declare(amqp, pool)
        self._background(
            stack,
            keep_job_metrics(
                self.metrics, pool, s.scheduler_scope, self.registry.queues, s.heartbeat_sec, self._follow_jobs
            ),
            "job-metrics",
        )

        executor = ThreadPoolExecutor(max_workers=s.worker_concurrency, thread_name_prefix="handler")
        stack.callback(executor.shutdown, wait=False, cancel_futures=True)
        self._env = Env(
            s.scheduler_scope, self.worker_id, pool, publisher, self.registry, self.metrics, executor,
            dispatch_lead_sec=s.scheduler_dispatch_lead_ms / 1000, run_later=self._run_later,
            claim_linger_sec=s.scheduler_claim_linger_ms / 1000,
            lead_batch=(
                LeadBatch(pool, s.scheduler_scope, self.worker_id, enough=max(1, s.worker_prefetch // 2))
                if s.scheduler_batching else None
            ),
            slot_batch=SlotBatch(pool, self.worker_id) if s.scheduler_batching else None,
        )  # fmt: skip
        self._semaphore = asyncio.Semaphore(s.worker_concurrency)

        liveness = Liveness(
            dsn, worker_id=self.worker_id, scope=s.scheduler_scope, service=self.service,
            hostname=socket.gethostname(), pid=os.getpid(), queues=self.registry.queues,
            period_sec=s.heartbeat_sec, cap_sec=cap,
        )  # fmt: skip
        self._background(stack, liveness.run(), "liveness")
        stack.push_async_callback(liveness.close)
        await liveness.registered.wait()
        await self._post_startup_messages(pool, publisher, jobs)

        channel = await self._consume(amqp, jobs)
        watchdog_channel = await amqp.channel(publisher_confirms=True, on_return_raises=True)
        watchdog_publisher = Publisher(
            watchdog_channel, s.scheduler_scope, lead_ms=s.scheduler_dispatch_lead_ms,
            ttl_ceiling_ms=s.scheduler_ttl_ceiling_ms, declare_retry=declare_retry,
            scope_queue_type=s.scheduler_queue_type,
        )  # fmt: skip
        watchdog = Watchdog(
            Leadership(dsn, s.scheduler_scope, self.worker_id, cap_sec=cap),
            standard_sweeps(
                s.scheduler_scope, watchdog_channel, watchdog_publisher, self.metrics,
                lost_after_sec=s.chain_lost_after_sec, retention_days=s.run_retention_days, clock=utcnow, cap_sec=cap,
                vacuum=s.scheduler_vacuum,
            ),
            interval_sec=s.watchdog_interval_sec,
        )  # fmt: skip
        self._background(stack, watchdog.run(), "watchdog")
        if s.amqp_stall_sec > 0:  # a connection through a node that was frozen: confirms stop, it looks alive
            confirms = ConfirmWatch([publish_channel, watchdog_channel], s.amqp_stall_sec)
            self._background(stack, confirms.run(), "confirm-watch")
        self._background(stack, self._keep_consuming(amqp, pool, channel), "keep-consuming")
        await self._consume_events(amqp, pool)
        self.readiness.attach(Probe(pool, amqp, channel, self.registry.queues, self._consumed, self._stopping))
        stack.callback(self.readiness.detach)
        log.info("worker.ready", worker=self.worker_id, prefetch=s.worker_prefetch, concurrency=s.worker_concurrency)

    def _background(self, stack: AsyncExitStack, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

        stack.push_async_callback(stop)

    async def _migrate(self, pool: Any) -> None:
        async with pool.acquire() as conn:
            await migrate(conn)

    async def _queue_types(self, pool: Any) -> dict[str, topology.QueueType]:
        """The type of each work queue served: its jobs' (ConfigError when they disagree), else SCHEDULER_QUEUE_TYPE."""
        jobs = await jobs_store.jobs_for_queues(pool, self.settings.scheduler_scope, self.registry.queues)
        members = [queue_types.Member(j.job_id, j.queue, j.queue_type) for j in jobs]
        return queue_types.for_queues(self.registry.queues, members, self.settings.scheduler_queue_type)

    async def _declare(self, amqp: AbstractRobustConnection, pool: Any) -> list[JobRow]:
        """Exchange, parking and work queues of this worker (each of its type); returns the jobs it serves, whose
        delay queues `_consume` declares."""
        scope = self.settings.scheduler_scope
        self._types = await self._queue_types(pool)
        channel: AbstractChannel = await amqp.channel()
        try:
            await topology.declare_scope(channel, scope, self.settings.scheduler_queue_type)
            for queue in self.registry.queues:
                await topology.declare_work_queue(channel, scope, queue, self._types[queue])
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        return await jobs_store.jobs_for_queues(pool, scope, self.registry.queues)

    async def _declare_retry(self, amqp: AbstractRobustConnection, pool: Any, job_id: str) -> None:
        """A job's retry queue on its first retry or buffered slot, from its row, on a channel of its own."""
        job = await jobs_store.get_job(pool, self.settings.scheduler_scope, job_id)
        if job is None:
            return  # deleted meanwhile: the publish that follows fails as unroutable, as it would have
        channel = await amqp.channel()
        try:
            await declare_retry_for(channel, job)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        log.info("topology.retry_queue_declared", job_id=job_id, queue_type=job.queue_type)

    async def _post_startup_messages(self, pool: Any, publisher: Publisher, served: list[JobRow]) -> None:
        """`run_on_startup` jobs get one `startup` message per boot of the service, not per replica: only the
        earliest-registered live worker on the queue posts it (checked under a per-queue lock). With
        SCHEDULER_RUN_IMMEDIATELY every scheduled job of the service does (the seed's "run once at start" switch);
        a job without a schedule (runs on events or by hand) only with its own `run_on_startup`. `served`: the jobs
        of this worker's queues, as read at start."""
        scope = self.settings.scheduler_scope
        every = self.settings.scheduler_run_immediately
        jobs = [j for j in served if j.run_on_startup or (every and j.schedule is not None)]
        for job in jobs:
            if not job.enabled:
                continue
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", startup_lock_key(scope, job.queue))
                if await workers.earlier_alive_on(conn, scope, job.queue, self.worker_id):
                    continue
                message = startup_message(scope, job.job_id, utcnow())
                await publisher.to_work(job.queue, message)
                log.info("worker.startup_message", job_id=job.job_id, run_id=str(message.run_id))

    async def _consume(self, amqp: AbstractRobustConnection, jobs: list[JobRow]) -> AbstractChannel:
        """Consume each work queue as soon as the delay queues of its jobs are declared (a message of a job posts
        its next slot there), the queues with fewest jobs first: on a scope of thousands of jobs the small queues
        run while the large ones are still being declared."""
        channel = await amqp.channel()
        await channel.set_qos(prefetch_count=self.settings.worker_prefetch)
        self._consumers = []
        self._consuming: set[str] = set()
        declaring: AbstractChannel = await amqp.channel()
        try:
            for name, queue_jobs in lanes.by_queue(self.registry.queues, jobs):
                await lanes.spread(declaring, [partial(_declare_delay, job) for job in queue_jobs], amqp)
                scope = self.settings.scheduler_scope
                queue = await topology.declare_work_queue(channel, scope, name, self._types[name])
                tag = await queue.consume(partial(self._on_message, name))
                self._consumers.append((queue, tag))
                self._consuming.add(name)
        finally:
            with contextlib.suppress(Exception):
                await declaring.close()
        return channel

    async def _keep_consuming(self, amqp: AbstractRobustConnection, pool: Any, channel: AbstractChannel) -> None:
        """Consume again from a work queue whose consumer the broker cancelled (the queue was deleted, as
        `migrate-queues` does before it redeclares it with another type): back-off until it is declared again.

        Only a channel restored in full is looked at: while a reconnect restores the consumers one queue after the
        other (seconds, on a loaded cluster of quorum queues), a consumer not restored yet is not a cancelled one.
        Taking it for one once re-consumed the queue and cancelled the old tag while the restore registered it
        again: the cancel-ok then took the client's callback away from a consumer the broker kept, and every
        message the broker gave that consumer stayed unacknowledged, unseen, until the channel closed."""
        missing_before: set[Any] = set()
        while not self.stop_event.is_set():
            await asyncio.sleep(0.5)  # a look at the client's own consumer table: no round trip
            if channel.is_closed or not await channel_restored(channel, 0.5):
                missing_before.clear()
                continue  # the robust connection restores the channel and its consumers
            with contextlib.suppress(*AMQP_ERRORS):
                underlay = await channel.get_underlay_channel()
                present = getattr(underlay, "consumers", None)
                if present is None:
                    continue
                missing = {tag for _, tag in self._consumers if tag not in present}
                # missing twice in a row, the channel restored both times: the broker cancelled it
                for index, (queue, tag) in enumerate(list(self._consumers)):
                    if tag not in missing or tag not in missing_before or self.stop_event.is_set():
                        continue
                    log.warning(
                        "worker.consumer_cancelled", queue=queue.name,
                        message="the broker cancelled the consumer (queue deleted, e.g. by migrate-queues): "
                        "declaring it again and consuming with back-off",
                    )  # fmt: skip
                    self._consuming.discard(self._queue_short(queue.name))
                    self._consumers[index] = await self._reconsume(amqp, pool, channel, queue, tag)
                    missing.discard(tag)
                missing_before = missing

    def _queue_short(self, name: str) -> str:
        return name.removeprefix(topology.exchange_name(self.settings.scheduler_scope) + ".")

    async def _reconsume(
        self, amqp: AbstractRobustConnection, pool: Any, channel: AbstractChannel, old: Any, tag: Any
    ) -> tuple[Any, Any]:
        forget_consumer(old, tag)  # so a reconnect does not restore it
        short = self._queue_short(old.name)

        async def attempt() -> tuple[Any, Any]:
            types = await self._queue_types(pool)
            declaring = await amqp.channel()
            try:
                await topology.declare_work_queue(declaring, self.settings.scheduler_scope, short, types[short])
            except TopologyMismatch as exc:
                log.warning("worker.reconsume_waiting", queue=old.name, error=str(exc))
                raise
            finally:
                with contextlib.suppress(Exception):
                    await declaring.close()
            queue = await topology.declare_work_queue(channel, self.settings.scheduler_scope, short, types[short])
            new_tag = await queue.consume(partial(self._on_message, short))
            self._types[short] = types[short]
            return queue, new_tag

        found = await forever(
            "worker.reconsume", attempt, cap_sec=self.settings.dependency_retry_max_sec,
            errors=(*DB_ERRORS, *AMQP_ERRORS, TopologyMismatch, ConfigError), event="worker.reconsume_retry",
        )  # fmt: skip
        self._consuming.add(short)
        log.info("worker.consuming_again", queue=old.name, queue_type=self._types[short])
        return found

    def _consumed(self) -> set[str]:
        """The work queues this worker has a consumer on (for readiness)."""
        return set(getattr(self, "_consuming", ()))

    def _stopping(self) -> bool:
        return self.stop_event.is_set()

    async def _consume_events(self, amqp: AbstractRobustConnection, pool: Any) -> None:
        """The event queues of the jobs this worker serves, consumed now and kept in line with the job rows."""
        assert self._env is not None
        channel = await amqp.channel()
        await channel.set_qos(prefetch_count=self.settings.worker_prefetch)
        self._events = EventConsumers(self._env, channel, self.registry.queues, self._spawn)
        jobs, _bad = await jobs_store.list_jobs_checked(pool, self.settings.scheduler_scope)
        await self._events.refresh(jobs)  # then after every job-state refresh (_follow_jobs)

    async def _follow_jobs(self, jobs: list[JobRow]) -> None:
        if self._events is not None:
            await self._events.follow(jobs)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro, name="event")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_message(self, queue: str, message: AbstractIncomingMessage) -> None:
        """Hand the message to a task this worker owns. aio-pika cancels the consumer callbacks of a channel that
        closes: a broker hiccup would otherwise cancel every run in progress, long after its message was acked."""
        task = asyncio.create_task(self._handle(queue, message), name="delivery")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _run_later(self, wait: Callable[[], Awaitable[None]], work: AtSlotWork) -> None:
        """The at-the-slot part of a run claimed ahead (shared.lead): wait without taking a place among the
        `worker_concurrency` handlers, then run in one, given back once the handler returned (its outcome is
        recorded and published outside it). A task of this worker: draining waits for it."""

        async def later() -> None:
            await wait()
            place = await Place.take(self._semaphore)
            try:
                await work(place.give_back)
            finally:
                place.give_back()

        task = asyncio.create_task(later(), name="at-slot")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, queue: str, message: AbstractIncomingMessage) -> None:
        assert self._env is not None
        delivery = Delivery(message, queue)
        place = await Place.take(self._semaphore)
        delivery.handler_done = place.give_back  # a run on this delivery gives it back when its handler returned
        delivery.take_place = place.take_again
        try:
            if self.stop_event.is_set():
                await delivery.nack_requeue()  # not started: another worker (or this one, later) takes it
                return
            await handle_delivery(self._env, delivery)
        finally:
            place.give_back()

    async def _drain(self) -> None:
        """Stop consuming; give running handlers the grace period; then cancel them (they record it)."""
        assert self._env is not None
        self._env.stopping.set()
        for queue, tag in getattr(self, "_consumers", []):
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        if self._events is not None:
            await self._events.close()
        log.info("worker.draining", running=len(self._tasks), grace_sec=self.settings.shutdown_grace_sec)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_grace_sec
        cancelled = 0
        for _ in range(DRAIN_ROUNDS):  # a task may start another as it ends (a claim's part at the slot): wait for it
            pending = set(self._tasks)
            if not pending:
                break
            _, still = await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=10)
                cancelled += len(still)
        if cancelled:
            log.warning("worker.cancelled_runs", count=cancelled)
        log.info("worker.stopped", worker=self.worker_id)


def forget_consumer(queue: Any, tag: Any) -> None:
    """Drop a consumer the broker cancelled from the robust queue's list of consumers to restore, without a
    basic.cancel: the broker knows it no more, and a cancel of the tag would race a restore of it (aiormq removes
    the callback of a tag on any cancel-ok for it, also one that answers a cancel sent before the restore's
    consume: the broker would then deliver to a consumer the client no longer has)."""
    consumers = getattr(queue, "_consumers", None)  # aio-pika's RobustQueue: tag -> consume() arguments
    if isinstance(consumers, dict):
        consumers.pop(tag, None)


async def _declare_delay(job: JobRow, channel: AbstractChannel) -> None:
    """The delay queue of one of this worker's jobs (its work queue is declared already)."""
    await topology.declare_chain_queues(channel, job.scope, job.job_id, job.queue, job.queue_type)  # type: ignore[arg-type]
