"""The run decisions of the protocol as pure functions: plain data in (the message, the job row, what the claim
statement found, the clock), a named decision out. No I/O here; `shared.protocol` gathers the facts, asks, and
does what the decision says. tests/unit/test_decisions.py names every branch.

    screen          step 1: a message for another scope, or asking for what the design does not do: park
    rearm           step 1: a re-arm hop that arrived before its slot: post it again, run nothing
    admit           step 2-3: park, drop, expire, skip as misfire, wait for a reseed to commit, or go on
    when_locked     step 4: every lock slot taken: skip the slot or buffer it
    on_existing     step 5: the slot already has a row: drop, take over, promote, revive, buffer, give up
    chain_repair    after a drop: does the chain still need this message to post the next slot?
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from shared import schedule
from shared.messages import JobMessage
from shared.store.jobs import JobRow
from shared.store.runs import NewRun, RunRow
from shared.vocabulary import OWNED, REVIVABLE, DropReason, ParkReason, RunStatus, TriggerSource


class Action(StrEnum):
    """What the protocol does next with a message."""

    PROCEED = "proceed"  # go on to the next step
    PARK = "park"  # to the parking queue with `reason`; ack
    DROP = "drop"  # ack without a run, counted under `reason`
    EXPIRE = "expire"  # record the run as expired, then drop
    SKIP_MISFIRE = "skip_misfire"  # record skipped_misfire, post the next slot from now, drop
    REREAD = "reread"  # the message is of an epoch the row has not reached: wait for the reseed, read again
    SKIP_LOCKED = "skip_locked"  # record skipped_locked, post the next slot, ack
    BUFFER = "buffer"  # back off through the retry queue until the lock is free
    RUN = "run"  # the slot is ours: post the next slot, ack, run
    REARM = "rearm"  # a hop of a slot beyond the TTL ceiling, still ahead: post it again (no run), ack
    TAKE_OVER = "take_over"  # the owner of a claimed/running row is dead: adopt the row, then run
    PROMOTE = "promote"  # a buffered slot whose lock came free: claim it, then run
    REVIVE = "revive"  # backfill of a slot that was skipped or expired: claim it, then run
    GIVE_UP = "give_up"  # a buffered slot still locked after the grace: record skipped_locked, drop


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str = ""  # a DropReason / ParkReason value, or the branch taken (for the log)
    detail: str = ""  # for parking: the human-readable why


PROCEED = Decision(Action.PROCEED)


def _drop(reason: DropReason) -> Decision:
    return Decision(Action.DROP, reason.value)


# -- facts derived from plain data -------------------------------------------------------------------------------


def runs_when_paused(msg: JobMessage) -> bool:
    """A paused job still runs what an operator asks for by hand (run-now, backfill, a hand-published message)
    and the retries of run-now; chain, startup and event messages, and retries of chain runs, wait for `resume`."""
    if msg.trigger_source is TriggerSource.MANUAL:
        return True
    return msg.trigger_source is TriggerSource.RETRY and msg.epoch is None


def misfired(job: JobRow, msg: JobMessage, now: datetime) -> bool:
    """A chain message later than the job's grace (plus its jitter: the jitter is intended delay)."""
    return msg.is_chain and schedule.is_misfire(msg.scheduled_for, now, job.misfire_grace_sec + job.jitter_sec)


def fire_time(job: JobRow, msg: JobMessage) -> datetime:
    """When the message was meant to start the handler: a chain slot plus the job's deterministic jitter (an
    intended spread), else the slot itself. Lateness is handler start minus this, in the run row, the
    `scheduler_start_lateness_seconds` metric and the `run.finished` log line alike."""
    if msg.is_chain:
        return msg.scheduled_for + schedule.slot_jitter(job.job_id, msg.scheduled_for, job.jitter_sec)
    return msg.scheduled_for


def lateness(started: datetime, fire_at: datetime) -> timedelta:
    """Handler start minus intended fire time (negative when a run starts early, e.g. a clock ahead)."""
    return started - fire_at


def is_backfill(run: NewRun) -> bool:
    """A manual message for a slot of the chain (it carries an epoch): `backfill` sends these."""
    return run.trigger_source == TriggerSource.MANUAL.value and run.epoch is not None and run.attempt == 1


