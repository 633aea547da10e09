"""The job definition (DESIGN section 5): what a jobs file declares and `scheduler.jobs` stores.

Validation happens here, at the boundary, with messages an operator can act on: which job, which field, why.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared import labels as job_labels
from shared import schedule
from shared.errors import ConfigError
from shared.events import filters, topics
from shared.messages import check_params_size
from shared.names import check_ident

DAY = 86400


class Overlap(StrEnum):
    """What a message does when every `max_parallel` lock slot of its job (or lock group) is taken."""

    SKIP = "skip"  # record skipped_locked, keep the chain going
    BUFFER_ONE = "buffer_one"  # wait through the retry queue (one waiter at most) until free or past the grace
    ALLOW_ALL = "allow_all"  # take no lock at all: runs may overlap freely
    CANCEL_OTHER = "cancel_other"  # cancel the job's run holding the lock, wait (buffered) until it stopped, run
    BUFFER_ALL = "buffer_all"  # wait through the retry queue, up to `buffer_max` slots, run in slot order


class DstGap(StrEnum):
    """What a cron wall time inside a spring-forward gap does (unset: Debian cron's rule, see README)."""

    SHIFT_FORWARD = "shift_forward"  # fires once, at the first instant after the gap
    SKIP = "skip"  # does not fire


class DstOverlap(StrEnum):
    """Which passes of a cron wall time that happens twice (fall-back) fire (unset: Debian cron's rule)."""

    FIRST = "first"
    SECOND = "second"
    BOTH = "both"


class RescheduleMode(StrEnum):
    QUEUE = "queue"  # the worker posts the next slot (the chain)
    NONE = "none"  # manual/event only: no chain


class PausedEvents(StrEnum):
    """What an event for a paused job does."""

    DROP = "drop"  # acked and counted, never run (today's on_success behaviour)
    HOLD = "hold"  # left in the job's event queue (not consumed) until the job is resumed


class Catchup(StrEnum):
    """What a job does with the slots it missed (an outage, a pause, a late message): `shared.catchup`."""

    NONE = "none"  # record them as not run and go on at the next slot (the default: the behaviour before)
    LATEST = "latest"  # run the most recent missed slot once
    ALL = "all"  # run up to catchup_max of them, oldest first, at most catchup_rate_per_sec


class QueueType(StrEnum):
    CLASSIC = "classic"
    QUORUM = "quorum"


class JobDefinition(BaseModel):
    """One job as an operator declares it. Extra keys are refused so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    description: str = Field(default="", max_length=500)
    queue: str | None = None
    cron_expr: str | None = None
    timezone: str = "UTC"
    interval_seconds: int | None = Field(default=None, ge=1, le=366 * DAY)
    align: bool = False
    enabled: bool = True
    default_params: dict[str, Any] = Field(default_factory=dict)
    timeout_sec: float = Field(default=300.0, gt=0, le=7 * DAY)
    max_attempts: int = Field(default=1, ge=1, le=100)
    retry_backoff_sec: float = Field(default=5.0, gt=0, le=DAY)
    retry_backoff_max_sec: float = Field(default=300.0, gt=0, le=7 * DAY)
    max_parallel: int = Field(default=1, ge=1, le=1000)
    overlap: Overlap = Overlap.SKIP
    buffer_max: int = Field(default=10, ge=1, le=1000)  # overlap=buffer_all: most slots waiting at once
    jitter_sec: float = Field(default=0.0, ge=0, le=DAY)
    lock_group: str | None = None
    misfire_grace_sec: float = Field(default=300.0, ge=0, le=30 * DAY)
    run_on_startup: bool = False
    reschedule_mode: RescheduleMode = RescheduleMode.QUEUE
    on_success: tuple[str, ...] = ()
    queue_type: QueueType = QueueType.CLASSIC
    # the period an operator expects between runs (job-state metrics), when the schedule's own is not the one meant:
    # a cron job given with `interval_seconds` too, as in the cheat sheet of 001_646fd6323acf08fa.txt
    expected_period_sec: int | None = Field(default=None, ge=1, le=366 * DAY)
    # events (DESIGN section 13): AMQP topic patterns (`**` is stored as `#`), a CEL filter on the payload bound as
    # `event`, and what an event does while the job is paused
    triggers_on: tuple[str, ...] = Field(default=(), max_length=50)
    filter: str | None = None
    on_paused_event: PausedEvents = PausedEvents.DROP
    # catch-up of missed slots (shared.catchup): the policy, how many at most, how fast
    catchup: Catchup = Catchup.NONE
    catchup_max: int = Field(default=10, ge=1, le=10000)
    catchup_rate_per_sec: float = Field(default=1.0, gt=0, le=1000)
    # daylight-saving rule of a cron job (None: as Debian cron, by kind of job); labels for selectors
    dst_gap: DstGap | None = None
    dst_overlap: DstOverlap | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, value: str) -> str:
        return check_ident(value, "job_id")

    @field_validator("queue", "lock_group")
    @classmethod
    def _optional_ident(cls, value: str | None) -> str | None:
        return None if value is None else check_ident(value, "name")

    @field_validator("on_success")
    @classmethod
    def _downstream(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_ident(v, "on_success job id") for v in value)

    @field_validator("triggers_on")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(topics.normalize_pattern(p) for p in value))

    @field_validator("filter")
    @classmethod
    def _filter(cls, value: str | None) -> str | None:
        if value is None:
            return None
        filters.compile_filter(value)  # FilterError (a ValueError) names what is wrong
        return value

    @field_validator("cron_expr")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else schedule.validate_cron(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return schedule.validate_timezone(value)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError('labels must be a table of strings, e.g. { team = "billing" }')
        return job_labels.validate_labels(value)

    @field_validator("default_params")
    @classmethod
    def _params_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_params_size(value, "default_params")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.reschedule_mode is RescheduleMode.QUEUE and (self.cron_expr is None) == (self.interval_seconds is None):
            raise ValueError("set exactly one of cron_expr or interval_seconds")
        if self.cron_expr is not None and self.interval_seconds is not None:
            raise ValueError("set exactly one of cron_expr or interval_seconds, not both")
        if self.queue_name == "dead":
            raise ValueError("the work queue name 'dead' is reserved for parking: set another queue")
        if self.job_id in self.on_success:
            raise ValueError("on_success cannot name the job itself")
        if self.filter is not None and not self.triggers_on:
            raise ValueError("filter: a filter needs triggers_on (it only applies to events)")
        if self.cron_expr is None and (self.dst_gap is not None or self.dst_overlap is not None):
            raise ValueError("dst_gap and dst_overlap apply to cron_expr schedules only (an interval is absolute time)")
        if self.retry_backoff_max_sec < self.retry_backoff_sec:
            raise ValueError("retry_backoff_max_sec must be >= retry_backoff_sec")
        return self

    @property
    def queue_name(self) -> str:
        """The work queue short name: `queue`, or the job id."""
        return self.queue or self.job_id

    @property
    def lock_name(self) -> str:
        """What the run lock is taken on: the lock group, or the job itself."""
        return f"group:{self.lock_group}" if self.lock_group else f"job:{self.job_id}"

    @property
    def has_chain(self) -> bool:
        return self.reschedule_mode is RescheduleMode.QUEUE

    def schedule(self) -> schedule.Schedule | None:
        """The pure schedule of this job; None for jobs that only run by hand or on events."""
        if self.cron_expr is None and self.interval_seconds is None:
            return None
        return schedule.make_schedule(
            cron_expr=self.cron_expr,
            timezone=self.timezone,
            interval_seconds=self.interval_seconds,
            job_id=self.job_id,
            align=self.align,
            dst_gap=None if self.dst_gap is None else self.dst_gap.value,
            dst_overlap=None if self.dst_overlap is None else self.dst_overlap.value,
        )


def load_definition(data: dict[str, Any], *, source: str = "") -> JobDefinition:
    """Validate one job table; raises ConfigError with one line per problem, naming the job and the field."""
    job = data.get("job_id", "?")
    try:
        return JobDefinition.model_validate(data)
    except ValidationError as exc:
        where = f"{source}: " if source else ""
        problems = []
        for error in exc.errors(include_url=False):
            field = ".".join(str(p) for p in error["loc"]) or "definition"
            problems.append(f"{where}job {job!r}: {field}: {error['msg'].removeprefix('Value error, ')}")
        raise ConfigError("\n".join(problems)) from None
