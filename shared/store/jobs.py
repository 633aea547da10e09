"""Repository functions for `scheduler.jobs`: definitions in, job rows out."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import asyncpg

from shared import schedule
from shared.definitions import JobDefinition
from shared.locks import JobVersion

# Columns an operator declares (the jobs file / `set`); everything else is state the framework keeps.
DEFINITION_COLUMNS = (
    "description", "queue", "cron_expr", "timezone", "interval_seconds", "align", "enabled", "default_params",
    "timeout_sec", "max_attempts", "retry_backoff_sec", "retry_backoff_max_sec", "max_parallel", "overlap",
    "jitter_sec", "lock_group", "misfire_grace_sec", "run_on_startup", "reschedule_mode", "on_success",
    "queue_type", "expected_period_sec", "triggers_on", "filter", "on_paused_event",
    "catchup", "catchup_max", "catchup_rate_per_sec", "dst_gap", "dst_overlap", "labels", "buffer_max",
)  # fmt: skip


# Large enough for every job of a big scope: the watchdog walks all of them each pass, and a cache smaller than
# the scope would build every cron schedule again on every pass.
@lru_cache(maxsize=65536)
def _cached_schedule(
    job_id: str,
    cron_expr: str | None,
    timezone: str,
    interval_seconds: int | None,
    align: bool,
    dst: tuple[str | None, str | None] = (None, None),
) -> schedule.Schedule | None:
    if cron_expr is None and interval_seconds is None:
        return None
    return schedule.make_schedule(
        cron_expr=cron_expr, timezone=timezone, interval_seconds=interval_seconds, job_id=job_id, align=align,
        dst_gap=dst[0], dst_overlap=dst[1],
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as stored: its definition plus the state the framework keeps. Built from trusted rows only."""

    scope: str
    job_id: str
    description: str
    queue: str
    cron_expr: str | None
    timezone: str
    interval_seconds: int | None
    align: bool
    enabled: bool
    default_params: dict[str, Any]
    timeout_sec: float
    max_attempts: int
    retry_backoff_sec: float
    retry_backoff_max_sec: float
    max_parallel: int
    overlap: str
    jitter_sec: float
    lock_group: str | None
    misfire_grace_sec: float
    run_on_startup: bool
    reschedule_mode: str
    on_success: list[str]
    queue_type: str
    epoch: int
    pause_note: str | None
    next_due_at: datetime | None
    last_run_at: datetime | None
    last_status: str | None
    last_error: str | None
    last_duration_ms: int | None
    last_lateness_ms: int | None
    last_success_at: datetime | None
    consecutive_failures: int
    created_at: datetime
    updated_at: datetime
    expected_period_sec: int | None = None  # declared, but last: a row built by hand may leave it out
    triggers_on: list[str] = field(default_factory=list)  # event subscriptions (AMQP topic patterns)
    filter: str | None = None  # CEL over the event payload
    on_paused_event: str = "drop"
    catchup: str = "none"  # the slot ledger's catch-up policy (shared.catchup) and its bounds
    catchup_max: int = 10
    catchup_rate_per_sec: float = 1.0
    paused_until: datetime | None = None  # a timed pause: the watchdog resumes the job then
    paused_from: datetime | None = None  # the first slot the pause kept from running
    dst_gap: str | None = None  # a cron job's own daylight-saving rule (None: Debian cron's)
    dst_overlap: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    buffer_max: int = 10  # overlap=buffer_all

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> JobRow:
        return cls(**{name: record[name] for name in cls.__slots__})

    @property
    def schedule(self) -> schedule.Schedule | None:
        dst = (self.dst_gap, self.dst_overlap)
        return _cached_schedule(self.job_id, self.cron_expr, self.timezone, self.interval_seconds, self.align, dst)

    @property
    def has_chain(self) -> bool:
        return self.reschedule_mode == "queue" and self.schedule is not None

    @property
    def lock_name(self) -> str:
        return f"group:{self.lock_group}" if self.lock_group else f"job:{self.job_id}"

    @property
    def version(self) -> JobVersion:
        return JobVersion(self.epoch, self.enabled, self.updated_at)

    def raw_definition(self) -> dict[str, Any]:
        """The declared part of the row as stored, not validated (a row stored under older rules may not be)."""
        data: dict[str, Any] = {name: getattr(self, name) for name in DEFINITION_COLUMNS}
        data["on_success"] = tuple(self.on_success)
        data["triggers_on"] = tuple(self.triggers_on)
        return {"job_id": self.job_id, **data}

    def definition(self) -> JobDefinition:
        """The declared part of the row, validated again."""
        return JobDefinition.model_validate(self.raw_definition())