def new_run(scope: str, job: JobRow, msg: JobMessage) -> NewRun:
    """The run a message asks for. Slot messages (they carry an epoch) get a run_id derived from the slot, so
    every copy of one slot claims the same row; other messages bring their own run_id."""
    if msg.epoch is not None:
        run_id = schedule.derive_run_id(scope, job.job_id, msg.epoch, msg.scheduled_for, msg.attempt)
    else:
        run_id = msg.run_id
    return NewRun(
        run_id=run_id,
        scope=scope,
        job_id=job.job_id,
        epoch=msg.epoch,
        trigger_source=msg.trigger_source.value,
        scheduled_for=msg.scheduled_for,
        attempt=msg.attempt,
        params=msg.params,
        upstream_run_id=msg.upstream_run_id,
    )


def usable_cached(job: JobRow | None, msg: JobMessage, queue: str, now: datetime) -> bool:
    """Whether a row read for an earlier message lets this message through `admit` unchanged: a chain message of
    the row's epoch, for an enabled job served by this queue, not expired. Still unconfirmed until step 4."""
    if job is None or not msg.is_chain:
        return False
    return job.epoch == msg.epoch and job.enabled and job.queue == queue and not msg.is_expired(now)


# -- the decisions ---------------------------------------------------------------------------------------------


def screen(msg: JobMessage, scope: str) -> Decision:
    """Step 1, on the message alone: one for another scope is parked; so is one that carries `next_delay_sec` (the
    seed's "repost after N seconds"): a job's next slot is its schedule's, and running the message as if its delay
    had been honoured would hide that from whoever sent it."""
    if msg.scope is not None and msg.scope != scope:
        detail = f"message scope {msg.scope!r}, worker scope {scope!r}"
        return Decision(Action.PARK, ParkReason.WRONG_SCOPE.value, detail)
    if msg.next_delay_sec is not None:
        detail = (
            f"next_delay_sec={msg.next_delay_sec:g} is not honoured: job {msg.job_id!r} runs on its own schedule "
            "(cron_expr or interval_seconds); change that with `set`, and publish without next_delay_sec"
        )
        return Decision(Action.PARK, ParkReason.NEXT_DELAY.value, detail)
    return PROCEED


def rearm(msg: JobMessage, now: datetime, lead_sec: float = 0.0) -> Decision:
    """Step 1 too: a chain message posted as a re-arm hop (its slot's fire time lay beyond the per-message TTL
    ceiling) that arrives while its fire time (less the dispatch lead it is posted with) is still ahead goes back
    to the delay queue for another hop, with no run and no run row; one arriving at or after it is the slot itself
    and goes on. Only chain messages hop."""
    if msg.rearm_at is not None and msg.is_chain and now < msg.rearm_at - timedelta(seconds=lead_sec):
        return Decision(Action.REARM, "ahead")
    return PROCEED


def admit(job: JobRow | None, msg: JobMessage, queue: str, scope: str, now: datetime, reread: bool) -> Decision:
    """Steps 2 and 3: what a message may do given its job row (None: no such job) as read now. `reread` is True
    once the row was read again after waiting for a reseed (an epoch ahead of the row then means stale)."""
    if job is None:
        return Decision(Action.PARK, ParkReason.UNKNOWN_JOB.value, f"no job {msg.job_id!r} in scope {scope!r}")
    if msg.epoch is not None and msg.epoch > job.epoch and not reread:
        # the reseed that posted this message has not committed yet (a short delay expired before it did)
        return Decision(Action.REREAD, "epoch_ahead")
    if job.queue != queue:
        return Decision(
            Action.PARK, ParkReason.WRONG_QUEUE.value, f"job {job.job_id!r} is served by queue {job.queue!r}"
        )
    if not job.enabled and not runs_when_paused(msg):
        return _drop(DropReason.DISABLED)  # the chain ends here; resume reseeds
    if msg.epoch is not None and msg.epoch != job.epoch:
        return _drop(DropReason.STALE_EPOCH)
    if msg.is_expired(now):
        return Decision(Action.EXPIRE, DropReason.EXPIRED.value)
    if misfired(job, msg, now):
        return Decision(Action.SKIP_MISFIRE, DropReason.MISFIRE.value)
    return PROCEED


BUFFERING = frozenset({"buffer_one", "buffer_all", "cancel_other"})


