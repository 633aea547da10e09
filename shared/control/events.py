"""Emitting an event by hand (CLI `emit`, `POST /events/{topic}`): published to `S.events` and answered with the
jobs it triggers, computed by the same pure functions the workers decide with (`shared.events.decide`)."""

from __future__ import annotations

from typing import Any

import asyncpg

from shared import topology
from shared.control.errors import InvalidRequest
from shared.control.results import EventEmitted
from shared.events import outcomes, topics
from shared.events.decide import Candidate, subscriptions_of, triggered
from shared.publisher import Publisher
from shared.store import jobs as jobs_store


async def emit(
    conn: asyncpg.Connection, publisher: Publisher, topic: str, payload: Any, event_id: str | None
) -> EventEmitted:
    """Publish one event (confirmed); InvalidRequest for a topic with wildcards or a payload that is no object."""
    if not isinstance(payload, dict):
        raise InvalidRequest(f"an event body is a JSON object, not {type(payload).__name__}", field="body")
    try:
        topics.check_topic(topic)
        outcomes.event_body(payload)
    except ValueError as exc:
        raise InvalidRequest(str(exc), field="topic" if "topic" in str(exc) else "body") from None
    if event_id is not None and not 0 < len(event_id) <= 255:
        raise InvalidRequest("an event id is 1-255 characters", field="id")
    jobs, _bad = await jobs_store.list_jobs_checked(conn, publisher.scope)
    patterns = subscriptions_of(jobs)
    candidates = [
        Candidate(job.job_id, patterns[job.job_id], job.filter, job.enabled, job.on_paused_event) for job in jobs
    ]
    hits = triggered(candidates, topic, payload)
    # a scope no worker or seed has declared yet has no S.events: publishing there would close the channel
    await topology.declare_events_exchange(publisher.channel, publisher.scope)
    sent = await outcomes.emit(publisher, topic, payload, event_id)
    return EventEmitted(topic=topic, event_id=sent, triggered=hits)