ROW_COLUMNS = ", ".join(JobRow.__slots__)
"""The columns a `JobRow` reads, for the statements that build many: not `*`, which would also bring (and decode)
`seeded_definition`, three quarters of a row's bytes, read by nothing that lists jobs."""
_SELECT = f"SELECT {ROW_COLUMNS} FROM scheduler.jobs"


def definition_values(definition: JobDefinition) -> list[Any]:
    """The definition in DEFINITION_COLUMNS order, ready for SQL parameters."""
    data = definition.model_dump(mode="json")
    data["queue"] = definition.queue_name
    data["on_success"] = list(definition.on_success)
    data["triggers_on"] = list(definition.triggers_on)
    return [data[name] for name in DEFINITION_COLUMNS]


async def get_job(conn: asyncpg.Connection | asyncpg.Pool, scope: str, job_id: str) -> JobRow | None:
    record = await conn.fetchrow(f"{_SELECT} WHERE scope = $1 AND job_id = $2", scope, job_id)
    return None if record is None else JobRow.from_record(record)


async def list_jobs(conn: asyncpg.Connection | asyncpg.Pool, scope: str) -> list[JobRow]:
    records = await conn.fetch(f"{_SELECT} WHERE scope = $1 ORDER BY job_id", scope)
    return [JobRow.from_record(r) for r in records]


async def jobs_for_queues(conn: asyncpg.Connection | asyncpg.Pool, scope: str, queues: list[str]) -> list[JobRow]:
    records = await conn.fetch(f"{_SELECT} WHERE scope = $1 AND queue = ANY($2::text[]) ORDER BY job_id", scope, queues)
    return [JobRow.from_record(r) for r in records]


_NEIGHBOURHOOD = """
    WITH ids AS (
        SELECT $2::text[] || coalesce((SELECT on_success FROM scheduler.jobs WHERE scope = $1 AND job_id = $3), '{}')
            AS ids
    )
    SELECT j.* FROM scheduler.jobs j, ids WHERE j.scope = $1 AND (j.job_id = ANY(ids.ids) OR j.on_success && ids.ids)
"""


async def subscription_neighbourhood(
    conn: asyncpg.Connection | asyncpg.Pool, scope: str, job_id: str, also: list[str]
) -> list[JobRow]:
    """The rows a change to `job_id` reads to rebind events: the job, the jobs in `also` and in its stored
    on_success, and every job naming any of them in its on_success."""
    records = await conn.fetch(_NEIGHBOURHOOD, scope, [job_id, *also], job_id)
    return [JobRow.from_record(r) for r in records]