def claims_ahead(overlap: str) -> bool:
    """Whether an early chain message of a job with this overlap policy is claimed in the lead (shared.lead). The
    buffering policies decide under their buffer guard, in slot order, who waits and whom to cancel: an early
    message of theirs waits for its slot and then goes the ordinary way, so those decisions are taken at the slot."""
    return overlap not in BUFFERING


"""Overlap policies under which a slot that finds the lock taken waits for it (buffered) rather than skipping."""
BUFFER_FULL = "buffer_full"
CANCEL_REQUESTED = "cancel_requested"


def buffer_room(overlap: str, waiting: int, buffer_max: int) -> bool:
    """Whether one more slot may wait: `buffer_all` keeps up to `buffer_max` waiting slots per job, `buffer_one`
    and `cancel_other` one (the slot that will replace the cancelled run)."""
    return waiting < (buffer_max if overlap == "buffer_all" else 1)


def when_locked(overlap: str, buffer_taken: bool, wait_for_lock: bool = False) -> Decision:
    """Step 4 with every lock slot taken (and the slot without a row): a run asked for with `run-now --queue`
    waits for the lock; `buffer_one`, `buffer_all` and `cancel_other` keep slots waiting per job until their
    buffer is full (`buffer_taken`, see `buffer_room`), `cancel_other` asking the run in the way to stop;
    otherwise the slot is skipped and the chain goes on."""
    if wait_for_lock:
        return Decision(Action.BUFFER, "queued")
    if overlap in BUFFERING and not buffer_taken:
        return Decision(Action.BUFFER, CANCEL_REQUESTED if overlap == "cancel_other" else "lock_busy")
    if overlap == "buffer_all":
        return Decision(Action.SKIP_LOCKED, BUFFER_FULL)
    return Decision(Action.SKIP_LOCKED, "lock_busy")


def asks_cancel(overlap: str, decision: Decision) -> bool:
    """Whether a slot left waiting for the lock asks the job's run in its way to stop (again: every poll asks,
    so a request the running worker missed is repeated)."""
    return overlap == "cancel_other" and decision.action is Action.BUFFER


def wait_limit_sec(job: JobRow, msg: JobMessage) -> float:
    """How long a waiting (buffered) run may wait for the lock before it gives up: the misfire grace for a slot of
    the schedule; for a run queued by hand, long enough for the run in its way to time out, plus the grace."""
    if msg.wait_for_lock:
        return job.timeout_sec + job.misfire_grace_sec
    return job.misfire_grace_sec


def owner_check_needed(row: RunRow, worker_id: str, inflight: bool) -> bool:
    """Whether `on_existing` needs to know if the row's owner is alive: only for a claimed or running row that is
    not this worker's own leftover (a row this worker claimed but is no longer running: it died half-way)."""
    return row.status in OWNED and not _mine_left_over(row, worker_id, inflight)


def _mine_left_over(row: RunRow, worker_id: str, inflight: bool) -> bool:
    return row.worker == worker_id and not inflight


def on_existing(
    row: RunRow,
    run: NewRun,
    *,
    lock_free: bool,
    worker_id: str,
    inflight: bool,
    owner_alive: bool,
    now: datetime,
    grace_sec: float,
    waits: bool = False,
    earlier_waiting: bool = False,
) -> Decision:
    """Step 5 when the slot (or run id) already has a row. `inflight`: this worker is running that row now;
    `owner_alive`: the row's worker is alive (asked only when `owner_check_needed`); `waits`: the message waits
    for the lock (a catch-up run, shared.ledger: it buffers until the lock is free or it expires);
    `earlier_waiting`: an earlier slot of the job waits too (overlap=buffer_all runs its waiting slots in slot
    order)."""
    if row.status in REVIVABLE and is_backfill(run):
        if lock_free:
            return Decision(Action.REVIVE, "backfill_revived")
        if waits:
            return Decision(Action.BUFFER, "catchup_waits")
    if row.status.terminal:
        return _drop(DropReason.ALREADY_DONE)
    if row.status is RunStatus.BUFFERED:
        if lock_free and not earlier_waiting:
            return Decision(Action.PROMOTE, "buffered_ran")
        if schedule.is_misfire(row.scheduled_for, now, grace_sec):
            return Decision(Action.GIVE_UP, DropReason.BUFFER_GAVE_UP.value)
        return Decision(Action.BUFFER, "waits_its_turn" if lock_free else "still_locked")
    # claimed or running: a copy of a slot someone else is on, unless that someone is gone
    if not _mine_left_over(row, worker_id, inflight) and owner_alive:
        return _drop(DropReason.DUPLICATE)
    if lock_free:
        return Decision(Action.TAKE_OVER, "taken_over")
    return _drop(DropReason.OWNER_DEAD_LOCK_BUSY)  # the watchdog marks it abandoned


