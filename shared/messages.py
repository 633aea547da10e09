"""The job message (DESIGN section 4): the JSON body every queue of the framework carries.

A person can publish `{"job_id": "buy-scanner"}` by hand: every other field has a default. Unknown fields are
tolerated (a newer publisher may add some) and never reach the handler; `parse_message` reports them.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared import retry_policy, schedule
from shared.errors import SchedulerError
from shared.events.envelope import EventInfo
from shared.names import check_ident
from shared.vocabulary import TriggerSource

MAX_BODY_BYTES = 256 * 1024
MAX_PARAMS_BYTES = 64 * 1024
SCHEMA_VERSION = 1
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class BadMessage(SchedulerError):
    """A body that cannot become a JobMessage. `reason` is a short code for metrics and the parking header."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail[:2000]
        super().__init__(f"{reason}: {self.detail}")


def check_params_size(value: dict[str, Any], what: str) -> dict[str, Any]:
    """Params travel in every message of a job: keep them small (64 KiB as compact JSON)."""
    size = len(json.dumps(value, separators=(",", ":"), default=str).encode())
    if size > MAX_PARAMS_BYTES:
        raise ValueError(f"{what} are {size} bytes; the limit is {MAX_PARAMS_BYTES}")
    return value


def _utc(value: datetime) -> datetime:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    aware = aware.astimezone(UTC)
    if not _EARLIEST <= aware < _LATEST:
        raise ValueError(f"{aware.isoformat()} is outside the years 2000-2199")
    return aware


def _now() -> datetime:
    return datetime.now(UTC)


