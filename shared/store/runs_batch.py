"""The lead path's statements over many runs at once (shared.lead_batch, shared.slot_batch): one round trip claims
every slot of a batch and enters their chains, one records the posts confirmed together and gives their chain locks
back, one takes the run locks of the runs starting together and starts them, one records the runs ending together.

A statement on many rows takes their row locks in one order (job rows by job id, trigger counts by key, trigger
counts before job rows as `runs.finish` does, new run rows by job and slot), so two batches (of two workers, or
a batch and one run's statement) never wait on each other in a cycle.

A batch of one (spread load: most batches) is sent as the one-run statement of `shared.store.runs`, which answers
the same: the statements over arrays cost PostgreSQL more to plan and run than the one-run ones, and a lone
member would pay that for nothing (measured: about 1.2 ms of PostgreSQL CPU a run)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from shared.locks import JobVersion, unlock
from shared.store import runs
from shared.store.runs import ClaimedAhead, NewRun
from shared.vocabulary import RunStatus, sources


@dataclass(frozen=True, slots=True)
class AheadClaim:
    """One slot to claim ahead: the run, and the job row version it was decided on (None: no check)."""

    run: NewRun
    chain_key: int
    expected: JobVersion | None = None


_CLAIM_EACH = """
    WITH m AS (
        SELECT * FROM unnest($2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::timestamptz[], $7::int[],
            $8::text[], $9::uuid[], $10::uuid[], $11::timestamptz[], $12::bigint[], $13::boolean[], $14::bigint[])
            WITH ORDINALITY AS m(run_id, job_id, epoch, trigger_source, scheduled_for, attempt, params,
                upstream_run_id, origin_run_id, x_updated, x_epoch, x_enabled, chain_key, ord)
    ),
    j AS MATERIALIZED (
        SELECT m.ord, jb.epoch, jb.enabled, jb.updated_at
        FROM m LEFT JOIN scheduler.jobs jb ON jb.scope = $1 AND jb.job_id = m.job_id
    ),
    m1 AS (SELECT DISTINCT ON (m.run_id) m.* FROM m ORDER BY m.run_id, m.ord),
    c AS (
        INSERT INTO scheduler.job_runs (run_id, scope, job_id, epoch, trigger_source, scheduled_for, attempt, status,
            worker, params, upstream_run_id, origin_run_id)
        SELECT m1.run_id, $1, m1.job_id, m1.epoch, m1.trigger_source, m1.scheduled_for, m1.attempt, $15, $16,
            m1.params::jsonb, m1.upstream_run_id, m1.origin_run_id
        FROM m1 JOIN j ON j.ord = m1.ord
        WHERE (m1.x_updated IS NULL
               OR (j.epoch, j.enabled, j.updated_at) = (m1.x_epoch, m1.x_enabled, m1.x_updated))
          AND (m1.epoch IS NOT NULL OR scheduler.run_id_free(m1.run_id))
        ORDER BY m1.job_id, m1.scheduled_for, m1.attempt
        ON CONFLICT DO NOTHING RETURNING run_id
    ),
    cl AS MATERIALIZED (
        SELECT m1.ord AS mord, m1.chain_key, m1.job_id, row_number() OVER (ORDER BY m1.ord) AS pos
        FROM m1 JOIN c ON c.run_id = m1.run_id
    ),
    e AS MATERIALIZED (
        SELECT * FROM scheduler.chain_enter_each(
            ARRAY(SELECT chain_key FROM cl ORDER BY pos), $1, ARRAY(SELECT job_id FROM cl ORDER BY pos))
    )
    SELECT m.ord, j.epoch, j.enabled, j.updated_at, cl.mord IS NOT NULL AS claimed,
        e.epoch AS chain_epoch, e.enabled AS chain_enabled
    FROM m JOIN j ON j.ord = m.ord LEFT JOIN cl ON cl.mord = m.ord LEFT JOIN e ON e.ord = cl.pos
    ORDER BY m.ord
