"""The run protocol (DESIGN section 6): what a worker does with one message, read top to bottom.

    handle_delivery        never raises; a dependency that is down hands the message back to the broker
      1 parse              parse_or_park
      2 look up            look_up          -> decisions.admit: park, drop, expire, or go on
      3 misfire            skip_misfire     (decisions.admit said so)
      4 lock               take_lock        the run lock, and in the same statement step 5's usual insert
      5 claim              claim            -> decisions.when_locked / decisions.on_existing
      6 post next          post_next        the chain's next slot, confirmed, before the run
      7 ack                ack_claimed
      8 run                execution.run_and_record
      9 retry              execution.retry_if_due
     10 release            the finish statement of step 8 releases the lock; then execution.publish_outcome

A chain message that arrives a lead before its slot (shared.lead) takes the lead path: steps 5-7 at once (the
slot claimed without the lock, the next slot posted, the ack), then, at the slot, step 4 and the start in one
statement and steps 8-10; a lock still taken at the slot makes the claimed slot skipped or buffered, as step 5
would have. A copy of a slot that already has a row goes the ordinary way, and waits for the slot before step 8.

Batched (`claim_batched`, shared.lead_batch, shared.slot_batch): a chain message on a row read before that takes the
lead path (or is due now or late, within the grace: it starts once claimed) sends its claim with those of the
messages that arrived with it (one statement for all, on one connection that holds their chain locks), posts its
next slot beside theirs, and has the posts confirmed together recorded in one statement, which gives their chain
locks back. At the slot, the runs starting together take their run locks and start in one statement, on one session
that holds each lock for its whole run; the runs ending together are recorded in one. Every member is decided as it
would be alone: one whose claim did not go through (a copy, a row that changed, a job gone) takes the ordinary path
from the start, having changed nothing.

Every choice is made by a pure function of `shared.decisions` over what the steps found; this module only
gathers facts and carries decisions out, on one `Turn` per message.

A chain message whose job row this worker read before (same epoch) skips the read of step 2: the row is
confirmed by the lock statement of step 4, which reads the row's version in the same round trip. Nothing is
written, published, parked or acked on a row before it is confirmed; a row that changed meanwhile is read
again and the message goes through every step on the fresh row.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, cast

import asyncpg
import structlog

from shared import backoff, catchup, chain, decisions, execution, lead, ledger
from shared.decisions import Action, ChainRepair, Decision
from shared.dependencies import AMQP_ERRORS, DB_ERRORS, classify, describe
from shared.lead_batch import Hold
from shared.locks import chain_lock_key, run_lock_keys, unlock, wait_for_chain
from shared.messages import BadMessage, JobMessage, parse_message
from shared.runtime import Delivery, Env, Lock, Turn
from shared.slot_batch import Shift, SlotBatch
from shared.store import jobs as jobs_store
from shared.store import overlaps, runs
from shared.store.jobs import JobRow
from shared.store.pool import left_tidy, spoil
from shared.store.runs_batch import AheadClaim, SlotStart
from shared.vocabulary import Contention, Dependency, DropReason, ParkReason, RunStatus

log = structlog.get_logger("shared.protocol")


async def handle_delivery(env: Env, delivery: Delivery) -> None:
    """Steps 1-10 for one message. Never raises (but for cancellation)."""
    structlog.contextvars.clear_contextvars()
    try:
        await _protocol(env, delivery)
        env.series(env.metrics.dependency_up, Dependency.POSTGRES.value).set(1)
        env.series(env.metrics.dependency_up, Dependency.RABBITMQ.value).set(1)
    except (*DB_ERRORS, *AMQP_ERRORS) as exc:
        await _dependency_down(env, delivery, classify(exc), exc)
    except asyncio.CancelledError:
        await delivery.nack_requeue()
        raise
    except Exception as exc:
        log.exception("message.internal_error", error=repr(exc)[:300], redelivered=delivery.message.redelivered)
        if delivery.settled:
            return
        if delivery.message.redelivered:  # failed twice: park it rather than loop on it
            with contextlib.suppress(Exception):
                await park(env, delivery, ParkReason.INTERNAL_ERROR, repr(exc))
        else:
            await _dependency_down(env, delivery, None, exc)
    finally:
        structlog.contextvars.clear_contextvars()


async def _dependency_down(env: Env, delivery: Delivery, dependency: Dependency | None, exc: BaseException) -> None:
    """Not acked yet: wait (holding the message, so prefetch throttles intake) and hand it back to the broker."""
    if dependency is not None:
        env.metrics.dependency_up.labels(dependency.value).set(0)
    name = "internal" if dependency is None else dependency.value
    log.warning("dependency.unavailable", dependency=name, error=repr(exc)[:300], settled=delivery.settled)
    if not delivery.settled:
        await asyncio.sleep(env.dependency_backoff_sec * (0.5 + env.rng()))
        await delivery.nack_requeue()


async def _protocol(env: Env, delivery: Delivery) -> None:
    msg = await parse_or_park(env, delivery)  # 1
    if msg is None:
        return
    structlog.contextvars.bind_contextvars(
        scope=env.scope, trigger_source=msg.trigger_source.value, attempt=msg.attempt
    )
    if decisions.rearm(msg, env.clock(), env.dispatch_lead_sec).action is Action.REARM:
        await rearm_hop(env, delivery, msg)
        return
    if await claim_batched(env, delivery, msg):  # the lead path on a cached row, claimed with its herd
        return
    async with env.pool.acquire() as conn:  # this connection holds the run lock for the whole run
        turn = Turn(env, delivery, msg, conn, handler_done=delivery.handler_done)
        if not await _on_cached_row(turn) and await look_up(turn):  # 2, 3
            await serve(turn, confirmed=True)  # 4-10
        left_tidy(conn)  # every lock taken here was given back (a failed unlock spoiled it): no reset needed


async def _on_cached_row(turn: Turn) -> bool:
    """Steps 4-10 on the row read for an earlier message, if it would pass step 2 and 3 unchanged. False, having
    done nothing, when it cannot be used (it changed, or the message misfired or has no handler here)."""
    env, msg = turn.env, turn.msg
    job = env.jobs.get(msg.job_id)
    now = env.clock()
    if job is None or not decisions.usable_cached(job, msg, turn.delivery.queue, now):
        return False
    if decisions.misfired(job, msg, now):
        return False
    turn.job = job
    return await serve(turn, confirmed=False)


# -- 1. parse ---------------------------------------------------------------------------------------------------


async def parse_or_park(env: Env, delivery: Delivery) -> JobMessage | None:
    """A body that is not a valid job message goes to parking with the reason; the consumer goes on."""
    try:
        message, unknown = parse_message(delivery.message.body)
    except BadMessage as exc:
        await park(env, delivery, exc.reason, exc.detail)
        return None
    screened = decisions.screen(message, env.scope)
    if screened.action is Action.PARK:
        await park(env, delivery, screened.reason, screened.detail)
        return None
    if unknown:
        log.debug("message.unknown_fields_ignored", job_id=message.job_id, fields=unknown[:20])
    return message


async def rearm_hop(env: Env, delivery: Delivery, msg: JobMessage) -> None:
    """A hop of a slot still beyond reach: posted again (confirmed) before the ack; nothing runs, no run row."""
    async with env.pool.acquire() as conn:
        posted = await chain.rearm(conn, env.publisher, env.scope, msg, env.clock())
        left_tidy(conn)
    if posted:
        fire_at = msg.rearm_at.isoformat() if msg.rearm_at else None
        log.info("chain.rearmed", job_id=msg.job_id, slot=msg.scheduled_for.isoformat(), fire_at=fire_at)
        await delivery.ack()
    else:
        await drop(env, delivery, DropReason.STALE_EPOCH.value, job_id=msg.job_id)


async def park(env: Env, delivery: Delivery, reason: str, detail: str) -> None:
    headers = dict(delivery.message.headers or {})
    await env.publisher.park(delivery.message.body, reason, detail, delivery.queue, headers)
    env.metrics.parked.labels(env.scope, reason).inc()
    log.warning("message.parked", reason=reason, detail=detail[:300], queue=delivery.queue)
    await delivery.ack()


async def drop(env: Env, delivery: Delivery, reason: str, **kw: Any) -> None:
    env.metrics.dropped.labels(env.scope, reason).inc()
    log.info("message.dropped", reason=reason, **kw)
    await delivery.ack()


# -- 2. look up, 3. misfire ------------------------------------------------------------------------------------


async def look_up(turn: Turn) -> bool:
    """Read the job row and admit the message on it. True when the message goes on to step 4; otherwise it was
    parked, dropped, recorded as expired or skipped as a misfire."""
    env, conn, msg = turn.env, turn.conn, turn.msg
    job = await jobs_store.get_job(conn, env.scope, msg.job_id)
    decision = decisions.admit(job, msg, turn.delivery.queue, env.scope, env.clock(), reread=False)
    if decision.action is Action.REREAD:
        # the reseed that posted this message holds the chain lock until it commits: wait for it, read again
        await wait_for_chain(conn, env.scope, msg.job_id)
        job = await jobs_store.get_job(conn, env.scope, msg.job_id)
        decision = decisions.admit(job, msg, turn.delivery.queue, env.scope, env.clock(), reread=True)
    if job is None:
        env.jobs.forget(msg.job_id)
    else:
        env.jobs.put(job)
        structlog.contextvars.bind_contextvars(job_id=job.job_id)  # only ids of real jobs become log labels
    turn.job = job
    return await _admitted(turn, decision)


async def _admitted(turn: Turn, decision: Decision) -> bool:
    env, delivery, msg = turn.env, turn.delivery, turn.msg
    if decision.action is Action.PROCEED:
        return True
    if decision.action is Action.PARK:
        await park(env, delivery, decision.reason, decision.detail)
    elif decision.action is Action.DROP:
        await drop(env, delivery, decision.reason, job_id=msg.job_id, epoch=msg.epoch)
    elif decision.action is Action.EXPIRE:
        assert turn.job is not None
        run = decisions.new_run(env.scope, turn.job, msg)
        await runs.claim(turn.conn, run, RunStatus.EXPIRED, env.worker_id)
        await drop(env, delivery, decision.reason, job_id=msg.job_id)
    elif decision.action is Action.SKIP_MISFIRE:
        await skip_misfire(turn)
    return False


async def skip_misfire(turn: Turn) -> None:
    """A chain message later than the grace: record skipped_misfire and post the next slot counted from now
    (no burst of catch-up runs)."""
    env, job, msg = turn.env, turn.job, turn.msg
    assert job is not None
    turn.run = decisions.new_run(env.scope, job, msg)
    if await runs.claim(turn.conn, turn.run, RunStatus.SKIPPED_MISFIRE, env.worker_id):
        env.metrics.runs.labels(env.scope, job.job_id, RunStatus.SKIPPED_MISFIRE, msg.trigger_source).inc()
        late = (env.clock() - msg.scheduled_for).total_seconds()
        log.warning("run.skipped_misfire", late_sec=round(late, 3))
        await post_next(turn, missed=True)
        await drop(env, turn.delivery, DropReason.MISFIRE, job_id=job.job_id)
        await execution.publish_outcome(turn, RunStatus.SKIPPED_MISFIRE, None, None)
        return
    await drop(env, turn.delivery, DropReason.MISFIRE, job_id=job.job_id)


# -- 4-10 on an admitted message -------------------------------------------------------------------------------


async def serve(turn: Turn, confirmed: bool) -> bool:
    """Steps 4-10 on `turn.job`. An unconfirmed (cached) row is only acted on once step 4 has confirmed it:
    returns False, having done nothing, when it cannot be (it changed, or there is no handler for it here)."""
    env, job = turn.env, turn.job
    assert job is not None
    structlog.contextvars.bind_contextvars(job_id=job.job_id)
    turn.handler = env.registry.resolve(job.job_id, job.queue)
    if turn.handler is None:
        if confirmed:
            detail = f"this worker has no handler for queue {job.queue!r}"
            await park(env, turn.delivery, ParkReason.NO_HANDLER, detail)
        return confirmed
    turn.run = decisions.new_run(env.scope, job, turn.msg)
    ahead = await claim_ahead(turn, confirmed)  # the lead path (5-7 now, 4 and 8-10 at the slot)
    if ahead is not None:
        return ahead
    turn.lock = await take_lock(turn, confirm=not confirmed)  # 4
    try:
        if turn.lock.stale:
            env.jobs.forget(job.job_id)
            return False
        decision = await claim(turn)  # 5
        structlog.contextvars.bind_contextvars(run_id=str(turn.run.run_id))
        await _carry_out(turn, decision)  # 6-10
        return True
    finally:
        await release(turn)


async def _carry_out(turn: Turn, decision: Decision) -> None:
    if decision.action is Action.RUN:
        await _run(turn)
    elif decision.action in (Action.SKIP_LOCKED, Action.BUFFER):
        await _not_now(turn, decision)
    else:
        assert decision.action is Action.DROP, decision
        await _repair_chain(turn)
        await drop(turn.env, turn.delivery, decision.reason, job_id=turn.msg.job_id)


# -- 4. lock ---------------------------------------------------------------------------------------------------


async def take_lock(turn: Turn, confirm: bool) -> Lock:
    """One of the job's (or lock group's) `max_parallel` slots, held on the turn's connection for the whole run.
    The same round trip reads the job row's version (with `confirm`, a row that changed since it was read makes
    the lock `stale`, and nothing is claimed) and, the lock being free, does step 5's usual case: the run
    inserted as claimed (`claimed` says whether the slot was free)."""
    env, job, run = turn.env, turn.job, turn.run
    assert job is not None and run is not None
    needed = job.overlap != "allow_all"
    keys = run_lock_keys(job.scope, job.lock_name, job.max_parallel) if needed else []
    expected = job.version if confirm else None
    key, version, inserted = await runs.lock_and_claim(turn.conn, keys, needed, run, env.worker_id, expected)
    lock = Lock(key=key, needed=needed, stale=confirm and version != job.version)
    if lock.free and not lock.stale:
        lock.claimed = inserted
    return lock


async def release(turn: Turn) -> None:
    """Give the run lock back, if step 8's finish statement has not already."""
    lock = turn.lock
    if lock is None or lock.key is None:
        return
    key, lock.key = lock.key, None
    try:
        await unlock(turn.conn, key)
    except DB_ERRORS:
        spoil(turn.conn)  # the pool's full reset gives the lock back, or the connection is gone with it


