"""Repository functions for `scheduler.job_runs` on the run protocol's path: claim, start, finish, take over.
(The watchdog's statements are in `store/sweeps`, the operator's reads in `store/history`.)"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg

from shared.locks import JobVersion
from shared.vocabulary import ACTIVE, OWNED, REVIVABLE, RunStatus, TriggerSource, sources

ERROR_LIMIT = 2000
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RunRow:
    run_id: uuid.UUID
    scope: str
    job_id: str
    epoch: int | None
    trigger_source: str
    scheduled_for: datetime
    attempt: int
    status: RunStatus
    worker: str | None
    next_posted_for: datetime | None
    params: dict[str, Any]

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> RunRow:
        return cls(
            run_id=r["run_id"],
            scope=r["scope"],
            job_id=r["job_id"],
            epoch=r["epoch"],
            trigger_source=r["trigger_source"],
            scheduled_for=r["scheduled_for"],
            attempt=r["attempt"],
            status=RunStatus(r["status"]),
            worker=r["worker"],
            next_posted_for=r["next_posted_for"],
            params=r["params"],
        )


@dataclass(frozen=True, slots=True)
class NewRun:
    """What a claim inserts."""

    run_id: uuid.UUID
    scope: str
    job_id: str
    epoch: int | None
    trigger_source: str
    scheduled_for: datetime
    attempt: int
    params: dict[str, Any]
    upstream_run_id: uuid.UUID | None = None
    origin_run_id: uuid.UUID | None = None


ACTIVE_ROWS = "status IN (" + ", ".join(f"'{s.value}'" for s in sorted(ACTIVE)) + ")"
"""Said, besides the status asked for, by every statement that looks for a job's or a scope's active rows: the
predicate of the partial index job_runs_active spelled as constants, so that the index answers the generic plan a
prepared statement moves to as well (a status given as a parameter proves nothing about the predicate there; the
index of all a job's runs would be read instead: tests/integration/test_run_indexes.py)."""

# A run starts from its claim, or from `abandoned`: the watchdog took its worker for dead while the worker was
# cut off from PostgreSQL, and the worker's own record of what it does wins. The same holds for the finish.
STARTABLE = frozenset({RunStatus.CLAIMED, RunStatus.ABANDONED})
FINISHABLE = frozenset({RunStatus.RUNNING, RunStatus.ABANDONED})

_RUN_COLUMNS = (
    "run_id, scope, job_id, epoch, trigger_source, scheduled_for, attempt, status, worker, next_posted_for, params"
)


async def claim(conn: asyncpg.Connection, run: NewRun, status: RunStatus, worker: str) -> bool:
    """Insert the run row; False when the run_id or the chain slot is already taken (a duplicate or redelivery)."""
    terminal = status.terminal
    inserted = await conn.fetchval(
        "INSERT INTO scheduler.job_runs (run_id, scope, job_id, epoch, trigger_source, scheduled_for, attempt,"
        " status, worker, params, upstream_run_id, origin_run_id, finished_at)"
        " SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, CASE WHEN $13 THEN now() END"
        f" WHERE {_ID_FREE.format(epoch='$4', run_id='$1')}"
        " ON CONFLICT DO NOTHING RETURNING true",
        run.run_id,
        run.scope,
        run.job_id,
        run.epoch,
        run.trigger_source,
        run.scheduled_for,
        run.attempt,
        status.value,
        worker,
        run.params,
        run.upstream_run_id,
        run.origin_run_id,
        terminal,
    )
    return bool(inserted)


# A run outside a chain (no epoch) is unique by its run id across partitions (scheduler.run_id_free); a chain
# slot by its unique index, which includes the partition key.
_ID_FREE = "({epoch}::bigint IS NOT NULL OR scheduler.run_id_free({run_id}::uuid))"

_LOCK_AND_CLAIM = """
    WITH l AS MATERIALIZED (SELECT scheduler.try_lock_any($1::bigint[]) AS key),
    j AS MATERIALIZED (SELECT epoch, enabled, updated_at FROM scheduler.jobs WHERE scope = $3 AND job_id = $4),
    c AS (
        INSERT INTO scheduler.job_runs (run_id, scope, job_id, epoch, trigger_source, scheduled_for, attempt, status,
            worker, params, upstream_run_id, origin_run_id)
        SELECT $5, $3, $4, $6, $7, $8, $9, $17, $10, $11, $12, $13
        WHERE ((SELECT key FROM l) IS NOT NULL OR NOT $2::boolean)
          AND ($14::timestamptz IS NULL
               OR (SELECT (epoch, enabled, updated_at) FROM j) = ($15::bigint, $16::boolean, $14::timestamptz))
          AND ID_FREE
        ON CONFLICT DO NOTHING RETURNING true
    )
    SELECT (SELECT key FROM l) AS key, j.epoch, j.enabled, j.updated_at, EXISTS (SELECT 1 FROM c) AS claimed
    FROM (SELECT 1) AS one LEFT JOIN j ON true
""".replace("ID_FREE", _ID_FREE.format(epoch="$6", run_id="$5"))


async def lock_and_claim(
    conn: asyncpg.Connection,
    keys: list[int],
    lock_needed: bool,
    run: NewRun,
    worker: str,
    expected: JobVersion | None = None,
) -> tuple[int | None, JobVersion | None, bool]:
    """The run lock and, in the same round trip, the usual claim: take the first free session lock among `keys`
    (none for an empty list), read the job row's version, and insert `run` as claimed if a lock was taken (or
    none is needed) and, when `expected` is given, the row is still at that version. The lock is attempted
    before the insert is decided. Returns (key taken, version, inserted); not inserted means: no lock, a row
    that changed, or a slot that already has a row (the caller tells them apart)."""
    record = await conn.fetchrow(
        _LOCK_AND_CLAIM,
        keys,
        lock_needed,
        run.scope,
        run.job_id,
        run.run_id,
        run.epoch,
        run.trigger_source,
        run.scheduled_for,
        run.attempt,
        worker,
        run.params,
        run.upstream_run_id,
        run.origin_run_id,
        None if expected is None else expected.updated_at,
        None if expected is None else expected.epoch,
        None if expected is None else expected.enabled,
        RunStatus.CLAIMED.value,
    )
    version = None if record["epoch"] is None else JobVersion(record["epoch"], record["enabled"], record["updated_at"])
    return record["key"], version, bool(record["claimed"])


async def existing(conn: asyncpg.Connection, run: NewRun) -> RunRow | None:
    """The row that made a claim conflict: the same chain slot (any epoch), else the same run_id."""
    if run.epoch is not None:
        record = await conn.fetchrow(
            f"SELECT {_RUN_COLUMNS} FROM scheduler.job_runs WHERE scope = $1 AND job_id = $2 AND scheduled_for = $3"
            " AND attempt = $4 AND epoch IS NOT NULL",
            run.scope,
            run.job_id,
            run.scheduled_for,
            run.attempt,
        )
        if record is not None:
            return RunRow.from_record(record)
    record = await conn.fetchrow(f"SELECT {_RUN_COLUMNS} FROM scheduler.job_runs WHERE run_id = $1", run.run_id)
    return None if record is None else RunRow.from_record(record)


# A worker is alive while it holds its liveness lock, or while any of its sessions is connected (its pool, the
# run-lock holders and the watchdog all carry the worker id as application_name). After PostgreSQL restarts,
# the liveness connection may come back after the pool: a worker running a slot meanwhile is not dead, and
# taking it for dead would retry (run again) a slot that is running or has just succeeded.
ALIVE_SQL = (
    "(scheduler.advisory_lock_held({w}.lock_key) OR EXISTS (SELECT 1 FROM pg_stat_activity s"
    " WHERE s.application_name = left({w}.worker_id, 63)))"
)


async def worker_alive(conn: asyncpg.Connection, worker_id: str | None) -> bool:
    """True while the worker holds its liveness lock or has a session (PostgreSQL ends both when it dies)."""
    if worker_id is None:
        return False
    alive = await conn.fetchval(
        f"SELECT {ALIVE_SQL.format(w='w')} FROM scheduler.workers w WHERE w.worker_id = $1", worker_id
    )
    return bool(alive)


async def take_over(conn: asyncpg.Connection, run_id: uuid.UUID, dead_worker: str | None, worker: str) -> bool:
    """Adopt a claimed/running row whose owner died (redelivery after a crash). Exactly one taker wins."""
    status = await conn.execute(
        "UPDATE scheduler.job_runs SET worker = $3, status = $4, claimed_at = now()"
        " WHERE run_id = $1 AND worker IS NOT DISTINCT FROM $2 AND status = ANY($5::text[])",
        run_id,
        dead_worker,
        worker,
        RunStatus.CLAIMED.value,
        sources(OWNED),
    )
    return bool(status.endswith(" 1"))


async def release_claim(conn: asyncpg.Connection, run_id: uuid.UUID, worker: str) -> bool:
    """Give up a claim whose run never started: with no owner, the next copy of the message takes it over
    (and the watchdog abandons it if no copy comes)."""
    status = await conn.execute(
        "UPDATE scheduler.job_runs SET worker = NULL WHERE run_id = $1 AND worker = $2 AND status = $3",
        run_id,
        worker,
        RunStatus.CLAIMED.value,
    )
    return bool(status.endswith(" 1"))


async def promote_buffered(conn: asyncpg.Connection, run_id: uuid.UUID, worker: str) -> bool:
    """A buffered slot whose lock came free: it becomes ours to run. Exactly one taker wins."""
    status = await conn.execute(
        "UPDATE scheduler.job_runs SET status = $3, worker = $2 WHERE run_id = $1 AND status = $4",
        run_id,
        worker,
        RunStatus.CLAIMED.value,
        RunStatus.BUFFERED.value,
    )
    return bool(status.endswith(" 1"))


async def revive(conn: asyncpg.Connection, run_id: uuid.UUID, worker: str) -> bool:
    """A slot that was skipped (lock, misfire) or expired, asked for again by backfill: it becomes ours to run."""
    status = await conn.execute(
        "UPDATE scheduler.job_runs SET status = $3, worker = $2, trigger_source = $4, error = NULL,"
        " finished_at = NULL, claimed_at = now() WHERE run_id = $1 AND status = ANY($5::text[])",
        run_id,
        worker,
        RunStatus.CLAIMED.value,
        TriggerSource.MANUAL.value,
        sources(REVIVABLE),
    )
    return bool(status.endswith(" 1"))


async def resolve_buffered(conn: asyncpg.Connection, run_id: uuid.UUID, status: RunStatus, error: str) -> bool:
    done = await conn.execute(
        "UPDATE scheduler.job_runs SET status = $2, error = $3, finished_at = now() WHERE run_id = $1 AND status = $4",
        run_id,
        status.value,
        error,
        RunStatus.BUFFERED.value,
    )
    return bool(done.endswith(" 1"))


async def has_waiter(conn: asyncpg.Connection, scope: str, job_id: str) -> bool:
    """overlap=buffer_one keeps at most one buffered slot per job."""
    found = await conn.fetchval(
        f"SELECT true FROM scheduler.job_runs WHERE scope = $1 AND job_id = $2 AND {ACTIVE_ROWS} AND status = $3"
        " LIMIT 1",
        scope,
        job_id,
        RunStatus.BUFFERED.value,
    )
    return bool(found)


# claimed -> running, stamping started_at and the lateness (start minus the intended fire time, see
# decisions.fire_time); {n} is the first of its three parameters: status, worker, fire time. A run the watchdog had
# abandoned (finished) and that starts after all is not finished any more.
_START = (
    "status = ${n}, worker = ${w}, started_at = clock_timestamp(), finished_at = NULL,"
    " lateness_ms = LEAST(GREATEST(extract(epoch FROM clock_timestamp() - ${f}::timestamptz) * 1000,"
    " -2147483648), 2147483647)::integer"
)


def _start_sql(first: int) -> str:
    return _START.format(n=first, w=first + 1, f=first + 2)


ASYNC_COMMIT = "set_config('synchronous_commit', 'off', true) = 'off'"
"""A condition of the start statements (claimed -> running) that makes the transaction that starts a run commit
without waiting for its WAL to reach the disk (`synchronous_commit = off` for that transaction only: SET LOCAL).

The start is on the path from the slot to the handler, and a commit waits for the disk's flush: on a virtual
disk that flush takes 1 ms at the median and 50-250 ms a few times a minute, and each of those was a burst of runs
started that late. Nothing the invariants rest on is in the start: the claim that keeps a slot to one run, the
chain's next post and the outcome stay synchronous commits, and the run lock is a session lock, which no commit
carries. What asynchronous commit gives up is only the record of the start if PostgreSQL itself crashes within
about 0.6 s of it (3 x wal_writer_delay; a fast or smart shutdown, or a failover to a standby that was caught up,
loses nothing): the row is found claimed again by its own worker, whose run lost its lock with the crash and was
cancelled, and the outcome is recorded over the claim (`finish(owner=...)`). Every later commit flushes the start
with it. Written in the WHERE clause so that it is evaluated exactly when a row is updated; a start that updates
nothing writes nothing to flush."""

_MISSING_PARTITIONS: set[str] = set()


def _run_table(slot: datetime | None) -> str:
    """The table a statement on the run of `slot` names: the daily partition of the slot's UTC day (a statement
    on the partitioned table locks every partition, which costs about 0.1 ms a statement with a month of them),
    unless it is known not to exist. A run is in that partition whenever it exists: rows of a day written to the
    default partition move into the day's partition when it is created (scheduler.ensure_run_partitions)."""
    if slot is None:
        return "job_runs"
    name = f"job_runs_p{slot.astimezone(UTC):%Y%m%d}"
    return "job_runs" if name in _MISSING_PARTITIONS else name


async def on_run_table(slot: datetime | None, statement: Callable[[str], Awaitable[T]]) -> T:
    """`statement(table)` on the run's partition (see `_run_table`), or on scheduler.job_runs when there is no
    such partition."""
    table = _run_table(slot)
    if table != "job_runs":
        try:
            return await statement(table)
        except asyncpg.UndefinedTableError:
            if len(_MISSING_PARTITIONS) > 1000:
                _MISSING_PARTITIONS.clear()
            _MISSING_PARTITIONS.add(table)
    return await statement("job_runs")


def _in_slot(slot: datetime | None, n: int) -> tuple[str, tuple[datetime, ...]]:
    """The condition on the run's slot (the partition key) as parameter `$n`, so that a statement on one run
    reads one partition: empty when the slot is not known."""
    return ("", ()) if slot is None else (f" AND scheduled_for = ${n}", (slot,))


async def start(
    conn: asyncpg.Connection, run_id: uuid.UUID, worker: str, fire_at: datetime, slot: datetime | None = None
) -> datetime | None:
    """claimed -> running, stamping started_at and the lateness (start minus `fire_at`). None when the row is
    in no state a run starts from (see STARTABLE). `slot`, the run's scheduled_for, if known."""
    in_slot, args = _in_slot(slot, 6)

    async def statement(table: str) -> datetime | None:
        started: datetime | None = await conn.fetchval(
            f"UPDATE scheduler.{table} SET {_start_sql(2)} WHERE run_id = $1 AND status = ANY($5::text[])"
            f" AND {ASYNC_COMMIT}{in_slot}"
            " RETURNING started_at",
            run_id, RunStatus.RUNNING.value, worker, fire_at, sources(STARTABLE), *args,
        )  # fmt: skip
        return started

    return await on_run_table(slot, statement)


_CLAIM_AND_ENTER = """
    WITH j AS MATERIALIZED (SELECT epoch, enabled, updated_at FROM scheduler.jobs WHERE scope = $1 AND job_id = $2),
    c AS (
        INSERT INTO scheduler.job_runs (run_id, scope, job_id, epoch, trigger_source, scheduled_for, attempt, status,
            worker, params, upstream_run_id, origin_run_id)
        SELECT $3, $1, $2, $4, $5, $6, $7, $15, $8, $9, $10, $11
        WHERE ($12::timestamptz IS NULL
               OR (SELECT (epoch, enabled, updated_at) FROM j) = ($13::bigint, $14::boolean, $12::timestamptz))
          AND ID_FREE
        ON CONFLICT DO NOTHING RETURNING run_id
    ),
    e AS MATERIALIZED (
        SELECT x.epoch, x.enabled FROM c CROSS JOIN LATERAL scheduler.chain_enter(
            CASE WHEN c.run_id IS NOT NULL THEN $16::bigint END, $1, $2) AS x
    )
    SELECT j.epoch, j.enabled, j.updated_at, EXISTS (SELECT 1 FROM c) AS claimed,
        (SELECT epoch FROM e) AS chain_epoch, (SELECT enabled FROM e) AS chain_enabled
    FROM (SELECT 1) AS one LEFT JOIN j ON true
""".replace("ID_FREE", _ID_FREE.format(epoch="$4", run_id="$3"))


@dataclass(frozen=True, slots=True)
class ClaimedAhead:
    """What `claim_and_enter_chain` found: the job row's version, whether the run was inserted, and, if it was,
    the chain as read under the chain lock now held (None: the job is gone; the lock is held all the same)."""

    version: JobVersion | None
    claimed: bool
    chain: tuple[int, bool] | None


async def claim_and_enter_chain(
    conn: asyncpg.Connection, run: NewRun, worker: str, chain_key: int, expected: JobVersion | None = None
) -> ClaimedAhead:
    """A slot claimed ahead of its run lock (shared.lead), and the job's chain entered, in one round trip: insert
    `run` as claimed if the job row is still at `expected` (when given) and the slot has no row; then, only if it
    was inserted, take the chain lock `chain_key` on this session and read (epoch, enabled) after it was granted
    (`locks.enter_chain`), for the post of the next slot."""
    record = await conn.fetchrow(
        _CLAIM_AND_ENTER, run.scope, run.job_id, run.run_id, run.epoch, run.trigger_source, run.scheduled_for,
        run.attempt, worker, run.params, run.upstream_run_id, run.origin_run_id,
        None if expected is None else expected.updated_at,
        None if expected is None else expected.epoch,
        None if expected is None else expected.enabled,
        RunStatus.CLAIMED.value, chain_key,
    )  # fmt: skip
    version = None if record["epoch"] is None else JobVersion(record["epoch"], record["enabled"], record["updated_at"])
    claimed = bool(record["claimed"])
    entered = None if record["chain_epoch"] is None else (record["chain_epoch"], record["chain_enabled"])
    return ClaimedAhead(version, claimed, entered if claimed else None)


_LOCK_AND_START = f"""
    WITH l AS MATERIALIZED (SELECT scheduler.try_lock_any($1::bigint[]) AS key),
    r AS (
        UPDATE scheduler.RUN_TABLE SET {_start_sql(6)}
        WHERE run_id = $3 AND scheduled_for = $4 AND status = $5 AND worker = $7 AND {ASYNC_COMMIT}
          AND ((SELECT key FROM l) IS NOT NULL OR NOT $2::boolean)
        RETURNING started_at
    )
    SELECT (SELECT key FROM l) AS key, (SELECT started_at FROM r) AS started
"""


async def lock_and_start(
    conn: asyncpg.Connection, keys: list[int], lock_needed: bool, run: NewRun, worker: str, fire_at: datetime
) -> tuple[int | None, datetime | None]:
    """At the slot of a run claimed ahead (shared.lead): the run lock and, the lock taken (or none needed), the
    start of the run (`start`: claimed -> running, lateness from `fire_at`) in one round trip. Returns (key taken,
    started_at); started_at None means the lock is taken by another run (or the claim is no longer this
    worker's)."""

    return await lock_and_start_run(conn, keys, lock_needed, run.run_id, run.scheduled_for, worker, fire_at)


async def lock_and_start_run(
    conn: asyncpg.Connection,
    keys: Sequence[int],
    lock_needed: bool,
    run_id: uuid.UUID,
    slot: datetime,
    worker: str,
    fire_at: datetime,
) -> tuple[int | None, datetime | None]:
    """`lock_and_start` for the run `run_id` of slot `slot`."""

    async def statement(table: str) -> asyncpg.Record:
        record: asyncpg.Record = await conn.fetchrow(
            _LOCK_AND_START.replace("RUN_TABLE", table), keys, lock_needed, run_id, slot,
            RunStatus.CLAIMED.value, RunStatus.RUNNING.value, worker, fire_at,
        )  # fmt: skip
        return record

    record = await on_run_table(slot, statement)  # a missing table fails before any lock is taken
    return record["key"], record["started"]


async def resolve_claim(
    conn: asyncpg.Connection, run: NewRun, worker: str, status: RunStatus, error: str | None = None
) -> bool:
    """A slot claimed ahead whose lock is still taken at the slot: skipped_locked (finished) or buffered (waiting
    again, from now). Only this worker's claim moves."""
    done = await conn.execute(
        "UPDATE scheduler.job_runs SET status = $4, error = $5, claimed_at = now(),"
        " finished_at = CASE WHEN $6 THEN now() END"
        " WHERE run_id = $1 AND scheduled_for = $2 AND worker = $3 AND status = $7",
        run.run_id,
        run.scheduled_for,
        worker,
        status.value,
        error,
        status.terminal,
        RunStatus.CLAIMED.value,
    )
    return bool(done.endswith(" 1"))


async def record_posted(
    conn: asyncpg.Connection,
    scope: str,
    job_id: str,
    next_due_at: datetime,
    run_id: uuid.UUID | None,
    next_slot: datetime,
    release_key: int,
    start_worker: str | None = None,
    fire_at: datetime | None = None,
    run_slot: datetime | None = None,
) -> datetime | None:
    """After a chain extension was confirmed, in one statement: the job's next_due_at, the run's next_posted_for
    (when a run posted it), the release of the session chain lock `release_key`, and with `start_worker` the
    run's start as `start` records it, lateness counted from `fire_at` (the run is about to begin: this saves
    step 8 a round trip). Returns the
    run's started_at when it was started here. `run_slot`, the run's scheduled_for, if known.

    The lock is released before this statement commits: a reseed that takes it then still writes the job row
    after this one (its update waits for this row lock), and purges the message this extension posted."""
    record = await _record_posted(
        conn, scope, job_id, next_due_at, run_id, next_slot, release_key, start_worker, fire_at, run_slot
    )
    started_at: datetime | None = record["started"]
    return started_at if start_worker is not None else None


async def record_posted_released(
    conn: asyncpg.Connection,
    scope: str,
    job_id: str,
    next_due_at: datetime,
    run_id: uuid.UUID | None,
    next_slot: datetime,
    release_key: int,
    run_slot: datetime | None = None,
) -> bool:
    """`record_posted` without the start; True when the chain lock was released (this session held it)."""
    record = await _record_posted(
        conn, scope, job_id, next_due_at, run_id, next_slot, release_key, None, None, run_slot
    )
    return bool(record["released"])


async def _record_posted(
    conn: asyncpg.Connection,
    scope: str,
    job_id: str,
    next_due_at: datetime,
    run_id: uuid.UUID | None,
    next_slot: datetime,
    release_key: int,
    start_worker: str | None,
    fire_at: datetime | None,
    run_slot: datetime | None,
) -> asyncpg.Record:
    started = f", {_start_sql(7)}" if start_worker is not None else ""
    args: tuple[Any, ...] = (RunStatus.RUNNING.value, start_worker, fire_at) if start_worker is not None else ()
    in_slot, slot_args = _in_slot(run_slot, 7 + len(args))

    async def statement(table: str) -> asyncpg.Record:
        record: asyncpg.Record = await conn.fetchrow(
            "WITH job AS (UPDATE scheduler.jobs SET next_due_at = $3 WHERE scope = $1 AND job_id = $2),"
            f" run AS (UPDATE scheduler.{table} SET next_posted_for = $5{started} WHERE run_id = $4{in_slot}"
            " RETURNING started_at)"
            " SELECT pg_advisory_unlock($6) AS released, (SELECT started_at FROM run) AS started",
            scope, job_id, next_due_at, run_id, next_slot, release_key, *args, *slot_args,
        )  # fmt: skip
        return record

    return await on_run_table(run_slot, statement)


def job_after_run(run: str) -> str:
    """How finished runs move their job's record (`UPDATE scheduler.jobs j SET ...`), from the row `run`: the
    outcome of the latest-started of them (status, error, duration_ms, finished_at, started_at, lateness_ms) and
    two tallies over all of them, `ok_at` (finished_at of the latest-started success, NULL: none succeeded) and
    `fails` (the failures started after that success, or all of them). A cancelled run (cancelled for a newer
    slot) is no failure. One text for the finish of one run and of many: two failures finished together count
    two, as they would one by one."""
    return f"""last_run_at = {run}.started_at, last_status = {run}.status, last_error = {run}.error,
            last_duration_ms = {run}.duration_ms, last_lateness_ms = {run}.lateness_ms,
            last_success_at = COALESCE({run}.ok_at, j.last_success_at),
            consecutive_failures = CASE WHEN {run}.ok_at IS NOT NULL THEN {run}.fails
                ELSE j.consecutive_failures + {run}.fails END"""


def failed(status: str, succeeded: str) -> str:
    """Whether a finished run's `status` counts toward consecutive_failures (`succeeded`: the parameter that holds
    'succeeded')."""
    return f"({status} <> {succeeded} AND {status} <> 'cancelled')"


_FINISH = f"""
    WITH run AS (
        UPDATE scheduler.RUN_TABLE SET status = $2, error = $3, duration_ms = $4, finished_at = $5
        WHERE run_id = $1 AND (status = ANY($7::text[]) OWN_CLAIM) IN_SLOT
        RETURNING scope, job_id, started_at, lateness_ms, trigger_source, status, error, duration_ms, finished_at,
            CASE WHEN status = $6 THEN finished_at END AS ok_at, {failed("status", "$6")}::int AS fails
    ), counted AS (
        INSERT INTO scheduler.trigger_counts AS t (scope, job_id, trigger_source, runs, last_at)
        SELECT scope, job_id, trigger_source, 1, $5 FROM run
        ON CONFLICT (scope, job_id, trigger_source) DO UPDATE SET runs = t.runs + 1, last_at = EXCLUDED.last_at
    ), job AS (
        UPDATE scheduler.jobs j SET {job_after_run("run")}
        FROM run WHERE j.scope = run.scope AND j.job_id = run.job_id
    )
"""


async def finish(
    conn: asyncpg.Connection,
    run_id: uuid.UUID,
    status: RunStatus,
    error: str | None,
    duration_ms: int,
    finished_at: datetime,
    release_key: int | None = None,
    slot: datetime | None = None,
    owner: str | None = None,
) -> bool:
    """Record the outcome on the run, on the job's last_* columns and in the job's trigger count (per trigger
    source), in one statement; with `owner`, also over the run's claim if the row is still claimed by that worker
    (its start was lost with a crash of PostgreSQL: see ASYNC_COMMIT);
    with `release_key`, the same statement releases that session lock (the run lock: step 10 costs no extra
    round trip). The recorded finished_at is when the handler stopped, so a run that starts once the lock is
    free never overlaps this one in the record, whenever this statement commits. `slot`, the run's
    scheduled_for, if known. True when the lock `release_key` was released (this session held it)."""
    unlock = "SELECT pg_advisory_unlock($8)" if release_key is not None else "SELECT NULL"
    args = (release_key,) if release_key is not None else ()
    in_slot, slot_args = _in_slot(slot, 8 + len(args))
    n = 8 + len(args) + len(slot_args)
    own = "" if owner is None else f" OR (status = ${n} AND worker = ${n + 1})"
    own_args = () if owner is None else (RunStatus.CLAIMED.value, owner)

    async def statement(table: str) -> bool:
        released = await conn.fetchval(
            _FINISH.replace(" IN_SLOT", in_slot).replace(" OWN_CLAIM", own).replace("RUN_TABLE", table) + unlock,
            run_id, status.value, None if error is None else error[:ERROR_LIMIT], duration_ms, finished_at,
            RunStatus.SUCCEEDED.value, sources(FINISHABLE), *args, *slot_args, *own_args,
        )  # fmt: skip
        return bool(released)

    return await on_run_table(slot, statement)


RELEASED_CLAIM_GRACE_SEC = 60.0


async def last_chain_slot(conn: asyncpg.Connection, scope: str, job_id: str) -> datetime | None:
    """The latest slot of the job's chain that has a run row (any epoch, first attempts): where a chain moved
    to new queues goes on from (migrate-queues)."""
    value: datetime | None = await conn.fetchval(
        "SELECT max(scheduled_for) FROM scheduler.job_runs"
        " WHERE scope = $1 AND job_id = $2 AND epoch IS NOT NULL AND attempt = 1",
        scope,
        job_id,
    )
    return value