"""


async def claim_and_enter_each(
    conn: asyncpg.Connection, scope: str, claims: Sequence[AheadClaim], worker: str
) -> list[ClaimedAhead]:
    """`runs.claim_and_enter_chain` for every claim, in one round trip: each run is inserted as claimed if its job
    row is still at the version expected and its slot has no row (of two claims of one run, the first); the chain
    locks of those inserted are then taken on this session (in key order) and their chains read after the last
    was granted. One answer per claim, in order; every lock of an answer with `claimed` is held by this session."""
    if len(claims) == 1:  # a batch of one (spread load): the one-run statement, cheaper to plan and run
        lone = claims[0]
        return [await runs.claim_and_enter_chain(conn, lone.run, worker, lone.chain_key, lone.expected)]
    rs = [c.run for c in claims]
    xs = [c.expected for c in claims]
    records = await conn.fetch(
        _CLAIM_EACH, scope,
        [r.run_id for r in rs], [r.job_id for r in rs], [r.epoch for r in rs], [r.trigger_source for r in rs],
        [r.scheduled_for for r in rs], [r.attempt for r in rs], [json.dumps(r.params) for r in rs],
        [r.upstream_run_id for r in rs], [r.origin_run_id for r in rs],
        [None if x is None else x.updated_at for x in xs], [None if x is None else x.epoch for x in xs],
        [None if x is None else x.enabled for x in xs], [c.chain_key for c in claims],
        RunStatus.CLAIMED.value, worker,
    )  # fmt: skip
    answers = []
    for record in records:
        epoch = record["epoch"]
        version = None if epoch is None else JobVersion(epoch, record["enabled"], record["updated_at"])
        claimed = bool(record["claimed"])
        chain = None if record["chain_epoch"] is None else (record["chain_epoch"], record["chain_enabled"])
        answers.append(ClaimedAhead(version, claimed, chain if claimed else None))
    return answers


@dataclass(frozen=True, slots=True)
class PostedSlot:
    """A chain extension confirmed by the broker, to record; `run_id` None: nothing to record, only the chain lock
    `release_key` to give back (the extension did not post)."""

    release_key: int
    job_id: str = ""
    next_due_at: datetime | None = None
    run_id: uuid.UUID | None = None
    next_slot: datetime | None = None
    run_slot: datetime | None = None


_RECORD_EACH = """
    WITH m AS (
        SELECT * FROM unnest($2::text[], $3::timestamptz[], $4::uuid[], $5::timestamptz[], $6::timestamptz[])
            AS m(job_id, next_due_at, run_id, next_slot, run_slot)
        WHERE run_id IS NOT NULL
    ),
    job_locks AS MATERIALIZED (
        SELECT j.job_id FROM scheduler.jobs j WHERE j.scope = $1 AND j.job_id IN (SELECT job_id FROM m)
        ORDER BY j.job_id FOR UPDATE OF j
    ),
    job AS (
        UPDATE scheduler.jobs j SET next_due_at = m.next_due_at FROM m
        WHERE j.scope = $1 AND j.job_id = m.job_id AND (SELECT count(*) FROM job_locks) >= 0
    ),
    run AS (
        UPDATE scheduler.RUN_TABLE r SET next_posted_for = m.next_slot FROM m
        WHERE r.run_id = m.run_id AND r.scheduled_for = m.run_slot
    )
    SELECT count(*) FILTER (WHERE pg_advisory_unlock(k)) AS released FROM unnest($7::bigint[]) AS k