# -- 5. claim --------------------------------------------------------------------------------------------------


async def claim(turn: Turn) -> Decision:
    """The slot is ours (RUN), skipped or buffered because the lock is taken, or a copy of a slot that already
    has a row: the decision for that row, with its conditional update (take over, promote, revive) done."""
    env, job, run, lock = turn.env, turn.job, turn.run, turn.lock
    assert job is not None and run is not None and lock is not None
    if lock.claimed:
        return await _in_turn(turn)
    if lock.claimed is None:  # every lock slot taken: the slot is buffered or skipped, if it has no row yet
        asks_buffer = job.overlap in decisions.BUFFERING and not turn.msg.wait_for_lock
        async with overlaps.buffer_guard(turn.conn, env.scope, job.job_id, asks_buffer):
            taken = asks_buffer and await _buffer_taken(turn)
            decision = decisions.when_locked(job.overlap, taken, turn.msg.wait_for_lock)
            status = RunStatus.BUFFERED if decision.action is Action.BUFFER else RunStatus.SKIPPED_LOCKED
            inserted = await runs.claim(turn.conn, run, status, env.worker_id)
        if inserted:
            if decision.reason == decisions.BUFFER_FULL:
                await overlaps.note_skip(turn.conn, run.run_id, _buffer_full(job.buffer_max))
            return decision
    row = await runs.existing(turn.conn, run)
    if row is None:  # the conflicting row vanished (pruned): treat as a duplicate
        return Decision(Action.DROP, DropReason.DUPLICATE.value)
    turn.existing = row
    turn.run = decisions.with_run_id(run, row.run_id)
    inflight = row.run_id in env.inflight
    alive = decisions.owner_check_needed(row, env.worker_id, inflight) and await runs.worker_alive(
        turn.conn, row.worker
    )
    earlier = (
        job.overlap == "buffer_all" and row.status is RunStatus.BUFFERED and lock.free
        and await overlaps.earlier_waiting(turn.conn, env.scope, job.job_id, row.scheduled_for)
    )  # fmt: skip
    decision = decisions.on_existing(
        row, turn.run, lock_free=lock.free, worker_id=env.worker_id, inflight=inflight, owner_alive=alive,
        now=env.clock(), grace_sec=decisions.wait_limit_sec(job, turn.msg), waits=turn.msg.wait_for_lock,
        earlier_waiting=earlier,
    )  # fmt: skip
    return await _update_existing(turn, decision)


