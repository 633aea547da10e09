"""What operator actions return: plain frozen dataclasses, no connections inside, ready to print or to serve
as JSON (`plain` turns one into JSON-ready values)."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from shared.control.dst_outlook import DstOutlook
from shared.definitions import JobDefinition
from shared.diagnosis import Finding
from shared.vocabulary import RunStatus


@dataclass(frozen=True, slots=True)
class JobChange:
    """A job after create/update, pause, resume or set: its chain was replaced at `epoch`."""

    job_id: str
    changed: bool  # the definition (or the enabled flag) differed from the stored one
    epoch: int
    first_slot: datetime | None  # None: paused, or no schedule (runs on events and by hand)
    gaps: int = 0  # resume: slots the pause kept from running, recorded as `paused` in the slot ledger
    catchup: int = 0  # resume: of those, the slots sent to run by the job's catch-up policy


class SeedChange(StrEnum):
    """What seeding a file did to one job's stored definition."""

    NEW = "new"
    RE_ENABLED = "re-enabled"  # the file enabled a job disabled by the file before (or `--reset` undid a pause)
    CHANGED = "changed"
    UNCHANGED = "unchanged"


class ChainAction(StrEnum):
    """What seeding a file did to one job's chain."""

    STARTED = "started"  # a new chain (new epoch, delay queue purged, first message posted or none if paused)
    KEPT = "kept"  # nothing the chain depends on changed: the waiting message and any retry stay valid


@dataclass(frozen=True, slots=True)
class FieldDrift:
    """One field where the jobs file and the live definition differ (`shared.control.drift`)."""

    field: str
    file: Any  # what the file says now
    live: Any  # the live value: kept by `seed`, replaced by `seed --reset`
    file_edited: bool  # the file changed this field since the last seed too (both sides changed it)


class MissingAction(StrEnum):
    """What seeding a file did with a job of the scope the file no longer has (never deleted)."""

    ALREADY_DISABLED = "already_disabled"
    DISABLED = "disabled"  # prune asked for it
    LEFT_ENABLED = "left_enabled"


@dataclass(frozen=True, slots=True)
class SeededJob:
    definition: JobDefinition  # as the file declares it
    change: SeedChange
    result: JobChange
    seeded_at: datetime  # the clock the job's first slot was counted from
    chain: ChainAction = ChainAction.STARTED
    drift: tuple[FieldDrift, ...] = ()  # live values kept although the file differs
    reset: tuple[FieldDrift, ...] = ()  # live values replaced by the file's (`seed --reset`)
    applied: tuple[str, ...] = ()  # fields edited in the file since the last seed and not changed at runtime


@dataclass(frozen=True, slots=True)
class SeedFileResult:
    path: Path
    jobs: list[SeededJob]
    missing: list[tuple[str, MissingAction]]  # (job_id, what was done) for jobs the file does not declare


@dataclass(frozen=True, slots=True)
class Deleted:
    """A job unregistered: its chain ended at `epoch`, its row and its own delay and retry queues are gone;
    its run history stays."""

    job_id: str
    epoch: int


@dataclass(frozen=True, slots=True)
class RunQueued:
    """A manual message published to the job's work queue."""

    job_id: str
    run_id: uuid.UUID
    routing_key: str  # the work queue, `S.jobs.<queue>`
    worker_live: bool  # a live worker consumes the queue now (else the run starts when one does)


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """One attempt of a run, as recorded (terminal when returned by a wait)."""

    run_id: uuid.UUID
    status: str
    attempt: int
    duration_ms: int | None
    error: str | None
    worker: str | None

    @property
    def succeeded(self) -> bool:
        return self.status == RunStatus.SUCCEEDED


@dataclass(frozen=True, slots=True)
class LiveRun:
    """A claimed or running row whose worker is alive."""

    run_id: uuid.UUID
    job_id: str
    worker: str | None
    status: str
    since: datetime


@dataclass(frozen=True, slots=True)
class BackfillPlan:
    """The job's slots in a range, and which of them already have a run (any epoch) and so are not run again."""

    job_id: str
    slots: list[datetime]
    done: dict[datetime, str]  # slot -> status of its first attempt

    @property
    def todo(self) -> list[datetime]:
        return [slot for slot in self.slots if slot not in self.done]


@dataclass(frozen=True, slots=True)
class BackfillResult:
    plan: BackfillPlan
    published: int
    outcomes: dict[datetime, RunOutcome]  # empty when not waited for

    @property
    def succeeded(self) -> int:
        return sum(outcome.succeeded for outcome in self.outcomes.values())


@dataclass(frozen=True, slots=True)
class JobStatus:
    """One job at a glance (`status`)."""

    job_id: str
    queue: str
    enabled: bool
    pause_note: str | None
    schedule: str
    timezone: str
    next_slots: list[datetime]
    next_due_at: datetime | None  # what the chain's waiting message is due at
    epoch: int
    last_run_at: datetime | None
    last_status: str | None
    last_error: str | None
    last_duration_ms: int | None
    consecutive_failures: int
    running: int
    last_lateness_ms: int | None
    triggers_on: list[str] = field(default_factory=list)  # its event subscriptions (on_success ones included)
    trigger_counts: dict[str, int] = field(default_factory=dict)  # executed runs per trigger source, ever
    paused_until: datetime | None = None  # a timed pause: the watchdog resumes the job then
    catchup: str = "none"  # the catch-up policy of missed slots
    labels: dict[str, str] = field(default_factory=dict)
    dst: DstOutlook | None = None  # a cron job's next zone transition and its slots around it


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One row of a job's run history (`runs`)."""

    run_id: uuid.UUID
    job_id: str
    epoch: int | None
    trigger_source: str
    scheduled_for: datetime
    attempt: int
    status: str
    worker: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    lateness_ms: int | None
    error: str | None
    params: Any


@dataclass(frozen=True, slots=True)
class ParkedMessage:
    """A message in `S.jobs.dead`, with why it was parked (from its headers) and its body byte for byte."""

    message_id: str | None
    reason: str
    detail: str
    original_queue: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class DeadLetters:
    queue: str
    total: int  # parked in all; `messages` may show fewer
    messages: list[ParkedMessage]


@dataclass(frozen=True, slots=True)
class Replayed:
    message_id: str
    reason: str
    routing_key: str


@dataclass(frozen=True, slots=True)
class Purged:
    queue: str
    count: int


@dataclass(frozen=True, slots=True)
class Published:
    exchange: str
    routing_key: str
    size: int  # bytes


@dataclass(frozen=True, slots=True)
class EventEmitted:
    """An event published to `S.events`: its id and the jobs it triggers (pattern matches, filter passes, and the
    job is enabled or holds events while paused)."""

    topic: str
    event_id: str
    triggered: list[str]

    @property
    def count(self) -> int:
        return len(self.triggered)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One operator change: who, when, what, on which job, the fields before and after, the note."""

    id: int
    at: datetime
    actor: str
    action: str
    job_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    note: str | None


def plain(value: Any) -> Any:
    """A result (or a list of them) as JSON-ready values: times in ISO 8601 UTC, ids as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, uuid.UUID | Path):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(plain(k)): plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """`doctor` as one value: every finding, and whether all of them are ok."""

    clean: bool
    findings: list[Finding]
