"""`POST /events/{topic}`: publish an event to the scope's `S.events` and answer with the jobs it triggers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import BaseModel

from scheduler_seed.server.access import operator
from scheduler_seed.server.auth import Principal
from scheduler_seed.server.routes.common import actor, backend, errors

router = APIRouter(tags=["events"])
Operator = Annotated[Principal, Depends(operator)]
TOPIC_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"


class EventOut(BaseModel):
    topic: str
    event_id: str
    triggered: list[str]
    count: int


@router.post("/events/{topic}", status_code=202, response_model=EventOut, responses=errors())
async def emit(
    request: Request,
    principal: Operator,
    topic: Annotated[str, Path(pattern=TOPIC_PATTERN, max_length=255, description="dot-separated words")],
    payload: Annotated[
        dict[str, Any] | None,
        Body(openapi_examples={"a big dataset": {"value": {"rows_count": 5000, "source": "api"}}}),
    ] = None,
    event_id: Annotated[
        str | None, Query(alias="id", min_length=1, max_length=255, description="the event id (default: new)")
    ] = None,
) -> EventOut:
    """The body (a JSON object, default `{}`) is the payload bound as `event` in the jobs' filters. `count` is how
    many jobs it triggers: a pattern matches, the filter passes, and the job is enabled (or holds events)."""
    async with backend(request).control(actor(principal)) as control:
        emitted = await control.emit(topic, payload or {}, event_id)
    return EventOut(topic=emitted.topic, event_id=emitted.event_id, triggered=emitted.triggered, count=emitted.count)
