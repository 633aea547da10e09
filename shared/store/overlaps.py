"""SQL of the overlap policies beyond skip: how many slots of a job wait for the lock, whether an earlier one
does (buffer_all runs them in slot order), and cancel requests (cancel_other)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg

from shared.locks import lock_key
from shared.store.runs import ACTIVE_ROWS
from shared.vocabulary import OWNED, RunStatus, TriggerSource, sources

CANCEL_CHANNEL = "scheduler_cancel"
"""The NOTIFY channel a cancel request is announced on; the payload is the run id to stop."""


@contextlib.asynccontextmanager
async def buffer_guard(conn: asyncpg.Connection, scope: str, job_id: str, needed: bool) -> AsyncIterator[None]:
    """With `needed`: a transaction holding the job's buffer lock, so counting the waiting slots and adding one
    is one step (two slots arriving at once never both take the last place)."""
    if not needed:
        yield
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key("buffer", scope, job_id))
        yield


async def waiting(conn: asyncpg.Connection, scope: str, job_id: str) -> int:
    """How many slots of the job wait for the lock (buffered)."""
    found = await conn.fetchval(
        f"SELECT count(*) FROM scheduler.job_runs WHERE scope = $1 AND job_id = $2 AND {ACTIVE_ROWS} AND status = $3",
        scope,
        job_id,
        RunStatus.BUFFERED.value,
    )
    return int(found or 0)


async def earlier_waiting(conn: asyncpg.Connection, scope: str, job_id: str, slot: datetime) -> bool:
    """Whether a slot of the job earlier than `slot` waits for the lock too."""
    found = await conn.fetchval(
        f"SELECT true FROM scheduler.job_runs WHERE scope = $1 AND job_id = $2 AND {ACTIVE_ROWS} AND status = $3"
        " AND scheduled_for < $4 LIMIT 1",
        scope,
        job_id,
        RunStatus.BUFFERED.value,
        slot,
    )
    return bool(found)


async def behind(conn: asyncpg.Connection, run_id: uuid.UUID, worker: str, error: str | None = None) -> bool:
    """A slot this worker just claimed goes back to waiting (buffered) behind earlier waiting slots; with `error`,
    it is skipped instead (skipped_locked, that error: the buffer is full)."""
    status = await conn.execute(
        "UPDATE scheduler.job_runs SET status = $3, error = $5,"
        " finished_at = CASE WHEN $5::text IS NULL THEN NULL ELSE now() END"
        " WHERE run_id = $1 AND worker = $2 AND status = $4",
        run_id,
        worker,
        RunStatus.BUFFERED.value if error is None else RunStatus.SKIPPED_LOCKED.value,
        RunStatus.CLAIMED.value,
        error,
    )
    return bool(status.endswith(" 1"))


async def note_skip(conn: asyncpg.Connection, run_id: uuid.UUID, error: str) -> None:
    """Say on a skipped_locked row why it was skipped (a buffer_all slot beyond the bound)."""
    await conn.execute(
        "UPDATE scheduler.job_runs SET error = $2 WHERE run_id = $1 AND status = $3",
        run_id,
        error,
        RunStatus.SKIPPED_LOCKED.value,
    )


_REQUEST = f"""
    WITH target AS (
        SELECT run_id FROM scheduler.job_runs
        WHERE scope = $1 AND job_id = $2 AND {ACTIVE_ROWS} AND status = ANY($3::text[]) AND run_id <> $4
          AND ($8::timestamptz IS NULL OR scheduled_for <= $8)
        ORDER BY status = $7 DESC, claimed_at LIMIT 1
    ), asked AS (
        INSERT INTO scheduler.run_cancels (run_id, scope, job_id, requested_by, reason)
        SELECT run_id, $1, $2, $4, $5 FROM target
        ON CONFLICT (run_id) DO NOTHING
    )
    SELECT run_id, pg_notify($6, run_id::text) FROM target
"""


async def request_cancel(
    conn: asyncpg.Connection,
    scope: str,
    job_id: str,
    by_run: uuid.UUID,
    reason: str,
    slot: datetime | None = None,
) -> uuid.UUID | None:
    """Ask the job's run in the way (not `by_run`; a running one first, then the oldest claimed one) to stop: a
    request row (kept if one is there) and a NOTIFY, sent again on every call. With `slot`, only a run of that
    slot or an earlier one is asked: a later slot is never stopped for an earlier one (the newest slot is the one
    that runs). Returns the run asked, None if there is none."""
    record = await conn.fetchrow(
        _REQUEST, scope, job_id, sources(OWNED), by_run, reason, CANCEL_CHANNEL, RunStatus.RUNNING.value, slot
    )
    return None if record is None else record["run_id"]


async def later_slot_runs(conn: asyncpg.Connection, scope: str, job_id: str, slot: datetime) -> bool:
    """Whether a run of a slot of the job later than `slot` holds (or is taking) the lock."""
    found = await conn.fetchval(
        f"SELECT true FROM scheduler.job_runs WHERE scope = $1 AND job_id = $2 AND {ACTIVE_ROWS}"
        " AND status = ANY($3::text[]) AND scheduled_for > $4 LIMIT 1",
        scope,
        job_id,
        sources(OWNED),
        slot,
    )
    return bool(found)


SUPERSEDED = "superseded: a later slot of the job took the lock first and runs instead (overlap=cancel_other)"


async def supersede_earlier(conn: asyncpg.Connection, scope: str, job_id: str, slot: datetime) -> list[str]:
    """overlap=cancel_other: the slots still waiting (buffered) to replace a run that a later slot (`slot`) has
    overtaken, taking the lock first, are skipped (skipped_locked, SUPERSEDED): the newest slot is the one that
    runs, and a waiter never stops it. Only slots of the schedule: a run queued by hand (run-now --queue) still waits
    its turn. Returns the trigger sources of the rows skipped (for the metrics)."""
    rows = await conn.fetch(
        f"UPDATE scheduler.job_runs SET status = $4, error = $5, finished_at = now()"
        f" WHERE scope = $1 AND job_id = $2 AND {ACTIVE_ROWS} AND status = $6 AND scheduled_for < $3"
        " AND trigger_source = $7 RETURNING trigger_source",
        scope,
        job_id,
        slot,
        RunStatus.SKIPPED_LOCKED.value,
        SUPERSEDED,
        RunStatus.BUFFERED.value,
        TriggerSource.SCHEDULER.value,
    )
    return [r["trigger_source"] for r in rows]


async def cancel_requested(conn: asyncpg.Connection, run_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval("SELECT true FROM scheduler.run_cancels WHERE run_id = $1", run_id))


async def take_request(conn: asyncpg.Connection, run_id: uuid.UUID) -> tuple[str, uuid.UUID | None] | None:
    """The request to stop `run_id` (reason, the run that asked), removed; None if there is none."""
    record = await conn.fetchrow(
        "DELETE FROM scheduler.run_cancels WHERE run_id = $1 RETURNING reason, requested_by", run_id
    )
    return None if record is None else (record["reason"], record["requested_by"])


async def forget_finished_requests(conn: asyncpg.Connection, scope: str, job_id: str) -> None:
    """Requests whose run finished before it saw them (it ended on its own): nothing will take them."""
    await conn.execute(
        "DELETE FROM scheduler.run_cancels c WHERE c.scope = $1 AND c.job_id = $2 AND NOT EXISTS"
        " (SELECT 1 FROM scheduler.job_runs r WHERE r.run_id = c.run_id AND r.status = ANY($3::text[]))",
        scope,
        job_id,
        sources(OWNED),
    )