class JobMessage(BaseModel):
    """One request to run a job once. Chain messages carry the job's epoch; manual ones carry none."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    job_id: str
    trigger_source: TriggerSource = TriggerSource.MANUAL
    params: dict[str, Any] = Field(default_factory=dict)
    run_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    scope: str | None = None
    scheduled_for: datetime = Field(default_factory=_now)
    epoch: int | None = Field(default=None, ge=0)
    attempt: int = Field(default=1, ge=1, le=1000)
    timeout_sec: float | None = Field(default=None, gt=0, le=7 * 86400)
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    # the seed's "repost after N seconds": never honoured here (the job's schedule names the next slot), so a
    # message that carries it is parked with the reason instead of running as if it had been (decisions.screen)
    next_delay_sec: float | None = Field(default=None, ge=0, le=366 * 86400)
    # run-now --queue: when every lock slot is taken, wait (through the retry queue) instead of being skipped
    wait_for_lock: bool = False
    published_at: datetime | None = None
    expires_at: datetime | None = None
    upstream_run_id: uuid.UUID | None = None
    event: EventInfo | None = None  # the event that triggered this run (trigger_source event): ctx.event
    # a re-arm hop: the slot's fire time lies beyond the longest per-message TTL, so the message was posted with
    # that TTL and a worker receiving it before `rearm_at` posts it again instead of running it (decisions.rearm)
    rearm_at: datetime | None = None
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1)

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, value: str) -> str:
        return check_ident(value, "job_id")

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str | None) -> str | None:
        return None if value is None else check_ident(value, "scope")

    @field_validator("scheduled_for", "published_at", "expires_at", "rearm_at")
    @classmethod
    def _aware_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)

    @field_validator("params")
    @classmethod
    def _params_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_params_size(value, "params")

    @property
    def is_chain(self) -> bool:
        """A scheduler message that belongs to the job's chain: only these post the next slot."""
        return self.trigger_source is TriggerSource.SCHEDULER and self.epoch is not None

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def to_body(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    def next_attempt(self, scope: str, now: datetime) -> JobMessage:
        """The retry message for this message's slot in `scope`: same slot, epoch and params, attempt + 1.
        Keeps the message's own overrides (timeout, attempts, expiry, upstream run)."""
        run_id = retry_policy.retry_run_id(
            scope, self.job_id, self.epoch, self.scheduled_for, self.run_id, self.attempt + 1
        )
        return self.model_copy(
            update={
                "attempt": self.attempt + 1,
                "trigger_source": TriggerSource.RETRY,
                "run_id": run_id,
                "published_at": now,
            }
        )


def parse_message(body: bytes) -> tuple[JobMessage, list[str]]:
    """Validate a raw body. Returns the message and the names of ignored unknown fields; raises BadMessage."""
    if len(body) > MAX_BODY_BYTES:
        raise BadMessage("too_large", f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadMessage("encoding", f"body is not UTF-8: {exc}") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise BadMessage("not_json", "JSON nested too deeply") from None
    except ValueError as exc:
        raise BadMessage("not_json", f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadMessage("schema", f"body must be a JSON object, got {type(data).__name__}")
    try:
        message = JobMessage.model_validate(data)
    except ValidationError as exc:
        raise BadMessage("schema", describe_validation_error(exc)) from None
    except RecursionError:
        raise BadMessage("schema", "params nested too deeply") from None
    unknown = sorted(set(data) - set(JobMessage.model_fields))
    return message, unknown


def describe_validation_error(exc: ValidationError) -> str:
    """One readable line: `field: reason; field: reason`."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


# -- builders: every kind of message the framework posts is made here --------------------------------------------


def chain_message(scope: str, job_id: str, epoch: int, slot: datetime, now: datetime) -> JobMessage:
    """The chain's message for `slot` (to the job's delay queue): attempt 1 of that slot in that epoch."""
    return JobMessage(
        job_id=job_id,
        trigger_source=TriggerSource.SCHEDULER,
        scope=scope,
        epoch=epoch,
        scheduled_for=slot,
        run_id=schedule.derive_run_id(scope, job_id, epoch, slot, 1),
        published_at=now,
    )


def backfill_message(scope: str, job_id: str, epoch: int, slot: datetime, now: datetime) -> JobMessage:
    """A past slot asked for by hand: manual, but carrying the epoch, so it claims the slot's own row."""
    return chain_message(scope, job_id, epoch, slot, now).model_copy(update={"trigger_source": TriggerSource.MANUAL})


def retry_message(
    scope: str,
    job_id: str,
    epoch: int | None,
    slot: datetime,
    attempt: int,
    params: dict[str, Any],
    previous_run_id: uuid.UUID,
    now: datetime,
) -> JobMessage:
    """Attempt `attempt` + 1 of a run (same slot, epoch and params), under the retry policy's run id."""
    return JobMessage(
        job_id=job_id,
        trigger_source=TriggerSource.RETRY,
        scope=scope,
        epoch=epoch,
        scheduled_for=slot,
        attempt=attempt + 1,
        params=params,
        run_id=retry_policy.retry_run_id(scope, job_id, epoch, slot, previous_run_id, attempt + 1),
        published_at=now,
    )


def startup_message(scope: str, job_id: str, now: datetime) -> JobMessage:
    """The one `startup` run of a `run_on_startup` job per boot of its service."""
    return JobMessage(
        job_id=job_id, trigger_source=TriggerSource.STARTUP, scope=scope, scheduled_for=now, published_at=now
    )


def event_message(
    scope: str, job_id: str, run_id: uuid.UUID, event: EventInfo, upstream_run_id: uuid.UUID | None, now: datetime
) -> JobMessage:
    """A run triggered by an event: `run_id` derived from (scope, job, event id) (events.decide.event_run_id), so
    every copy of the event claims one row; an outcome event of an upstream success names that run. It waits for
    the lock behind a run of the job in its way (as `run-now --queue`): an event is not a slot to skip."""
    return JobMessage(
        job_id=job_id,
        trigger_source=TriggerSource.EVENT,
        scope=scope,
        run_id=run_id,
        upstream_run_id=upstream_run_id,
        event=event,
        scheduled_for=now,
        published_at=now,
        wait_for_lock=True,
    )


def manual_message(
    job_id: str,
    params: dict[str, Any] | None,
    now: datetime,
    ttl: timedelta | None = None,
    wait_for_lock: bool = False,
) -> JobMessage:
    """A run-now message: not part of the chain, optionally expiring if no worker takes it in time; with
    `wait_for_lock`, queued behind a run of the job that holds the lock instead of skipped."""
    return JobMessage(
        job_id=job_id,
        trigger_source=TriggerSource.MANUAL,
        params=params or {},
        scheduled_for=now,
        published_at=now,
        expires_at=None if ttl is None else now + ttl,
        wait_for_lock=wait_for_lock,
    )