"""


def _one_day(slots: Sequence[datetime | None]) -> datetime | None:
    """A slot standing for all of `slots` when they fall on one UTC day (one partition), else None (the parent)."""
    days = {None if s is None else s.astimezone(UTC).date() for s in slots}
    return slots[0] if len(days) == 1 else None


async def record_posted_each(conn: asyncpg.Connection, scope: str, posted: Sequence[PostedSlot]) -> int:
    """`runs.record_posted` (without the start) for every posted slot, in one statement, which also releases each
    one's chain lock on this session; returns how many were released."""
    recorded = [p for p in posted if p.run_id is not None]
    if len(posted) == 1:  # a batch of one: the one-run statement
        p = posted[0]
        if p.run_id is None or p.next_due_at is None or p.next_slot is None:
            return int(await unlock(conn, p.release_key))
        released = await runs.record_posted_released(
            conn, scope, p.job_id, p.next_due_at, p.run_id, p.next_slot, p.release_key, p.run_slot
        )
        return int(released)

    async def statement(table: str) -> int:
        released: int = await conn.fetchval(
            _RECORD_EACH.replace("RUN_TABLE", table), scope,
            [p.job_id for p in posted], [p.next_due_at for p in posted], [p.run_id for p in posted],
            [p.next_slot for p in posted], [p.run_slot for p in posted], [p.release_key for p in posted],
        )  # fmt: skip
        return released

    if not recorded:
        return await statement("job_runs")
    return await runs.on_run_table(_one_day([p.run_slot for p in recorded]), statement)


@dataclass(frozen=True, slots=True)
class SlotStart:
    """A run claimed ahead, at its slot: the run lock keys to try (none needed: allow_all) and its fire time."""

    run_id: uuid.UUID
    scheduled_for: datetime
    keys: Sequence[int]
    lock_needed: bool
    fire_at: datetime


_START_EACH = """
    WITH l AS MATERIALIZED (SELECT * FROM scheduler.try_lock_each($1::int[], $2::bigint[])),
    m AS (
        SELECT * FROM unnest($3::uuid[], $4::timestamptz[], $5::boolean[], $6::timestamptz[])
            WITH ORDINALITY AS m(run_id, scheduled_for, needed, fire_at, ord)
    ),
    r AS (
        UPDATE scheduler.RUN_TABLE t SET status = $7, worker = $8, started_at = clock_timestamp(),
            lateness_ms = LEAST(GREATEST(extract(epoch FROM clock_timestamp() - m.fire_at) * 1000,
                -2147483648), 2147483647)::integer
        FROM m LEFT JOIN l ON l.owner = m.ord
        WHERE t.run_id = m.run_id AND t.scheduled_for = m.scheduled_for AND t.status = $9 AND t.worker = $8
          AND (l.key IS NOT NULL OR NOT m.needed) AND ASYNC_COMMIT
        RETURNING m.ord, t.started_at
    )
    SELECT m.ord, l.key, r.started_at AS started FROM m LEFT JOIN l ON l.owner = m.ord LEFT JOIN r ON r.ord = m.ord
    ORDER BY m.ord
"""


async def lock_and_start_each(
    conn: asyncpg.Connection, starts: Sequence[SlotStart], worker: str
) -> list[tuple[int | None, datetime | None]]:
    """`runs.lock_and_start` for runs starting together, on one session, in one round trip: each takes the first
    free key of its own (never one an earlier run of the batch took: see scheduler.try_lock_each) and, holding one
    (or needing none), is started. One (key taken, started_at) per run, in order."""
    if len(starts) == 1:  # a batch of one: the one-run statement
        s = starts[0]
        return [
            await runs.lock_and_start_run(conn, s.keys, s.lock_needed, s.run_id, s.scheduled_for, worker, s.fire_at)
        ]
    owners = [i for i, s in enumerate(starts, 1) for _ in s.keys]
    keys = [k for s in starts for k in s.keys]

    async def statement(table: str) -> list[asyncpg.Record]:
        found: list[asyncpg.Record] = await conn.fetch(
            _START_EACH.replace("RUN_TABLE", table).replace("ASYNC_COMMIT", runs.ASYNC_COMMIT), owners, keys,
            [s.run_id for s in starts], [s.scheduled_for for s in starts], [s.lock_needed for s in starts],
            [s.fire_at for s in starts], RunStatus.RUNNING.value, worker, RunStatus.CLAIMED.value,
        )  # fmt: skip
        return found

    records = await runs.on_run_table(_one_day([s.scheduled_for for s in starts]), statement)
    return [(r["key"], r["started"]) for r in records]


@dataclass(frozen=True, slots=True)
class Finished:
    """A run's outcome to record (`runs.finish`), and the run lock to release with it (None: keep it)."""

    run_id: uuid.UUID
    status: RunStatus
    error: str | None
    duration_ms: int
    finished_at: datetime
    slot: datetime
    release_key: int | None


