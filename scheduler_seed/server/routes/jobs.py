"""`/jobs`: list, read, create or update (the seed's cheat-sheet bodies verbatim), change, delete, pause, resume."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response

from scheduler_seed.server import jobs_input
from scheduler_seed.server.access import operator, viewer
from scheduler_seed.server.auth import Principal
from scheduler_seed.server.models import CHEAT_SHEET_EXAMPLE, JobChangeOut, JobDetail, PauseBody
from scheduler_seed.server.routes.common import JobId, actor, backend, errors
from shared import topology
from shared.control import Control, UnknownJob, bulk
from shared.control import preview as previews
from shared.control.results import Deleted, JobChange, JobStatus, plain
from shared.control.status import describe_schedule, job_status

router = APIRouter(tags=["jobs"])
Viewer = Annotated[Principal, Depends(viewer)]
Operator = Annotated[Principal, Depends(operator)]
JOB_BODY = Body(
    description="a job definition: the keys of a jobs-file table plus job_id; `queue` may be the full "
    "`<scope>.jobs.<name>`, and `cron_expr` may come with `interval_seconds` (then the expected period)",
    openapi_examples={"cheat sheet (mock buy scanner)": {"value": CHEAT_SHEET_EXAMPLE}},
)


async def _changed(control: Control, result: JobChange, created: bool = False) -> JobChangeOut:
    row = await control.job(result.job_id)
    return JobChangeOut(
        job_id=row.job_id,
        created=created,
        changed=result.changed,
        enabled=row.enabled,
        epoch=result.epoch,
        first_slot=result.first_slot,
        scheduled_by=jobs_input.scheduled_by(row),
        schedule=describe_schedule(row),
        timezone=row.timezone,
        expected_period_sec=row.expected_period_sec,
        queue=topology.work_queue_name(row.scope, row.queue),
    )


@router.get("/jobs", response_model=list[JobStatus], responses=errors())
async def list_jobs(
    request: Request,
    principal: Viewer,
    selector: Annotated[str | None, Query(max_length=1000, description="only jobs whose labels match")] = None,
) -> Any:
    """Every job of the scope at a glance (what `status --json` shows); with `selector`, the jobs it picks."""
    async with backend(request).control(actor(principal)) as control:
        found = await control.status()
        return plain(found if selector is None else bulk.pick_statuses(found, bulk.parse(selector)))


@router.post(
    "/jobs", response_model=JobChangeOut, status_code=201, responses={200: {"model": JobChangeOut}, **errors()}
)
async def put_job(
    request: Request, response: Response, principal: Operator, body: Annotated[dict[str, Any], JOB_BODY]
) -> JobChangeOut:
    """Create (201) or update (200) a job and start its chain afresh."""
    async with backend(request).control(actor(principal)) as control:
        definition = jobs_input.translate(body, control.scope)
        try:
            await control.job(str(definition.get("job_id", "")))
            created = False
        except UnknownJob:
            created = True
        result = await control.put(definition)
        response.status_code = 201 if created else 200
        return await _changed(control, result, created)


@router.get("/jobs/{job_id}", response_model=JobDetail, responses=errors(404))
async def get_job(request: Request, principal: Viewer, job_id: str = JobId) -> Any:
    """The job's stored definition and state, and its status."""
    async with backend(request).control(actor(principal)) as control:
        row = await control.job(job_id)
        running = next((s.running for s in await control.status() if s.job_id == job_id), 0)
        status = job_status(row, running, datetime.now(UTC))
        return {"job": plain(row), "status": plain(status), "scheduled_by": jobs_input.scheduled_by(row)}


@router.patch("/jobs/{job_id}", response_model=JobChangeOut | previews.SetPreview, responses=errors(404))
async def patch_job(
    request: Request,
    principal: Operator,
    changes: Annotated[dict[str, Any], Body(description="any definition fields, as in POST /jobs")],
    job_id: str = JobId,
    dry_run: Annotated[bool, Query(description="change nothing: answer which of the next slots would change")] = False,
    preview_count: Annotated[int, Query(ge=1, le=previews.MAX_COUNT)] = previews.DEFAULT_COUNT,
) -> Any:
    """Change any definition fields; takes effect now (the chain restarts). With `dry_run=true` nothing changes:
    the answer lists the fields that would change and which of the next `preview_count` slots appear and vanish."""
    async with backend(request).control(actor(principal)) as control:
        if dry_run:
            return plain(
                await previews.preview(control, job_id, jobs_input.translate(changes, control.scope), preview_count)
            )
        result = await control.set(job_id, jobs_input.translate(changes, control.scope))
        return await _changed(control, result)


@router.delete("/jobs/{job_id}", response_model=Deleted, responses=errors(404))
async def delete_job(request: Request, principal: Operator, job_id: str = JobId) -> Any:
    """Unregister the job: its chain ends, its own queues go, its run history stays."""
    async with backend(request).control(actor(principal)) as control:
        return plain(await control.delete(job_id))


@router.post("/jobs/{job_id}/pause", response_model=JobChangeOut, responses=errors(404))
async def pause_job(
    request: Request, principal: Operator, body: PauseBody | None = None, job_id: str = JobId
) -> JobChangeOut:
    """Disable the job and end its chain now; a run in progress finishes. With `until`, it resumes by itself then."""
    async with backend(request).control(actor(principal)) as control:
        result = await control.pause(job_id, note=body.note if body else None, until=body.until if body else None)
        return await _changed(control, result)


@router.post("/jobs/{job_id}/resume", response_model=JobChangeOut, responses=errors(404))
async def resume_job(request: Request, principal: Operator, job_id: str = JobId) -> JobChangeOut:
    """Enable the job and start a fresh chain from now."""
    async with backend(request).control(actor(principal)) as control:
        return await _changed(control, await control.resume(job_id))