async def _in_turn(turn: Turn) -> Decision:
    """A slot that took a free lock runs, unless (overlap=buffer_all) earlier slots wait: then it goes behind them,
    or, with buffer_max of them waiting, it is skipped as any slot beyond the bound is."""
    env, job, run = turn.env, turn.job, turn.run
    assert job is not None and run is not None
    if job.overlap == "cancel_other":
        for source in await overlaps.supersede_earlier(turn.conn, env.scope, job.job_id, run.scheduled_for):
            env.metrics.runs.labels(env.scope, job.job_id, RunStatus.SKIPPED_LOCKED, source).inc()
            log.info("run.superseded", by_slot=run.scheduled_for.isoformat())
        return Decision(Action.RUN)
    if job.overlap != "buffer_all" or not await overlaps.earlier_waiting(
        turn.conn, env.scope, job.job_id, run.scheduled_for
    ):
        return Decision(Action.RUN)
    async with overlaps.buffer_guard(turn.conn, env.scope, job.job_id, True):
        room = decisions.buffer_room(
            job.overlap, await overlaps.waiting(turn.conn, env.scope, job.job_id), job.buffer_max
        )
        why = None if room else _buffer_full(job.buffer_max)
        moved = await overlaps.behind(turn.conn, run.run_id, env.worker_id, why)
    if not moved:
        return Decision(Action.RUN)  # not ours to move (it cannot happen while we hold the lock): run it
    return Decision(Action.BUFFER, "waits_its_turn") if room else Decision(Action.SKIP_LOCKED, decisions.BUFFER_FULL)


