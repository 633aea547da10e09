"""Claims ahead made together (shared.lead_batch): the slots of messages that arrive together are claimed, and
their chains entered, in one statement; the posts confirmed together are recorded in one. Each member is decided
exactly as one message alone would be: a copy of a slot already claimed, a job row that changed since it was read,
a job that is gone are not claimed and hold nothing; every chain lock taken is given back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aio_pika
import asyncpg
import pytest
from pydantic import BaseModel, ConfigDict

from shared import decisions
from shared.context import RunContext
from shared.lead_batch import LeadBatch
from shared.locks import JobVersion, chain_lock_key, run_lock_keys
from shared.messages import chain_message
from shared.settings import Settings
from shared.store import jobs as jobs_store
from shared.store import runs, runs_batch
from shared.store.jobs import JobRow
from shared.store.runs_batch import AheadClaim, Finished, PostedSlot, SlotStart
from shared.vocabulary import RunStatus
from tests.support import advisory
from tests.support.runtime import Control, fast_settings, overlaps, running_worker, slots_run_more_than_once, wait_until

pytestmark = pytest.mark.integration
Amqp = aio_pika.abc.AbstractRobustConnection


def _claim(scope: str, job: JobRow, slot: datetime, expected: JobVersion | None) -> AheadClaim:
    run = decisions.new_run(scope, job, chain_message(scope, job.job_id, job.epoch, slot, slot))
    return AheadClaim(run, chain_lock_key(scope, job.job_id), expected)


async def _held_chain_locks(pool: asyncpg.Pool, keys: list[int]) -> int:
    """How many of `keys` some session holds as an advisory lock (seen from another session)."""
    return len(await advisory.holders(pool, keys))


async def test_claims_made_together_go_in_one_statement_and_each_member_is_decided_as_alone(
    pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    for job_id in ("a", "b", "c", "gone"):
        await control.seed(job_id=job_id, interval_seconds=60)
    rows = {j: await jobs_store.get_job(pool, scope, j) for j in ("a", "b", "c", "gone")}
    assert all(r is not None for r in rows.values())
    a, b, c, gone = (rows[j] for j in ("a", "b", "c", "gone"))
    assert a is not None and b is not None and c is not None and gone is not None
    await control.delete("gone")
    changed = JobVersion(c.epoch, c.enabled, c.updated_at - timedelta(seconds=1))  # a row read before a change
    slot = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    claims = [
        _claim(scope, a, slot, a.version),
        _claim(scope, b, slot, None),
        _claim(scope, a, slot, a.version),  # a copy of the first slot, in the same batch
        _claim(scope, c, slot, changed),
        _claim(scope, gone, slot, gone.version),
    ]
    batch = LeadBatch(pool, scope, "test-worker")
    found = await asyncio.gather(*(batch.claim(claim) for claim in claims))
    assert batch.claims.batches == 1  # five claims, one statement

    (first, hold_a), (second, hold_b), (copy, hold_copy), (stale, hold_c), (missing, hold_gone) = found
    assert first.claimed and first.chain == (a.epoch, True) and hold_a is not None
    assert second.claimed and second.chain == (b.epoch, True) and hold_b is not None
    assert not copy.claimed and hold_copy is None  # one row per slot: the copy goes the way of a duplicate
    assert not stale.claimed and hold_c is None and stale.version == c.version != changed
    assert not missing.claimed and hold_gone is None and missing.version is None
    claimed = await pool.fetch(
        "SELECT job_id, status, worker FROM scheduler.job_runs WHERE scope = $1 ORDER BY job_id", scope
    )
    assert [tuple(r) for r in claimed] == [("a", "claimed", "test-worker"), ("b", "claimed", "test-worker")]
    keys = [chain_lock_key(scope, "a"), chain_lock_key(scope, "b")]
    assert await _held_chain_locks(pool, keys) == 2  # held on the batch's session until recorded

    next_slot = slot + timedelta(minutes=1)
    await hold_a.record(PostedSlot(hold_a.key, "a", next_slot, claims[0].run.run_id, next_slot, slot))
    assert await _held_chain_locks(pool, keys) == 1
    await hold_b.give_back()  # nothing posted: the lock goes back, nothing is recorded
    assert await _held_chain_locks(pool, keys) == 0
    posted = await pool.fetch(
        "SELECT r.job_id, r.next_posted_for, j.next_due_at FROM scheduler.job_runs r JOIN scheduler.jobs j"
        " USING (scope, job_id) WHERE r.scope = $1 ORDER BY r.job_id",
        scope,
    )
    assert [tuple(r) for r in posted] == [("a", next_slot, next_slot), ("b", None, b.next_due_at)]


class Params(BaseModel):
    model_config = ConfigDict(extra="allow")


async def nothing(ctx: RunContext, params: Params) -> None:
    return None


async def test_a_herd_due_at_one_instant_is_claimed_in_fewer_statements_and_runs_each_slot_once(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    herd = [f"h{i}" for i in range(12)]
    for job_id in herd:
        await control.seed(job_id=job_id, queue="herd", interval_seconds=1, align=True)  # all on phase 0
    lead = fast_settings(settings, cleanup_scope, scheduler_dispatch_lead_ms="300")
    async with running_worker(lead, {"herd": (nothing, Params)}) as worker:
        await wait_until(lambda: _succeeded(pool, cleanup_scope, 6 * len(herd)), 30, "six slots of every job")
        assert worker._env is not None and worker._env.lead_batch is not None
        claims = worker._env.lead_batch.claims
        assert worker._env.slot_batch is not None
        starts = worker._env.slot_batch.starts
    rows = await control.runs()
    assert slots_run_more_than_once(rows) == []
    assert all(overlaps([r for r in rows if r["job_id"] == job_id]) == [] for job_id in herd)
    # the slots due before the worker was up arrive late together and go the ordinary way (one may find the run
    # of the slot before still holding the lock); every slot claimed in its lead ran
    ahead = [r for r in rows if r["claimed_at"] < r["scheduled_for"]]
    assert ahead and {r["status"] for r in ahead} <= {"succeeded", "claimed", "running"}
    # all but each job's first message (its row was not read yet) took the batched path, fewer statements than
    # claims (how many share one depends on how the broker spreads the herd's deliveries over time)
    assert claims.submitted >= 3 * len(herd) and claims.batches * 3 <= claims.submitted * 2
    assert starts.submitted >= 3 * len(herd) and starts.batches * 3 <= starts.submitted * 2  # runs sharing a slot
    done = [r for r in rows if r["status"] == "succeeded"]
    assert all(r["next_posted_for"] is not None for r in done)


async def test_with_batching_off_a_herd_goes_one_message_at_a_time_and_runs_each_slot_once(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    herd = [f"h{i}" for i in range(6)]
    for job_id in herd:
        await control.seed(job_id=job_id, queue="herd", interval_seconds=1, align=True)
    alone = fast_settings(settings, cleanup_scope, scheduler_dispatch_lead_ms="300", scheduler_batching="false")
    async with running_worker(alone, {"herd": (nothing, Params)}) as worker:
        assert worker._env is not None and worker._env.lead_batch is None and worker._env.slot_batch is None
        await wait_until(lambda: _succeeded(pool, cleanup_scope, 4 * len(herd)), 30, "four slots of every job")
    rows = await control.runs()
    assert slots_run_more_than_once(rows) == []
    ahead = [r for r in rows if r["claimed_at"] < r["scheduled_for"]]
    assert ahead, "the lead path (one message at a time) claimed slots ahead"


async def test_spread_claims_that_may_linger_share_statements_and_each_run_starts_at_its_slot(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    """Slots a quarter of a second apart, claims allowed to wait 400 ms for company (within half a 1 s lead): they
    go two or more to a statement, and each run still starts at its own slot, never before it, once."""
    control = Control(pool, amqp, cleanup_scope)
    spread = [f"s{i}" for i in range(8)]
    for job_id in spread:
        await control.seed(job_id=job_id, queue="spread", interval_seconds=2)  # phase: the moment it is seeded
        await asyncio.sleep(0.25)
    lingering = fast_settings(
        settings, cleanup_scope, scheduler_dispatch_lead_ms="1000", scheduler_claim_linger_ms="400"
    )
    async with running_worker(lingering, {"spread": (nothing, Params)}) as worker:
        await wait_until(lambda: _succeeded(pool, cleanup_scope, 4 * len(spread)), 40, "four slots of every job")
        assert worker._env is not None and worker._env.lead_batch is not None
        claims = worker._env.lead_batch.claims
    rows = await control.runs()
    assert slots_run_more_than_once(rows) == []
    ahead = [r for r in rows if r["claimed_at"] < r["scheduled_for"] and r["status"] == "succeeded"]
    assert len(ahead) >= 2 * len(spread)
    assert all(r["started_at"] >= r["scheduled_for"] for r in ahead)  # the linger is spent in the lead
    assert claims.submitted >= 2 * len(spread) and claims.batches * 3 <= claims.submitted * 2


async def test_a_claim_lingering_for_company_holds_no_handler_place(
    settings: Settings, pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    """WORKER_CONCURRENCY 1 and claims that wait up to 400 ms for company: while a claim waits, the worker's one
    handler place stays free for a run due meanwhile (held by the lingering delivery, it delayed the starts of other
    jobs by the linger: most of a spread load's p99)."""
    control = Control(pool, amqp, cleanup_scope)
    for i in range(6):
        await control.seed(job_id=f"p{i}", queue="spread", interval_seconds=2)
        await asyncio.sleep(0.3)
    lingering = fast_settings(
        settings, cleanup_scope, scheduler_dispatch_lead_ms="1000", scheduler_claim_linger_ms="400",
        worker_concurrency="1",
    )  # fmt: skip
    lingered = held = 0
    async with running_worker(lingering, {"spread": (nothing, Params)}) as worker:
        assert worker._env is not None and worker._env.lead_batch is not None
        claims = worker._env.lead_batch.claims
        deadline = asyncio.get_running_loop().time() + 8
        while asyncio.get_running_loop().time() < deadline:
            if claims._gathering is not None:
                lingered += 1
                held += worker._semaphore.locked()
            await asyncio.sleep(0.005)
        await wait_until(lambda: _succeeded(pool, cleanup_scope, 6), 30, "a run of every job")
    assert lingered >= 20, "no claim was seen waiting for company"
    assert held * 4 < lingered  # the place is free while a claim waits (a run may hold it now and then)
    assert slots_run_more_than_once(await control.runs()) == []


async def _succeeded(pool: asyncpg.Pool, scope: str, n: int) -> bool:
    found = await pool.fetchval(
        "SELECT count(*) FROM scheduler.job_runs WHERE scope = $1 AND status = 'succeeded'", scope
    )
    return int(found) >= n


async def test_runs_starting_together_on_one_session_never_share_a_run_lock(
    pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    """A session lock is re-entrant: two runs of one lock group started in one statement on one session must not
    both take the group's single key. The first takes it and starts, the second is not started; the finish of
    both in one statement records the outcome and gives the key back."""
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    for job_id in ("x", "y"):
        await control.seed(job_id=job_id, interval_seconds=60, lock_group="shared")
    slot = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    found = []
    for job_id in ("x", "y"):
        job = await jobs_store.get_job(pool, scope, job_id)
        assert job is not None
        found.append(_claim(scope, job, slot, None).run)
    keys = run_lock_keys(scope, "shared", 1)
    async with pool.acquire() as conn:
        for run in found:
            assert await runs.claim(conn, run, RunStatus.CLAIMED, "test-worker")
        starts = [SlotStart(r.run_id, r.scheduled_for, keys, True, slot) for r in found]
        (key_x, started_x), (key_y, started_y) = await runs_batch.lock_and_start_each(conn, starts, "test-worker")
        assert key_x == keys[0] and started_x is not None
        assert key_y is None and started_y is None
        assert await _held_chain_locks(pool, keys) == 1
        done = Finished(found[0].run_id, RunStatus.SUCCEEDED, None, 3, datetime.now(UTC), slot, key_x)
        assert await runs_batch.finish_each(conn, [done]) == 1
        assert await _held_chain_locks(pool, keys) == 0
    rows = {r["job_id"]: r["status"] for r in await control.runs()}
    assert rows == {"x": "succeeded", "y": "claimed"}
    job_x = await control.job("x")
    assert job_x["last_status"] == "succeeded" and job_x["consecutive_failures"] == 0


async def test_a_batch_of_one_is_decided_as_in_a_batch_of_many(
    pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str
) -> None:
    """Spread load sends batches of one, which take the one-run statements: the same answers as the batched
    statement gives its members (a claim, a copy, a changed row, a gone job; a start that finds the key taken;
    a finish that gives the key back), and every lock given back."""
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    for job_id in ("a", "c", "gone"):
        await control.seed(job_id=job_id, interval_seconds=60, lock_group="g")
    a, c, gone = [await jobs_store.get_job(pool, scope, j) for j in ("a", "c", "gone")]
    assert a is not None and c is not None and gone is not None
    await control.delete("gone")
    changed = JobVersion(c.epoch, c.enabled, c.updated_at - timedelta(seconds=1))
    slot = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    batch = LeadBatch(pool, scope, "test-worker")
    lone = [_claim(scope, a, slot, a.version), _claim(scope, a, slot, a.version), _claim(scope, c, slot, changed)]
    found = [await batch.claim(claim) for claim in [*lone, _claim(scope, gone, slot, gone.version)]]
    assert batch.claims.batches == batch.claims.submitted == 4  # one at a time
    (first, hold_a), (copy, hold_copy), (stale, hold_c), (missing, hold_gone) = found
    assert first.claimed and first.chain == (a.epoch, True) and hold_a is not None
    assert not copy.claimed and hold_copy is None
    assert not stale.claimed and hold_c is None and stale.version == c.version != changed
    assert not missing.claimed and hold_gone is None and missing.version is None
    chain_key = chain_lock_key(scope, "a")
    assert await _held_chain_locks(pool, [chain_key]) == 1
    next_slot = slot + timedelta(minutes=1)
    await hold_a.record(PostedSlot(hold_a.key, "a", next_slot, lone[0].run.run_id, next_slot, slot))
    assert await _held_chain_locks(pool, [chain_key]) == 0
    posted = await pool.fetchrow(
        "SELECT r.next_posted_for, j.next_due_at FROM scheduler.job_runs r JOIN scheduler.jobs j"
        " USING (scope, job_id) WHERE r.scope = $1 AND r.job_id = 'a'",
        scope,
    )
    assert tuple(posted) == (next_slot, next_slot)

    keys = run_lock_keys(scope, "g", 1)
    run = lone[0].run
    start = SlotStart(run.run_id, run.scheduled_for, keys, True, slot)
    async with pool.acquire() as holder, pool.acquire() as conn:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", keys[0])  # the group's key is taken
        assert await runs_batch.lock_and_start_each(conn, [start], "test-worker") == [(None, None)]
        assert await holder.fetchval("SELECT pg_advisory_unlock($1)", keys[0])
        [(key, started)] = await runs_batch.lock_and_start_each(conn, [start], "test-worker")
        assert key == keys[0] and started is not None
        done = Finished(run.run_id, RunStatus.SUCCEEDED, None, 3, datetime.now(UTC), slot, key)
        assert await runs_batch.finish_each(conn, [done]) == 1
        assert await runs_batch.record_posted_each(conn, scope, [PostedSlot(chain_key)]) == 0  # not held: none
    assert await _held_chain_locks(pool, [*keys, chain_key]) == 0
    job_a = await control.job("a")
    assert job_a["last_status"] == "succeeded" and job_a["consecutive_failures"] == 0


@pytest.mark.parametrize(
    ("outcomes", "failures", "succeeded"),
    [
        (("failed", "timed_out", "failed"), 5, False),  # 2 before, 3 now: each failure counts
        (("failed", "succeeded", "failed"), 1, True),  # the success resets; the failure started after it counts
        (("succeeded", "failed", "cancelled"), 1, True),  # a cancelled run is no failure
        (("failed", "failed", "succeeded"), 0, True),
    ],
)
async def test_runs_of_one_job_finished_together_count_as_they_would_one_by_one(
    pool: asyncpg.Pool, amqp: Amqp, cleanup_scope: str, outcomes: tuple[str, ...], failures: int, succeeded: bool
) -> None:
    """Three runs of one allow_all job end together and are finished in one statement: consecutive_failures
    and last_success_at come out as three finishes in the order the runs started would leave them."""
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="p", interval_seconds=60, overlap="allow_all", max_parallel=3)
    await pool.execute("UPDATE scheduler.jobs SET consecutive_failures = 2 WHERE scope = $1 AND job_id = 'p'", scope)
    job = await jobs_store.get_job(pool, scope, "p")
    assert job is not None
    first = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    slots = [first + timedelta(minutes=i) for i in range(3)]
    claimed = [_claim(scope, job, slot, None).run for slot in slots]
    ended = datetime.now(UTC)
    async with pool.acquire() as conn:
        for run in claimed:  # started one after the other: the start order is the slot order
            assert await runs.claim(conn, run, RunStatus.CLAIMED, "test-worker")
            [(_, started)] = await runs_batch.lock_and_start_each(
                conn, [SlotStart(run.run_id, run.scheduled_for, [], False, run.scheduled_for)], "test-worker"
            )
            assert started is not None
        done = [
            Finished(run.run_id, RunStatus(status), None, 3, ended + timedelta(seconds=i), run.scheduled_for, None)
            for i, (run, status) in enumerate(zip(claimed, outcomes, strict=True))
        ]
        await runs_batch.finish_each(conn, done)
    job_p = await control.job("p")
    assert job_p["consecutive_failures"] == failures
    assert job_p["last_status"] == outcomes[-1]
    last_ok = max((f.finished_at for f in done if f.status is RunStatus.SUCCEEDED), default=None)
    assert job_p["last_success_at"] == (last_ok if succeeded else None)