def lost_race(decision: Decision) -> Decision:
    """What a REVIVE, PROMOTE or TAKE_OVER becomes when its conditional update changed no row (another worker
    won the row first)."""
    if decision.action is Action.REVIVE:
        return _drop(DropReason.ALREADY_DONE)
    if decision.action is Action.PROMOTE:
        return _drop(DropReason.DUPLICATE)
    if decision.action is Action.TAKE_OVER:
        return _drop(DropReason.OWNER_DEAD_LOCK_BUSY)
    return decision


class ChainRepair(StrEnum):
    NONE = "none"
    CARRY_OVER = "carry_over"  # a current-epoch message whose slot an older epoch took: it carries the chain on
    REPOST = "repost"  # the slot's run finished without posting the next slot (it died first): post it now


def chain_repair(msg: JobMessage, job: JobRow, row: RunRow | None) -> ChainRepair:
    """After a dropped copy of a slot: whether this message must still post the next slot. A chain message of the
    current epoch whose slot was taken by a run of an older epoch (a reseed raced a message of the old chain for
    the same slot) carries the live chain, or the chain would end here; a finished run of this epoch that never
    recorded its next slot died before posting it. Should two copies both post, the later one is a duplicate."""
    if row is None or not msg.is_chain:
        return ChainRepair.NONE
    if msg.epoch == job.epoch and row.epoch is not None and row.epoch < job.epoch:
        return ChainRepair.CARRY_OVER
    if row.status.terminal and row.next_posted_for is None and row.epoch == job.epoch:
        return ChainRepair.REPOST
    return ChainRepair.NONE


def needs_next_slot(msg: JobMessage, job: JobRow) -> bool:
    """Step 6 applies: chain messages of a job with a chain (reschedule_mode = queue, a schedule)."""
    return msg.is_chain and job.has_chain


# How late a chain message may be (as this worker's clock sees it) and still have the chain go on from its own slot.
# It covers delivery lag and the clock skew between the worker that set the message's TTL and the one running it
# (a TTL is counted on the publisher's clock, lateness on the consumer's): 2 s ahead on one and 2 s behind on the
# other make an on-time message look 4 s late.
CHAIN_CATCH_UP_SEC = 5.0


def next_slot_after(msg: JobMessage, now: datetime, catch_up_sec: float = CHAIN_CATCH_UP_SEC) -> datetime:
    """Step 6: the next slot is the first one after this. While the message is at most `catch_up_sec` late, its
    own slot: the schedule's grid goes on and every slot is posted (one already due fires at once and runs, or is
    skipped by a policy with a row), so a few seconds of lag or skew lose no slot. Later than that, now: the
    slots missed meanwhile are not run in a burst (a message later than its misfire grace never gets here)."""
    return max(msg.scheduled_for, now - timedelta(seconds=catch_up_sec))


def buffer_poll_delay(job: JobRow, rand: float) -> float:
    """How long a buffered slot waits before asking for the lock again: a fifth of the period, 0.2-2 s."""
    plan = job.schedule
    period = schedule.period_estimate(plan).total_seconds() if plan is not None else 10.0
    return min(2.0, max(0.2, period / 5)) * (0.75 + rand / 2)


def with_run_id(run: NewRun, run_id: uuid.UUID) -> NewRun:
    """`run` under the run id of the row it matched (a slot claimed under another epoch's id)."""
    return NewRun(
        run_id=run_id,
        scope=run.scope,
        job_id=run.job_id,
        epoch=run.epoch,
        trigger_source=run.trigger_source,
        scheduled_for=run.scheduled_for,
        attempt=run.attempt,
        params=run.params,
        upstream_run_id=run.upstream_run_id,
        origin_run_id=run.origin_run_id,
    )