def _buffer_full(buffer_max: int) -> str:
    return f"buffer full: {buffer_max} slots wait for the lock already (overlap=buffer_all)"


async def _buffer_taken(turn: Turn) -> bool:
    """Whether the job's buffer of waiting slots is full (decisions.buffer_room)."""
    job = turn.job
    assert job is not None
    if job.overlap == "buffer_all":
        count = await overlaps.waiting(turn.conn, turn.env.scope, job.job_id)
    else:
        count = int(await runs.has_waiter(turn.conn, turn.env.scope, job.job_id))
    return not decisions.buffer_room(job.overlap, count, job.buffer_max)


async def _update_existing(turn: Turn, decision: Decision) -> Decision:
    """The conditional update a decision on an existing row needs; a lost race turns it into a drop."""
    env, row, conn = turn.env, turn.existing, turn.conn
    assert row is not None and turn.job is not None
    if decision.action is Action.REVIVE:
        won = await runs.revive(conn, row.run_id, env.worker_id)
    elif decision.action is Action.PROMOTE:
        won = await runs.promote_buffered(conn, row.run_id, env.worker_id)
        if won and turn.job.overlap == "cancel_other":
            await overlaps.forget_finished_requests(conn, env.scope, turn.job.job_id)
    elif decision.action is Action.TAKE_OVER:
        won = await runs.take_over(conn, row.run_id, row.worker, env.worker_id)
        if won:
            log.warning("run.taken_over", run_id=str(row.run_id), dead_worker=row.worker)
    elif decision.action is Action.GIVE_UP:
        if await runs.resolve_buffered(conn, row.run_id, RunStatus.SKIPPED_LOCKED, "lock still taken after the grace"):
            env.metrics.runs.labels(env.scope, turn.job.job_id, RunStatus.SKIPPED_LOCKED, row.trigger_source).inc()
        return Decision(Action.DROP, decision.reason)
    else:
        return decision
    return Decision(Action.RUN, decision.reason) if won else decisions.lost_race(decision)


# -- 6. post next ----------------------------------------------------------------------------------------------


