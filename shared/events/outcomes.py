"""Publishing events (I/O, thin): a run's outcome as `job.<job_id>.<status>`, and the events services, operators
and the HTTP API emit. The run's own record is written before its outcome is published: RabbitMQ being down delays
the outcome (retried with back-off by the caller) and never the record."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from shared.events import topics
from shared.events.envelope import MAX_EVENT_BYTES, new_event_id, outcome_body, outcome_message_id
from shared.publisher import Publisher


def event_body(payload: dict[str, Any]) -> bytes:
    """A payload as an event body (compact JSON, at most 64 KiB), or ValueError."""
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    if len(body) > MAX_EVENT_BYTES:
        raise ValueError(f"event payload is {len(body)} bytes; the limit is {MAX_EVENT_BYTES}")
    return body


async def emit(publisher: Publisher, topic: str, payload: dict[str, Any], event_id: str | None = None) -> str:
    """Publish an event on `topic` (checked: no wildcards) under `event_id` (generated when absent); its id."""
    topics.check_topic(topic)
    message_id = event_id or new_event_id()
    await publisher.emit(topic, event_body(payload), message_id)
    return message_id


async def publish_outcome(
    publisher: Publisher,
    *,
    run_id: uuid.UUID,
    job_id: str,
    scheduled_for: datetime,
    trigger_source: str,
    attempt: int,
    status: str,
    duration_ms: int | None,
    error: str | None,
) -> str:
    """The outcome of one run on `job.<job_id>.<status>`, its id derived from (run id, status)."""
    body = outcome_body(
        run_id=run_id, job_id=job_id, scope=publisher.scope, scheduled_for=scheduled_for,
        trigger_source=trigger_source, attempt=attempt, status=status, duration_ms=duration_ms, error=error,
    )  # fmt: skip
    message_id = outcome_message_id(run_id, status)
    await publisher.emit(topics.outcome_topic(job_id, status), event_body(body), message_id)
    return message_id
