"""The audit trail: every change, who, when, what, before and after, the note."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from scheduler_seed.server.access import viewer
from scheduler_seed.server.auth import Principal
from scheduler_seed.server.routes.common import JOB_ID_PATTERN, actor, backend, errors
from shared.control.results import AuditEntry, plain

router = APIRouter(tags=["audit"])


@router.get("/audit", response_model=list[AuditEntry], responses=errors())
async def audit(
    request: Request,
    principal: Annotated[Principal, Depends(viewer)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    job_id: Annotated[str | None, Query(pattern=JOB_ID_PATTERN, description="only this job's changes")] = None,
) -> Any:
    """The latest changes, newest first."""
    async with backend(request).control(actor(principal)) as control:
        return plain(await control.audit(limit, job_id))