async def post_next(
    turn: Turn,
    start: bool = False,
    run_id: uuid.UUID | None = None,
    missed: bool = False,
    entered: tuple[int, bool] | None = None,
) -> None:
    """Chain messages only: publish the next slot (confirmed) before the run starts, so the cadence does not
    depend on the run's length and the chain survives a crash of the run. The run (`run_id`, by default the
    turn's) is recorded as having posted it; with `start`, the same statement marks the run running (step 8's
    first write, done here to save a round trip) and `turn.started_at` is set. The next slot is counted from the
    message's own slot while it is at most a few seconds late (`decisions.next_slot_after`: lag and clock skew lose
    no slot), else from now: slots jumped over (and the message's own, `missed`) go to the slot ledger
    (`shared.ledger`). `entered`:
    the chain lock is held already (see chain.extend)."""
    env, job, msg = turn.env, turn.job, turn.msg
    assert job is not None and turn.run is not None
    if not decisions.needs_next_slot(msg, job):
        if entered is not None:
            await unlock(turn.conn, chain_lock_key(job.scope, job.job_id))
        return
    now = env.clock()
    after = now if missed else decisions.next_slot_after(msg, now)  # a misfire goes on from now, no burst
    posted = await chain.extend(
        turn.conn, env.publisher, job, job.epoch, after, now,
        run_id=run_id or turn.run.run_id,
        start_worker=env.worker_id if start else None,
        fire_at=decisions.fire_time(job, msg),
        run_slot=execution.run_slot(turn),
        entered=entered,
    )  # fmt: skip
    if posted is None:
        log.info("chain.not_extended", reason="epoch_changed")
        return
    if start:
        turn.started_at = posted.run_started_at
    # -- slot ledger: a pure check; only a gap costs a statement
    if catchup.gap_after(job.schedule, msg.scheduled_for, after, missed):
        await ledger.late_message(
            turn.conn,
            env.publisher,
            env.metrics,
            env.worker_id,
            job,
            job.epoch,
            msg.scheduled_for,
            now,
            missed,
            upto=after,
        )


async def _repair_chain(turn: Turn) -> None:
    """A dropped copy of a slot that must still carry the chain on (decisions.chain_repair)."""
    assert turn.job is not None
    repair = decisions.chain_repair(turn.msg, turn.job, turn.existing)
    if repair is ChainRepair.NONE:
        return
    assert turn.existing is not None
    if repair is ChainRepair.CARRY_OVER:
        log.info("chain.carried_over", slot_run_epoch=turn.existing.epoch)
    await post_next(turn, run_id=turn.existing.run_id)


async def _not_now(turn: Turn, decision: Decision) -> None:
    """Every lock slot is taken: the slot is skipped (recorded) or buffered; either way the chain goes on."""
    env, job, msg = turn.env, turn.job, turn.msg
    assert job is not None
    buffered = decision.action is Action.BUFFER
    outcome = Contention.BUFFERED if buffered else Contention.SKIPPED
    env.metrics.lock_contention.labels(env.scope, job.job_id, outcome.value).inc()
    if turn.existing is None:
        await post_next(turn)
    if decisions.asks_cancel(job.overlap, decision):
        assert turn.run is not None
        reason = f"slot {msg.scheduled_for.isoformat()} of the job needed the lock (overlap=cancel_other)"
        run_id, slot = turn.run.run_id, msg.scheduled_for
        asked = await overlaps.request_cancel(turn.conn, env.scope, job.job_id, run_id, reason, slot)
        log.info("run.cancel_requested", cancelled_run=None if asked is None else str(asked))
        if asked is None and await overlaps.later_slot_runs(turn.conn, env.scope, job.job_id, slot):
            await _superseded(turn)
            return
    if buffered:
        delay = decisions.buffer_poll_delay(job, env.rng())
        await env.publisher.to_retry(msg, delay)
        log.info("run.buffered", retry_in_sec=round(delay, 3))
    else:
        env.metrics.runs.labels(env.scope, job.job_id, RunStatus.SKIPPED_LOCKED, msg.trigger_source).inc()
        log.info("run.skipped_locked")
    await turn.delivery.ack()
    if not buffered and turn.existing is None:
        await execution.publish_outcome(turn, RunStatus.SKIPPED_LOCKED, None, None)


async def _superseded(turn: Turn) -> None:
    """A waiting slot of a cancel_other job whose lock a later slot holds: it never stops the later one; it is
    skipped (skipped_locked, overlaps.SUPERSEDED) and its message acked. Its chain went on when it was first
    buffered."""
    env, job, run = turn.env, turn.job, turn.run
    assert job is not None and run is not None
    if await runs.resolve_buffered(turn.conn, run.run_id, RunStatus.SKIPPED_LOCKED, overlaps.SUPERSEDED):
        env.metrics.runs.labels(env.scope, job.job_id, RunStatus.SKIPPED_LOCKED, turn.msg.trigger_source).inc()
        log.info("run.superseded")
        await turn.delivery.ack()
        await execution.publish_outcome(turn, RunStatus.SKIPPED_LOCKED, None, None)
        return
    await drop(env, turn.delivery, DropReason.ALREADY_DONE, job_id=job.job_id)


# -- 6-10 for a claimed slot -----------------------------------------------------------------------------------