_FINISH_EACH = f"""
    WITH m AS (
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::timestamptz[], $6::timestamptz[])
            AS m(run_id, status, error, duration_ms, finished_at, slot)
    ),
    run AS (
        UPDATE scheduler.RUN_TABLE r SET status = m.status, error = m.error, duration_ms = m.duration_ms,
            finished_at = m.finished_at
        FROM m WHERE r.run_id = m.run_id AND r.scheduled_for = m.slot AND r.status = ANY($7::text[])
        RETURNING r.scope, r.job_id, r.started_at, r.lateness_ms, r.trigger_source, m.status, m.error,
            m.duration_ms, m.finished_at
    ), counted AS (
        INSERT INTO scheduler.trigger_counts AS t (scope, job_id, trigger_source, runs, last_at)
        SELECT scope, job_id, trigger_source, count(*), max(finished_at) FROM run GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (scope, job_id, trigger_source) DO UPDATE SET runs = t.runs + EXCLUDED.runs,
            last_at = EXCLUDED.last_at
        RETURNING 1
    ), success AS (
        SELECT DISTINCT ON (scope, job_id) scope, job_id, started_at AS ok_start, finished_at AS ok_at FROM run
        WHERE status = $8 ORDER BY scope, job_id, started_at DESC NULLS LAST
    ), tally AS (
        SELECT r.scope, r.job_id, s.ok_at,
            count(*) FILTER (WHERE {runs.failed("r.status", "$8")}
                AND (s.ok_start IS NULL OR r.started_at > s.ok_start))::int AS fails
        FROM run r LEFT JOIN success s USING (scope, job_id) GROUP BY 1, 2, 3
    ), latest AS (
        SELECT DISTINCT ON (r.scope, r.job_id) r.*, t.ok_at, t.fails
        FROM run r JOIN tally t USING (scope, job_id) ORDER BY r.scope, r.job_id, r.started_at DESC NULLS LAST
    ), job_locks AS MATERIALIZED (
        SELECT j.job_id FROM scheduler.jobs j JOIN latest ON j.scope = latest.scope AND j.job_id = latest.job_id
        WHERE (SELECT count(*) FROM counted) >= 0
        ORDER BY j.scope, j.job_id FOR UPDATE OF j
    ), job AS (
        UPDATE scheduler.jobs j SET {runs.job_after_run("latest")}
        FROM latest WHERE j.scope = latest.scope AND j.job_id = latest.job_id AND (SELECT count(*) FROM job_locks) >= 0
    )
    SELECT count(*) FILTER (WHERE pg_advisory_unlock(k)) AS released FROM unnest($9::bigint[]) AS k
"""


async def finish_each(conn: asyncpg.Connection, finished: Sequence[Finished]) -> int:
    """`runs.finish` for runs that ended together, in one statement, which also releases the run locks given
    (of two runs of one job, the later start sets the job's last_* columns, and consecutive_failures counts the
    runs in the order they started, as finishes one by one would). Returns how many were released."""
    if len(finished) == 1:  # a batch of one: the one-run statement
        f = finished[0]
        released = await runs.finish(
            conn, f.run_id, f.status, f.error, f.duration_ms, f.finished_at, release_key=f.release_key, slot=f.slot
        )
        return int(released)

    async def statement(table: str) -> int:
        released: int = await conn.fetchval(
            _FINISH_EACH.replace("RUN_TABLE", table),
            [f.run_id for f in finished], [f.status.value for f in finished],
            [None if f.error is None else f.error[: runs.ERROR_LIMIT] for f in finished],
            [f.duration_ms for f in finished], [f.finished_at for f in finished], [f.slot for f in finished],
            sources(runs.FINISHABLE), RunStatus.SUCCEEDED.value,
            [f.release_key for f in finished if f.release_key is not None],
        )  # fmt: skip
        return released

    return await runs.on_run_table(_one_day([f.slot for f in finished]), statement)
