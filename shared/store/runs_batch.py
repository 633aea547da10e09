"""The lead path's two statements (`runs.claim_and_enter_chain`, `runs.record_posted`) over many slots at once:
one round trip claims every slot of a batch and enters their chains, one records the posts of those whose
next slots were confirmed and gives their chain locks back (shared.lead_batch)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from shared.locks import JobVersion
from shared.store import runs
from shared.store.runs import ClaimedAhead, NewRun
from shared.vocabulary import RunStatus


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
        ORDER BY m1.ord
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
    job AS (UPDATE scheduler.jobs j SET next_due_at = m.next_due_at FROM m WHERE j.scope = $1 AND j.job_id = m.job_id),
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