async def _run(turn: Turn) -> None:
    env, run = turn.env, turn.run
    assert run is not None
    env.inflight.add(run.run_id)
    try:
        slot = slot_ahead(turn)  # a copy of a slot, early: the handler still starts at the slot
        try:
            if turn.existing is None or turn.existing.next_posted_for is None:
                await post_next(turn, start=slot is None)  # 6
        except BaseException as exc:
            await give_claim_back(env, run.run_id, exc)
            raise
        await ack_claimed(turn.delivery)  # 7: before running, so a long run never meets the consumer timeout
        if slot is not None:
            await lead.sleep_until(slot, env.clock)
        result = await execution.run_and_record(turn)  # 8, and 10's release
    finally:
        env.inflight.discard(run.run_id)
    await execution.retry_if_due(turn, result)  # 9
    await execution.publish_outcome(turn, result.status, result.duration_ms, result.error)  # 10


HAND_BACK_RETRY_CAP_SEC = 5.0  # a claim waiting to be given back is asked again at least this often


async def unclaim(env: Env, run_id: uuid.UUID) -> bool:
    """The slot is claimed but the next slot could not be posted: the message goes back to the queue. Give the
    claim up (best effort, on a fresh connection) so the copy takes the slot over wherever it lands; kept by a
    live worker, the claim would block the slot for good (its copy is dropped as a duplicate of a live owner).
    True when the claim was given up."""
    with contextlib.suppress(Exception):
        return await _release_claim(env, run_id)
    return False


async def give_claim_back(env: Env, run_id: uuid.UUID, failure: BaseException) -> bool:
    """Give up a claim whose message goes back to the queue after `failure`. When PostgreSQL is the failure, wait
    for it (back-off) before the message goes back: a copy that found the claim still this live worker's would be
    dropped as a duplicate, and the slot would never run. A worker that stops (cancelled) tries once: the watchdog
    abandons the claims of a stopped worker."""
    return await release_claim(env, run_id, wait=isinstance(failure, (*DB_ERRORS, OSError, TimeoutError)))


async def release_claim(env: Env, run_id: uuid.UUID, wait: bool) -> bool:
    """Give the claim up: with `wait`, retried with back-off until PostgreSQL answers; else one try (`unclaim`).
    True when it was given up."""
    if wait:
        return await backoff.forever(
            "give a claim back", lambda: _release_claim(env, run_id), cap_sec=HAND_BACK_RETRY_CAP_SEC,
            event="run.hand_back_waiting", run_id=str(run_id),
        )  # fmt: skip
    return await unclaim(env, run_id)


async def _release_claim(env: Env, run_id: uuid.UUID) -> bool:
    async with env.pool.acquire(timeout=5) as conn:
        return await runs.release_claim(conn, run_id, env.worker_id)


async def ack_claimed(delivery: Delivery) -> None:
    """Ack a message whose slot is claimed (row and lock are ours, the next slot posted). If the channel is gone,
    RabbitMQ requeues the message and its copy is dropped as a duplicate wherever it lands (the row belongs to a
    live worker): the run goes on, since the row and the lock, not the message, are its record."""
    try:
        await delivery.ack()
    except AMQP_ERRORS as exc:
        log.warning("message.ack_failed", error=describe(exc))


# -- the lead path (shared.lead) -------------------------------------------------------------------------------


def slot_ahead(turn: Turn) -> datetime | None:
    """When the handler of an early chain message starts (its fire time), or None: not early (see lead.wait_sec)."""
    env, job, msg = turn.env, turn.job, turn.msg
    assert job is not None
    if not decisions.needs_next_slot(msg, job):
        return None
    fire_at = decisions.fire_time(job, msg)
    return None if lead.wait_sec(fire_at, env.clock(), env.dispatch_lead_sec) is None else fire_at


async def claim_ahead(turn: Turn, confirmed: bool) -> bool | None:
    """Steps 5-7 in the lead: claim the slot without the run lock (confirming a cached row in the same
    statement), post the next slot, ack; steps 4 and 8-10 are left for the slot (`at_slot`). None when the message
    goes the ordinary way (not early, or the slot already has a row); False when the cached row changed."""
    env, job, run = turn.env, turn.job, turn.run
    assert job is not None and run is not None
    fire_at = slot_ahead(turn)
    if fire_at is None:
        return None
    if not decisions.claims_ahead(job.overlap):
        await lead.sleep_until(fire_at, env.clock)  # the ordinary way, at the slot
        return None
    expected = None if confirmed else job.version
    key = chain_lock_key(job.scope, job.job_id)
    ahead = await runs.claim_and_enter_chain(turn.conn, run, env.worker_id, key, expected)  # 5, and 6's chain lock
    if not confirmed and ahead.version != job.version:
        env.jobs.forget(job.job_id)
        return False
    if not ahead.claimed:
        return None
    structlog.contextvars.bind_contextvars(run_id=str(run.run_id))
    await claimed_ahead(turn, fire_at, lambda: post_next(turn, entered=ahead.chain or (-1, False)))
    return True


async def claimed_ahead(turn: Turn, fire_at: datetime, post: Callable[[], Awaitable[object]]) -> None:
    """Steps 6 and 7 of a slot claimed ahead (`post`: the next slot's post), then the hand-off to the slot. A post
    that fails gives the claim up, so the message's copy takes the slot over wherever it lands."""
    env, run = turn.env, turn.run
    assert run is not None
    env.inflight.add(run.run_id)  # a copy that lands here meanwhile is a duplicate of a live claim
    try:
        await post()  # 6
    except BaseException as exc:
        env.inflight.discard(run.run_id)
        await give_claim_back(env, run.run_id, exc)
        raise
    await ack_claimed(turn.delivery)  # 7
    await at_slot(turn, fire_at)


