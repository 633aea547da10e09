"""An event delivery for one subscribing job becomes a job message in the job's work queue (I/O, thin): the
decisions are `decide.decide` over the filter's verdict, and the run id is `decide.event_run_id`, so the run
protocol's claim makes a (job, event) pair run once however often the event is delivered or republished.

The event is acked only once its job message is confirmed by the broker: a worker that dies in between leaves the
event in the event queue, and its second translation is the same run id (dropped as a duplicate by the claim)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from aio_pika.abc import AbstractIncomingMessage

from shared.dependencies import AMQP_ERRORS, DB_ERRORS, classify
from shared.events import filters
from shared.events.decide import EventAction, decide, event_run_id, upstream_of
from shared.events.envelope import BadEvent, EventInfo, event_id, read_payload
from shared.messages import event_message
from shared.protocol import drop, park
from shared.runtime import Delivery, Env
from shared.store import jobs as jobs_store
from shared.vocabulary import DropReason, ParkReason

log = structlog.get_logger("shared.events.consumer")

_DROPS = {
    EventAction.FILTERED: DropReason.FILTERED,
    EventAction.DROP_PAUSED: DropReason.PAUSED_EVENT,
    EventAction.UNKNOWN_JOB: DropReason.EVENT_UNKNOWN_JOB,
}


def event_of(message: AbstractIncomingMessage, payload: dict[str, object], now: datetime) -> EventInfo:
    topic = message.routing_key or ""
    published = message.timestamp.replace(tzinfo=UTC) if message.timestamp is not None else now
    return EventInfo(
        topic=topic, id=event_id(message.message_id, topic, message.body), payload=payload, published_at=published
    )


async def handle_event(env: Env, job_id: str, message: AbstractIncomingMessage, hold: Callable[[str], None]) -> None:
    """One event from the event queue of `job_id`. Never raises (but for cancellation); `hold(job_id)` stops
    consuming the job's event queue (a paused job that holds its events)."""
    delivery = Delivery(message, f"{job_id}.events")
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(scope=env.scope, job_id=job_id, topic=message.routing_key)
    try:
        await _translate(env, job_id, delivery, hold)
    except (*DB_ERRORS, *AMQP_ERRORS) as exc:
        name = getattr(classify(exc), "value", "unknown")
        log.warning("event.dependency_unavailable", dependency=name, error=repr(exc)[:300])
        await asyncio.sleep(env.dependency_backoff_sec * (0.5 + env.rng()))
        await delivery.nack_requeue()
    except asyncio.CancelledError:
        await delivery.nack_requeue()
        raise
    except Exception as exc:
        log.exception("event.internal_error", error=repr(exc)[:300])
        await asyncio.sleep(env.dependency_backoff_sec)
        await delivery.nack_requeue()
    finally:
        structlog.contextvars.clear_contextvars()


async def _translate(env: Env, job_id: str, delivery: Delivery, hold: Callable[[str], None]) -> None:
    message = delivery.message
    try:
        payload = read_payload(message.body)
    except BadEvent as exc:
        await park(env, delivery, ParkReason.EVENT_BODY.value, str(exc))
        return
    now = env.clock()
    event = event_of(message, payload, now)
    job = await jobs_store.get_job(env.pool, env.scope, job_id)
    verdict = filters.evaluate(job.filter if job is not None else None, payload)
    if job is None:
        decision = decide(False, False, "drop", verdict)
    else:
        decision = decide(True, job.enabled, job.on_paused_event, verdict)
    if decision.action is EventAction.RUN:
        assert job is not None
        run_id = event_run_id(env.scope, job_id, event.id)
        msg = event_message(env.scope, job_id, run_id, event, upstream_of(event.topic, payload), now)
        await env.publisher.to_work(job.queue, msg)
        await delivery.ack()
        log.info("event.triggered", event_id=event.id, run_id=str(run_id))
    elif decision.action is EventAction.PARK:
        await park(env, delivery, ParkReason.FILTER_ERROR.value, f"job {job_id!r}: filter: {decision.detail}")
    elif decision.action is EventAction.HOLD:
        hold(job_id)  # stop consuming first, so the requeued event is not delivered here again
        await delivery.nack_requeue()
        log.info("event.held", event_id=event.id)
    else:
        await drop(env, delivery, _DROPS[decision.action].value, event_id=event.id)
