"""A job's runs: run now (409 while it runs), its latest runs, backfill a range of past slots."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from scheduler_seed.server.access import operator, viewer
from scheduler_seed.server.auth import Principal
from scheduler_seed.server.models import BackfillBody, BackfillOut, RunNowBody
from scheduler_seed.server.routes.common import JobId, actor, backend, errors
from shared.control.results import RunQueued, RunRecord, plain

router = APIRouter(tags=["runs"])
Viewer = Annotated[Principal, Depends(viewer)]
Operator = Annotated[Principal, Depends(operator)]


@router.get("/jobs/{job_id}/runs", response_model=list[RunRecord], responses=errors(404))
async def list_runs(
    request: Request,
    principal: Viewer,
    job_id: str = JobId,
    limit: Annotated[int, Query(ge=1, le=1000, description="how many, newest slot first")] = 20,
    gaps: Annotated[bool, Query(description="only the slots that got no run: skipped, paused, missed")] = False,
) -> Any:
    """The job's latest runs (a deleted job's history too); with `gaps=true`, the slot ledger's gaps."""
    async with backend(request).control(actor(principal)) as control:
        return plain(await control.runs(job_id, limit, gaps=gaps))


@router.post("/jobs/{job_id}/run-now", status_code=202, response_model=RunQueued, responses=errors(404, 409))
async def run_now(
    request: Request,
    principal: Operator,
    body: RunNowBody | None = None,
    job_id: str = JobId,
    queue: Annotated[bool, Query(description="queue a run even while the job runs (no 409)")] = False,
) -> Any:
    """One manual run, answered 202 with its run id; 409 with the running run's id and start while the job runs."""
    async with backend(request).control(actor(principal)) as control:
        return plain(await control.run_now(job_id, body.params if body else None, queue=queue))


@router.post("/jobs/{job_id}/backfill", status_code=202, response_model=BackfillOut, responses=errors(404))
async def backfill(request: Request, principal: Operator, body: BackfillBody, job_id: str = JobId) -> BackfillOut:
    """Run each past slot of [from, to] that has no run yet, once; answered once the messages are sent."""
    async with backend(request).control(actor(principal)) as control:
        plan = await control.plan_backfill(job_id, body.from_, body.to)
        result = await control.backfill(plan, wait=False)
        return BackfillOut(
            job_id=job_id, slots=len(plan.slots), already_done=len(plan.done), published=result.published
        )
