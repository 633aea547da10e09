"""Request bodies and the answers that are not plain control-layer results (those are served as they are)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from scheduler_seed.server.jobs_input import ScheduledBy
from shared.control.results import JobStatus
from shared.store.jobs import JobRow

CHEAT_SHEET_EXAMPLE = {
    "job_id": "mock-buy-scanner",
    "queue": "mock.jobs.buy-scanner",
    "cron_expr": "*/5 * * * *",
    "reschedule_mode": "queue",
    "interval_seconds": 120,
    "description": "Mock buy scanner auto",
    "enabled": True,
}


class RunNowBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(default_factory=dict, description="over the job's default_params, for this run")


class PauseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=500, description="why (status and the audit show it)")
    until: AwareDatetime | None = Field(
        default=None, description="a future instant (with an offset): the watchdog resumes the job then"
    )


class BackfillBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from", max_length=100, description="ISO 8601 (job's zone without offset), now-2h")
    to: str = Field(max_length=100, description="ISO 8601 (job's zone without offset), now")


class JobChangeOut(BaseModel):
    """A job after create/update, pause, resume or set."""

    job_id: str
    created: bool = False
    changed: bool = Field(description="the definition (or the enabled flag) differed from the stored one")
    enabled: bool
    epoch: int
    first_slot: datetime | None = Field(description="the first slot of the new chain (None: paused or by hand)")
    scheduled_by: ScheduledBy = Field(description="which field names the slots")
    schedule: str = Field(description="the schedule in words")
    timezone: str
    expected_period_sec: int | None = Field(description="the period the metrics expect, when declared")
    queue: str = Field(description="the work queue, <scope>.jobs.<name>")


class JobDetail(BaseModel):
    """A job's stored row and its status."""

    job: JobRow
    status: JobStatus
    scheduled_by: ScheduledBy


class BackfillOut(BaseModel):
    job_id: str
    slots: int = Field(description="slots in the range")
    already_done: int = Field(description="slots that have a run already (not run again)")
    published: int = Field(description="slots sent to the work queue now")


class ParkedOut(BaseModel):
    message_id: str | None
    reason: str
    detail: str
    original_queue: str | None
    body: str = Field(description="the body as text (invalid UTF-8 replaced)")


class DeadOut(BaseModel):
    queue: str
    total: int
    messages: list[ParkedOut]


class Health(BaseModel):
    status: str = Field(description="ok when both servers answer, else degraded (the server itself is alive)")
    scope: str
    postgres: str
    rabbitmq: str


class AlertsOut(BaseModel):
    forwarded: bool = Field(description="whether the lines went to a notifier (none configured: false)")
    lines: list[str]