def batchable(env: Env, msg: JobMessage, job: JobRow | None, queue: str) -> datetime | None:
    """The fire time of a message that takes the lead path in a batch (shared.lead_batch): a chain message, early or
    due (late ones too, within the misfire grace: claimed with the others, they start at once), of a job this
    worker read before and serves, that would pass steps 2 and 3 unchanged and claims ahead. None: it goes the way
    of one message."""
    now = env.clock()
    if env.lead_batch is None or job is None or not decisions.usable_cached(job, msg, queue, now):
        return None
    if decisions.misfired(job, msg, now) or not decisions.needs_next_slot(msg, job):
        return None
    if not decisions.claims_ahead(job.overlap) or env.registry.resolve(job.job_id, job.queue) is None:
        return None
    fire_at = decisions.fire_time(job, msg)
    return None if lead.batch_wait_sec(fire_at, now, env.dispatch_lead_sec) is None else fire_at


async def claim_batched(env: Env, delivery: Delivery, msg: JobMessage) -> bool:
    """`claim_ahead` for a cached row, its claim (and chain lock) sent with those of the messages that arrived with
    it and its post recorded with theirs. False, having changed nothing, when the message is not for this path,
    the row changed or the slot has a row already: it then goes the way of one message (which reads the row
    again, or finds the slot's row)."""
    job = env.jobs.get(msg.job_id)
    fire_at = batchable(env, msg, job, delivery.queue)
    if fire_at is None or env.lead_batch is None:
        return False
    assert job is not None
    run = decisions.new_run(env.scope, job, msg)
    key = chain_lock_key(job.scope, job.job_id)
    linger = lead.claim_linger_sec(fire_at, env.clock(), env.dispatch_lead_sec, env.claim_linger_sec)
    if delivery.handler_done is not None:  # no handler runs before the slot, where the run takes a place of its
        delivery.handler_done()  # own: a claim (lingering for company) holds none of the WORKER_CONCURRENCY
    ahead, hold = await env.lead_batch.claim(AheadClaim(run, key, job.version), linger)  # 5, and 6's chain lock
    if ahead.version != job.version:
        env.jobs.forget(job.job_id)
    if hold is None:
        if delivery.take_place is not None:
            await delivery.take_place()  # the way of one message after all: its handler may run on this delivery
        return False
    structlog.contextvars.bind_contextvars(job_id=job.job_id, run_id=str(run.run_id))
    turn = Turn(env, delivery, msg, hold.conn, job=job, handler=env.registry.resolve(job.job_id, job.queue), run=run)
    await claimed_ahead(turn, fire_at, lambda: _post_held(turn, hold, ahead.chain))
    return True


async def _post_held(turn: Turn, hold: Hold, entered: tuple[int, bool] | None) -> None:
    """Step 6 of a slot claimed in a batch: the next slot posted under the chain lock its batch holds (`hold`),
    recorded with the posts confirmed with it; the gap behind a late message written to the ledger."""
    env, job, msg, run = turn.env, turn.job, turn.msg, turn.run
    assert job is not None and run is not None
    now = env.clock()
    after = decisions.next_slot_after(msg, now)
    posted = await chain.extend_held(hold, env.publisher, job, job.epoch, after, now, run.run_id, run.scheduled_for,
                                     entered)  # fmt: skip
    if posted is None:
        log.info("chain.not_extended", reason="epoch_changed")
    elif catchup.gap_after(job.schedule, msg.scheduled_for, after, False):
        async with env.pool.acquire() as conn:
            await ledger.late_message(
                conn, env.publisher, env.metrics, env.worker_id, job, job.epoch, msg.scheduled_for, now, False,
                upto=after,
            )  # fmt: skip


async def at_slot(turn: Turn, fire_at: datetime) -> None:
    """Steps 4 and 8-10 of a slot claimed ahead, at `fire_at`: in the background when the worker runs them there
    (`env.run_later`), else here."""
    later = AtSlot(turn, fire_at)
    if turn.env.run_later is None:
        await later.wait()
        await later.work(lambda: None)
    else:
        turn.env.run_later(later.wait, later.work)


