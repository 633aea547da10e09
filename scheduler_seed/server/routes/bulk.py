"""Bulk actions on the jobs a label selector picks: `POST /jobs:pause`, `/jobs:resume`, `/jobs:run-now`, each with
`?selector=team=billing` (URL-encoded: `team%3Dbilling`), answered with one result per job (200 even when some
failed: each item says). A selector that does not parse is a 422 naming the term."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from scheduler_seed.server.access import operator
from scheduler_seed.server.auth import Principal
from scheduler_seed.server.models import PauseBody, RunNowBody
from scheduler_seed.server.routes.common import actor, backend, errors
from shared.control import bulk
from shared.control.bulk import BulkResult
from shared.control.results import plain

router = APIRouter(tags=["jobs"])
Operator = Annotated[Principal, Depends(operator)]
Selector = Annotated[
    str, Query(min_length=1, max_length=1000, description="label selector: k=v, k!=v, k, !k; comma = AND")
]


@router.post("/jobs:pause", response_model=BulkResult, responses=errors())
async def pause_selected(
    request: Request, principal: Operator, selector: Selector, body: PauseBody | None = None
) -> Any:
    """Pause every job the selector picks (one audit row each); one result per job."""
    async with backend(request).control(actor(principal)) as control:
        return plain(await bulk.apply(control, "pause", selector, note=body.note if body else None))


@router.post("/jobs:resume", response_model=BulkResult, responses=errors())
async def resume_selected(request: Request, principal: Operator, selector: Selector) -> Any:
    """Resume every job the selector picks; one result per job."""
    async with backend(request).control(actor(principal)) as control:
        return plain(await bulk.apply(control, "resume", selector))


@router.post("/jobs:run-now", status_code=202, response_model=BulkResult, responses=errors())
async def run_selected(
    request: Request,
    principal: Operator,
    selector: Selector,
    body: RunNowBody | None = None,
    queue: Annotated[bool, Query(description="queue a run even while a job runs (else that job's item fails)")] = False,
) -> Any:
    """One manual run of every job the selector picks; a job running now is a failed item (kind conflict)."""
    async with backend(request).control(actor(principal)) as control:
        return plain(await bulk.apply(control, "run-now", selector, params=body.params if body else None, queue=queue))