def upsert_sql() -> str:
    """The upsert of one definition ($1 scope, $2 job_id, then DEFINITION_COLUMNS): the declared columns are
    written (state columns untouched), and `updated_at` moves only when one of them differs."""
    cols = ", ".join(DEFINITION_COLUMNS)
    params = ", ".join(f"${i + 3}" for i in range(len(DEFINITION_COLUMNS)))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in DEFINITION_COLUMNS)
    differs = " OR ".join(f"scheduler.jobs.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in DEFINITION_COLUMNS)
    return (
        f"INSERT INTO scheduler.jobs (scope, job_id, {cols}) VALUES ($1, $2, {params}) "
        f"ON CONFLICT (scope, job_id) DO UPDATE SET {updates}, updated_at = now() WHERE {differs}"
    )


async def upsert_job(conn: asyncpg.Connection, scope: str, definition: JobDefinition) -> tuple[JobRow, bool]:
    """Insert or update the declared columns (state columns untouched). Returns the row and whether it changed."""
    before = await conn.fetchrow(f"{_SELECT} WHERE scope = $1 AND job_id = $2", scope, definition.job_id)
    record = await conn.fetchrow(
        f"{upsert_sql()} RETURNING *",
        scope,
        definition.job_id,
        *definition_values(definition),
    )
    if record is None:  # nothing differed: the row is as it was
        assert before is not None
        return JobRow.from_record(before), False
    return JobRow.from_record(record), True


async def bump_epoch(conn: asyncpg.Connection, scope: str, job_id: str) -> int:
    """New epoch for a job (call under the chain lock): every chain message of older epochs becomes stale."""
    row = await bump_epoch_row(conn, scope, job_id)
    assert row is not None  # unconditional: None only with overdue_before
    return row.epoch


async def bump_epoch_row(
    conn: asyncpg.Connection, scope: str, job_id: str, overdue_before: datetime | None = None
) -> JobRow | None:
    """`bump_epoch`, returning the whole row as it is after the bump (one round trip instead of two). With
    `overdue_before`, only if next_due_at (or, while it is unset, the row's last write) is before it: the
    condition is checked again on the row as committed by a concurrent writer this update waited for. None when
    that condition no longer holds; LookupError when the job is gone."""
    condition = "" if overdue_before is None else " AND coalesce(next_due_at, updated_at) < $3"
    args = (scope, job_id) if overdue_before is None else (scope, job_id, overdue_before)
    record = await conn.fetchrow(
        "UPDATE scheduler.jobs SET epoch = epoch + 1, updated_at = now()"
        f" WHERE scope = $1 AND job_id = $2{condition} RETURNING *",
        *args,
    )
    if record is None:
        if overdue_before is not None and await get_job(conn, scope, job_id) is not None:
            return None
        raise LookupError(job_id)
    return JobRow.from_record(record)


async def set_enabled(conn: asyncpg.Connection, scope: str, job_id: str, enabled: bool, note: str | None) -> bool:
    status = await conn.execute(
        "UPDATE scheduler.jobs SET enabled = $3, pause_note = $4, updated_at = now(),"
        " paused_until = CASE WHEN $3 THEN NULL ELSE paused_until END,"  # enabled: a timed pause is over
        " paused_from = CASE WHEN $3 THEN NULL ELSE paused_from END WHERE scope = $1 AND job_id = $2",
        scope,
        job_id,
        enabled,
        note,
    )
    return bool(status.endswith(" 1"))


async def set_next_due(conn: asyncpg.Connection, scope: str, job_id: str, next_due_at: datetime | None) -> None:
    await conn.execute(
        "UPDATE scheduler.jobs SET next_due_at = $3 WHERE scope = $1 AND job_id = $2", scope, job_id, next_due_at
    )


async def chain_state(conn: asyncpg.Connection, scope: str, job_id: str) -> tuple[int, bool] | None:
    """(epoch, enabled) as of now: re-read under the chain lock before extending a chain."""
    record = await conn.fetchrow(
        "SELECT epoch, enabled FROM scheduler.jobs WHERE scope = $1 AND job_id = $2", scope, job_id
    )
    return None if record is None else (record["epoch"], record["enabled"])


async def queues_of(conn: asyncpg.Connection | asyncpg.Pool, scope: str, job_ids: list[str]) -> dict[str, str]:
    records = await conn.fetch(
        "SELECT job_id, queue FROM scheduler.jobs WHERE scope = $1 AND job_id = ANY($2::text[])", scope, job_ids
    )
    return {r["job_id"]: r["queue"] for r in records}


async def delete_scope(conn: asyncpg.Connection | asyncpg.Pool, scope: str) -> None:
    """Remove every row of a scope (tests and `make clean-scope`)."""
    for table in ("job_runs", "run_cancels", "owed_retries", "idempotency_keys", "jobs", "workers", "trigger_counts"):
        await conn.execute(f"DELETE FROM scheduler.{table} WHERE scope = $1", scope)


class JobCache:
    """Job rows this worker has read, by job_id (one scope), so a chain message need not read its job again.

    A cached row is only offered for a chain message of the row's epoch that every look-up check would let
    through, and the run protocol trusts it only after its lock statement read the row's version unchanged
    (`locks.try_lock_any_reading`). Bounded: the least recently used rows go first.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._rows: OrderedDict[str, JobRow] = OrderedDict()

    def get(self, job_id: str) -> JobRow | None:
        row = self._rows.get(job_id)
        if row is not None:
            self._rows.move_to_end(job_id)
        return row

    def put(self, row: JobRow) -> None:
        self._rows[row.job_id] = row
        self._rows.move_to_end(row.job_id)
        while len(self._rows) > self.size:
            self._rows.popitem(last=False)

    def forget(self, job_id: str) -> None:
        self._rows.pop(job_id, None)


async def lock_peers(
    conn: asyncpg.Connection | asyncpg.Pool, scope: str, job_id: str, lock_group: str | None
) -> list[str]:
    """The jobs whose runs exclude this job's: the members of its lock group, or the job alone."""
    if lock_group is None:
        return [job_id]
    records = await conn.fetch(
        "SELECT job_id FROM scheduler.jobs WHERE scope = $1 AND lock_group = $2 ORDER BY job_id", scope, lock_group
    )
    return [r["job_id"] for r in records]


async def delete_job(conn: asyncpg.Connection, scope: str, job_id: str) -> bool:
    """Remove the job's row (its runs stay: they are history). False when there was none."""
    status = await conn.execute("DELETE FROM scheduler.jobs WHERE scope = $1 AND job_id = $2", scope, job_id)
    return bool(status.endswith(" 1"))


@dataclass(frozen=True, slots=True)
class BadJob:
    """A stored job whose row no longer makes a job (a definition written around the validation, e.g. in SQL)."""

    job_id: str
    error: str


def checked_rows(records: list[asyncpg.Record]) -> tuple[list[JobRow], list[BadJob]]:
    """Job rows whose schedule can be built, and the others as `BadJob`: one bad row is that job's problem only."""
    good: list[JobRow] = []
    bad: list[BadJob] = []
    for record in records:
        try:
            row = JobRow.from_record(record)
            row.schedule  # noqa: B018 - builds (and caches) the schedule: a bad cron or timezone raises here
        except Exception as exc:  # any failure to build this row is reported against it, not the listing
            bad.append(BadJob(record["job_id"], f"{type(exc).__name__}: {exc}"[:300]))
            continue
        good.append(row)
    return good, bad


async def list_jobs_checked(conn: asyncpg.Connection | asyncpg.Pool, scope: str) -> tuple[list[JobRow], list[BadJob]]:
    """`list_jobs`, tolerant: the rows that make a job, plus a `BadJob` for each row that does not."""
    records = await conn.fetch(f"{_SELECT} WHERE scope = $1 ORDER BY job_id", scope)
    return checked_rows(records)


def declared(definition: JobDefinition) -> dict[str, Any]:
    """The declared columns of a definition as JSON-ready values, by column name (what `seeded_definition`
    stores, and what seed compares field by field)."""
    return dict(zip(DEFINITION_COLUMNS, definition_values(definition), strict=True))


async def seeded_definitions(conn: asyncpg.Connection | asyncpg.Pool, scope: str) -> dict[str, dict[str, Any] | None]:
    """job_id -> what the jobs file declared at the job's last seed (None: never seeded from a file)."""
    records = await conn.fetch("SELECT job_id, seeded_definition FROM scheduler.jobs WHERE scope = $1", scope)
    return {r["job_id"]: r["seeded_definition"] for r in records}


async def set_seeded_definition(conn: asyncpg.Connection, scope: str, job_id: str, seeded: dict[str, Any]) -> None:
    """Remember what the file declared at this seed (no `updated_at` bump: the live definition did not change)."""
    await conn.execute(
        "UPDATE scheduler.jobs SET seeded_definition = $3 WHERE scope = $1 AND job_id = $2", scope, job_id, seeded
    )
