"""Parked messages (`S.jobs.dead`): list them, replay one after a fix."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from scheduler_seed.server.access import operator, viewer
from scheduler_seed.server.auth import Principal
from scheduler_seed.server.models import DeadOut
from scheduler_seed.server.routes.common import actor, backend, errors
from shared.control.results import Replayed, plain

router = APIRouter(tags=["dead letters"])


@router.get("/dead", response_model=DeadOut, responses=errors())
async def list_dead(
    request: Request,
    principal: Annotated[Principal, Depends(viewer)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Any:
    """Parked messages, oldest first, with why each was parked (they stay parked)."""
    async with backend(request).control(actor(principal)) as control:
        return plain(await control.dead_letters(limit))


@router.post("/dead/{message_id}/replay", response_model=Replayed, responses=errors(404))
async def replay(
    request: Request,
    principal: Annotated[Principal, Depends(operator)],
    message_id: Annotated[str, Path(min_length=1, max_length=200)],
) -> Any:
    """Send one parked message back to its work queue and remove it from parking."""
    async with backend(request).control(actor(principal)) as control:
        return plain(await control.replay(message_id))
