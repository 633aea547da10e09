"""Every statement of the store that changes a run's status makes only the moves the vocabulary allows
(`shared.vocabulary.TRANSITIONS`): each statement is run against a row in every status, on the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import pytest

from shared.definitions import load_definition
from shared.store import jobs as jobs_store
from shared.store import ledger, overlaps, runs, sweeps
from shared.vocabulary import TRANSITIONS, RunStatus, TriggerSource, may_move

pytestmark = pytest.mark.integration

SLOT = datetime(2026, 1, 1, tzinfo=UTC)
Statement = Callable[[asyncpg.Connection, runs.NewRun], Awaitable[object]]


def new_run(scope: str, trigger: TriggerSource = TriggerSource.MANUAL, epoch: int | None = 1) -> runs.NewRun:
    return runs.NewRun(uuid.uuid4(), scope, "a", epoch, trigger.value, SLOT, 1, {})


STATEMENTS: dict[str, Statement] = {
    "take_over": lambda c, r: runs.take_over(c, r.run_id, "gone-worker", "me"),
    "release_claim": lambda c, r: runs.release_claim(c, r.run_id, "gone-worker"),
    "promote_buffered": lambda c, r: runs.promote_buffered(c, r.run_id, "me"),
    "revive": lambda c, r: runs.revive(c, r.run_id, "me"),
    "resolve_buffered": lambda c, r: runs.resolve_buffered(c, r.run_id, RunStatus.SKIPPED_LOCKED, "given up"),
    "start": lambda c, r: runs.start(c, r.run_id, "me", SLOT),
    "lock_and_start": lambda c, r: runs.lock_and_start(c, [], False, r, "gone-worker", SLOT),
    "resolve_claim_skipped": lambda c, r: runs.resolve_claim(c, r, "gone-worker", RunStatus.SKIPPED_LOCKED, "x"),
    "resolve_claim_buffered": lambda c, r: runs.resolve_claim(c, r, "gone-worker", RunStatus.BUFFERED),
    "finish_succeeded": lambda c, r: runs.finish(c, r.run_id, RunStatus.SUCCEEDED, None, 5, SLOT),
    "finish_failed": lambda c, r: runs.finish(c, r.run_id, RunStatus.FAILED, "boom", 5, SLOT),
    "finish_cancelled": lambda c, r: runs.finish(c, r.run_id, RunStatus.CANCELLED, "cancelled: newer slot", 5, SLOT),
    # by the run's own worker, which may find its claim if PostgreSQL lost the start in a crash (runs.ASYNC_COMMIT)
    "finish_by_owner": lambda c, r: runs.finish(
        c, r.run_id, RunStatus.FAILED, "lock lost", 5, SLOT, owner="gone-worker"
    ),
    "finish_by_other": lambda c, r: runs.finish(c, r.run_id, RunStatus.SUCCEEDED, None, 5, SLOT, owner="me"),
    # overlap=buffer_all: a claimed slot goes back behind earlier waiting slots
    "behind": lambda c, r: overlaps.behind(c, r.run_id, "gone-worker"),
    "behind_full": lambda c, r: overlaps.behind(c, r.run_id, "gone-worker", "buffer full"),
    # the watchdog's sweeps ("gone-worker" has no liveness row: it is dead)
    "abandon_orphans": lambda c, r: sweeps.abandon_orphans(c, r.scope),
    "expire_stale_buffers": lambda c, r: sweeps.expire_stale_buffers(c, r.scope, -86400.0),
    # the slot ledger's gap rows: never written over a row the slot has (any status, any epoch)
    "insert_gaps_missed": lambda c, r: ledger.insert_gaps(c, r.scope, r.job_id, 2, [SLOT], RunStatus.MISSED, "", None),
    "insert_gaps_paused": lambda c, r: ledger.insert_gaps(c, r.scope, r.job_id, 1, [SLOT], RunStatus.PAUSED, "", None),
}


@pytest.mark.parametrize("statement", sorted(STATEMENTS))
@pytest.mark.parametrize("before", list(RunStatus), ids=str)
async def test_statement_moves_only_as_the_table_allows(
    pool: asyncpg.Pool, cleanup_scope: str, statement: str, before: RunStatus
) -> None:
    async with pool.acquire() as conn:
        await jobs_store.upsert_job(conn, cleanup_scope, load_definition({"job_id": "a", "interval_seconds": 60}))
        run = new_run(cleanup_scope)
        assert await runs.claim(conn, run, before, "gone-worker")
        await STATEMENTS[statement](conn, run)
        after = RunStatus(await conn.fetchval("SELECT status FROM scheduler.job_runs WHERE run_id = $1", run.run_id))
    if after is not before:
        assert may_move(before, after), f"{statement} moved a run from {before} to {after}"


@pytest.mark.parametrize("status", sorted(TRANSITIONS[None]), ids=str)
async def test_inserts_create_only_allowed_first_statuses(pool: asyncpg.Pool, cleanup_scope: str, status: str) -> None:
    async with pool.acquire() as conn:
        run = new_run(cleanup_scope, TriggerSource.SCHEDULER)
        assert await runs.claim(conn, run, RunStatus(status), "me")
        assert not await runs.claim(conn, run, RunStatus(status), "me")  # one row per slot: the second is refused
        stored = await conn.fetchval("SELECT status FROM scheduler.job_runs WHERE run_id = $1", run.run_id)
    assert stored == status


async def test_the_checker_sees_a_forbidden_move() -> None:
    """The table forbids leaving a finished run: a statement that did would fail the test above."""
    assert not may_move(RunStatus.SUCCEEDED, RunStatus.RUNNING)
    assert not may_move(RunStatus.FAILED, RunStatus.CLAIMED)
    assert may_move(RunStatus.SKIPPED_LOCKED, RunStatus.CLAIMED)


@pytest.mark.parametrize("status", [RunStatus.SKIPPED_MISFIRE, RunStatus.PAUSED, RunStatus.MISSED], ids=str)
async def test_gap_rows_are_inserted_once_per_slot(pool: asyncpg.Pool, cleanup_scope: str, status: RunStatus) -> None:
    async with pool.acquire() as conn:
        slots = [SLOT, SLOT.replace(minute=1)]
        written = await ledger.insert_gaps(conn, cleanup_scope, "a", 3, slots, status, "why", "me")
        assert written == slots and may_move(None, status)
        assert await ledger.insert_gaps(conn, cleanup_scope, "a", 4, slots, status, "why", "me") == []
        stored = await conn.fetch("SELECT status, error FROM scheduler.job_runs WHERE scope = $1", cleanup_scope)
    assert [(r["status"], r["error"]) for r in stored] == [(status.value, "why")] * 2