class AtSlot:
    """The part of a run claimed ahead that happens at its slot, on a connection of its own."""

    def __init__(self, turn: Turn, fire_at: datetime) -> None:
        self.turn = turn
        self.fire_at = fire_at

    async def wait(self) -> None:
        """Until the slot; a worker that stops meanwhile hands the slot back."""
        try:
            await self.turn.env.gates.until(self.fire_at, self.turn.env.clock)
        except asyncio.CancelledError:
            await self.hand_back("the worker stopped before the slot")
            assert self.turn.run is not None
            self.turn.env.inflight.discard(self.turn.run.run_id)
            raise

    async def work(self, handler_done: Callable[[], None]) -> None:
        """Step 4 and the start in one statement, then 8-10; the lock still taken: skipped or buffered.
        `handler_done`: called once the handler returned (see `Turn.handler_done`)."""
        turn, env = self.turn, self.turn.env
        assert turn.run is not None
        turn.handler_done = handler_done
        started = False
        try:
            if env.slot_batch is None:
                async with env.pool.acquire() as conn:
                    turn.conn = conn
                    started = await self._lock_and_start()
                    await self._at_slot(started)
                    left_tidy(conn)
            else:
                shift, started = await self._lock_and_start_with_others(env.slot_batch)
                tidy = False
                try:
                    await self._at_slot(started)
                    tidy = True
                finally:
                    await shift.leave(tidy)
        except asyncio.CancelledError:
            if not started:
                await self.hand_back("the worker stopped at the slot")
            raise
        except (*DB_ERRORS, *AMQP_ERRORS) as exc:
            log.warning("dependency.unavailable", dependency=getattr(classify(exc), "value", None), error=describe(exc))
            if not started:
                await self.hand_back("a dependency failed at the slot", wait_for_database=True)
        finally:
            env.inflight.discard(turn.run.run_id)
            structlog.contextvars.clear_contextvars()

    async def _at_slot(self, started: bool) -> None:
        turn = self.turn
        try:
            if started:
                await self._run()
            elif turn.lock is not None and turn.lock.needed and turn.lock.key is None:
                await locked_at_slot(turn)
            else:
                log.warning("run.claim_lost_before_slot")
        finally:
            await release(turn)

    async def _lock_and_start_with_others(self, batch: SlotBatch) -> tuple[Shift, bool]:
        """`_lock_and_start` in one statement with the runs starting with this one, on their shared session
        (shared.slot_batch), which becomes this run's connection."""
        turn, job, run = self.turn, self.turn.job, self.turn.run
        assert job is not None and run is not None
        needed = job.overlap != "allow_all"
        keys = run_lock_keys(job.scope, job.lock_name, job.max_parallel) if needed else []
        shift, key, started = await batch.start(SlotStart(run.run_id, run.scheduled_for, keys, needed, self.fire_at))
        turn.conn = cast(asyncpg.Connection, shift)
        turn.lock = Lock(key=key, needed=needed, claimed=True)
        turn.started_at = started
        return shift, started is not None

    async def _lock_and_start(self) -> bool:
        turn, env, job, run = self.turn, self.turn.env, self.turn.job, self.turn.run
        assert job is not None and run is not None
        needed = job.overlap != "allow_all"
        keys = run_lock_keys(job.scope, job.lock_name, job.max_parallel) if needed else []
        key, started = await runs.lock_and_start(turn.conn, keys, needed, run, env.worker_id, self.fire_at)
        turn.lock = Lock(key=key, needed=needed, claimed=True)
        turn.started_at = started
        return started is not None

    async def _run(self) -> None:
        turn = self.turn
        result = await execution.run_and_record(turn)  # 8, and 10's release
        await execution.retry_if_due(turn, result)  # 9
        await execution.publish_outcome(turn, result.status, result.duration_ms, result.error)  # 10

    async def hand_back(self, why: str, wait_for_database: bool = False) -> None:
        """This worker cannot start the slot it claimed: give the claim up, then put the message back on the work
        queue, so whichever worker gets it takes the slot over. Only once the claim is given up: a copy that found
        the claim still this live worker's would be dropped as a duplicate, and the slot would never run.

        `wait_for_database` (a dependency failed at the slot, the worker goes on): giving the claim up is retried
        with back-off until PostgreSQL answers. A worker that stops tries once; if that fails, no copy: the
        watchdog abandons the claim of a stopped worker and publishes its retry."""
        turn, env = self.turn, self.turn.env
        assert turn.job is not None and turn.run is not None
        run_id = turn.run.run_id
        log.warning("run.handed_back", reason=why)
        if not await release_claim(env, run_id, wait=wait_for_database):
            log.warning("run.hand_back_left_to_watchdog", reason="the claim could not be given up")
            return
        with contextlib.suppress(Exception):
            await asyncio.shield(env.publisher.to_work(turn.job.queue, turn.msg))


async def locked_at_slot(turn: Turn) -> None:
    """A slot claimed ahead whose lock is taken at the slot: skipped or buffered as step 5 decides for a slot
    without a row (the next slot is already posted)."""
    env, job, msg, run = turn.env, turn.job, turn.msg, turn.run
    assert job is not None and run is not None
    taken = job.overlap == "buffer_one" and await runs.has_waiter(turn.conn, env.scope, job.job_id)
    decision = decisions.when_locked(job.overlap, taken, msg.wait_for_lock)
    buffered = decision.action is Action.BUFFER
    status = RunStatus.BUFFERED if buffered else RunStatus.SKIPPED_LOCKED
    if not await runs.resolve_claim(turn.conn, run, env.worker_id, status):
        log.warning("run.claim_lost_before_slot")
        return
    outcome = Contention.BUFFERED if buffered else Contention.SKIPPED
    env.metrics.lock_contention.labels(env.scope, job.job_id, outcome.value).inc()
    if buffered:
        delay = decisions.buffer_poll_delay(job, env.rng())
        await env.publisher.to_retry(msg, delay)
        log.info("run.buffered", retry_in_sec=round(delay, 3))
        return
    env.metrics.runs.labels(env.scope, job.job_id, RunStatus.SKIPPED_LOCKED, msg.trigger_source).inc()
    log.info("run.skipped_locked")
    await execution.publish_outcome(turn, RunStatus.SKIPPED_LOCKED, None, None)
