"""What events carry, pure: the event a job message hands its handler (`ctx.event`), how an event delivery's id
and payload are read, and the body of a run's outcome event."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_EVENT_BYTES = 64 * 1024


class EventInfo(BaseModel):
    """The event that triggered a run: `ctx.event` in the handler."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    topic: str
    id: str = Field(max_length=255)
    payload: dict[str, Any] = Field(default_factory=dict)
    published_at: datetime | None = None


class BadEvent(ValueError):
    """An event body that is not a JSON object of bounded size."""


def read_payload(body: bytes) -> dict[str, Any]:
    """The payload of an event delivery: a JSON object (an empty body is `{}`), at most 64 KiB."""
    if len(body) > MAX_EVENT_BYTES:
        raise BadEvent(f"event body is {len(body)} bytes; the limit is {MAX_EVENT_BYTES}")
    if not body.strip():
        return {}
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadEvent(f"event body is not JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise BadEvent(f"event body must be a JSON object, got {type(data).__name__}")
    return data


def event_id(message_id: str | None, topic: str, body: bytes) -> str:
    """An event's id is its AMQP message_id. One published without (by hand, say) gets one derived from its topic
    and body, so a redelivery of it keeps its id; publish with a message_id to tell two equal events apart."""
    if message_id:
        return message_id[:255]
    digest = hashlib.sha256(topic.encode() + b"\0" + body).hexdigest()
    return f"sha256:{digest[:40]}"


def new_event_id() -> str:
    return uuid.uuid4().hex


def outcome_message_id(run_id: uuid.UUID, status: str) -> str:
    """A run's outcome event id, derived from (run id, status): a republish is recognisable as the same event."""
    return str(uuid.uuid5(run_id, f"outcome:{status}"))


def outcome_body(
    *,
    run_id: uuid.UUID,
    job_id: str,
    scope: str,
    scheduled_for: datetime,
    trigger_source: str,
    attempt: int,
    status: str,
    duration_ms: int | None,
    error: str | None,
) -> dict[str, Any]:
    """The payload of `job.<job_id>.<status>`. `error` is the run's recorded error text: type and message, one
    line, bounded (execution.error_text), never a traceback; cut again here to keep events small."""
    return {
        "run_id": str(run_id),
        "job_id": job_id,
        "scope": scope,
        "scheduled_for": scheduled_for.astimezone(UTC).isoformat(),
        "trigger_source": trigger_source,
        "attempt": attempt,
        "status": status,
        "duration_ms": duration_ms,
        "error": None if error is None else error[:500],
    }
