"""The one vocabulary of outcomes: run statuses, trigger sources, and why a message was dropped, parked or a
chain reseeded. Code, SQL (passed as parameters, never spelled in a statement), metric labels, logs and the
docs use these values and nothing else.

`TRANSITIONS` is the run-status state machine: which status a run row may move to from which. The store's
statements only ever make these moves (tests/unit/test_vocabulary.py holds each statement to it).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class TriggerSource(StrEnum):
    """What asked for a run."""

    SCHEDULER = "scheduler"  # the job's chain
    MANUAL = "manual"  # run-now, backfill, a hand-published message
    RETRY = "retry"  # the next attempt of a slot or a manual run
    STARTUP = "startup"  # run_on_startup: once per boot of the service
    EVENT = "event"  # an event on a topic the job subscribes to (triggers_on), an upstream success (on_success)


class RunStatus(StrEnum):
    """The status of a row of `scheduler.job_runs`."""

    CLAIMED = "claimed"  # the slot is ours; the handler has not started
    BUFFERED = "buffered"  # overlap=buffer_one/buffer_all/cancel_other: waiting in the retry queue for the lock
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED_LOCKED = "skipped_locked"
    SKIPPED_MISFIRE = "skipped_misfire"
    ABANDONED = "abandoned"
    EXPIRED = "expired"
    CANCELLED = "cancelled"  # overlap=cancel_other: stopped because a newer slot of the job needed the lock
    # the slot ledger: slots of the schedule that got no run, written when the gap is found (shared.ledger)
    PAUSED = "paused"  # the job was paused when the slot came
    MISSED = "missed"  # the chain was lost (reseeded) or replaced before the slot ran (the cause is in `error`)

    @property
    def terminal(self) -> bool:
        return self not in ACTIVE


ACTIVE = frozenset({RunStatus.CLAIMED, RunStatus.BUFFERED, RunStatus.RUNNING})
"""A run row that still has an owner (or waits for one): never pruned, watched by the watchdog."""
OWNED = frozenset({RunStatus.CLAIMED, RunStatus.RUNNING})
"""A worker holds the slot: if that worker is gone, the run is abandoned or taken over."""
EXECUTED = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ABANDONED, RunStatus.CANCELLED}
)
"""The handler was started: these update the job's last_* columns."""
RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ABANDONED})
"""Outcomes after which another attempt follows while attempts remain."""
REVIVABLE = frozenset(
    {RunStatus.SKIPPED_LOCKED, RunStatus.SKIPPED_MISFIRE, RunStatus.EXPIRED, RunStatus.PAUSED, RunStatus.MISSED}
)
"""Slots that did not run and that a backfill (or a job's catch-up policy) may run after all."""
GAPS = frozenset({RunStatus.SKIPPED_MISFIRE, RunStatus.PAUSED, RunStatus.MISSED})
"""The slot ledger's gap rows: slots the schedule named that did not run (`runs JOB --gaps`)."""

_INSERTABLE = frozenset(
    {RunStatus.CLAIMED, RunStatus.BUFFERED, RunStatus.SKIPPED_LOCKED, RunStatus.EXPIRED}
    | GAPS  # the slot ledger writes these for slots that got no run
)

# from -> the statuses a row may move to; None is "no row yet" (what an insert may create)
TRANSITIONS: Mapping[RunStatus | None, frozenset[RunStatus]] = {
    None: _INSERTABLE,
    # claimed -> claimed: a live worker takes over the claim of a dead one (the owner changes, not the status)
    # claimed -> buffered or skipped_locked: an overlap=buffer_all slot that found the lock free while earlier slots
    # wait goes behind them, or is skipped when buffer_max of them wait already; and a slot claimed ahead (lead-time
    # dispatch) whose lock is taken at the slot; claimed -> an outcome: a run whose start (committed asynchronously,
    # shared.store.runs.ASYNC_COMMIT) was lost with a crash of PostgreSQL, recorded by its own worker
    RunStatus.CLAIMED: frozenset(
        {
            RunStatus.CLAIMED,
            RunStatus.RUNNING,
            RunStatus.ABANDONED,
            RunStatus.BUFFERED,
            RunStatus.SKIPPED_LOCKED,
            RunStatus.SUCCEEDED,
            RunStatus.FAILED,
            RunStatus.TIMED_OUT,
            RunStatus.CANCELLED,
        }
    ),
    RunStatus.BUFFERED: frozenset({RunStatus.CLAIMED, RunStatus.SKIPPED_LOCKED}),
    RunStatus.RUNNING: frozenset(
        {
            RunStatus.CLAIMED,
            RunStatus.SUCCEEDED,
            RunStatus.FAILED,
            RunStatus.TIMED_OUT,
            RunStatus.ABANDONED,
            RunStatus.CANCELLED,
        }
    ),
    RunStatus.SKIPPED_LOCKED: frozenset({RunStatus.CLAIMED}),  # backfill revives it
    RunStatus.SKIPPED_MISFIRE: frozenset({RunStatus.CLAIMED}),
    RunStatus.EXPIRED: frozenset({RunStatus.CLAIMED}),
    RunStatus.PAUSED: frozenset({RunStatus.CLAIMED}),  # caught up after the resume, or backfilled
    RunStatus.MISSED: frozenset({RunStatus.CLAIMED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.TIMED_OUT: frozenset(),
    RunStatus.CANCELLED: frozenset(),
    # a worker the watchdog took for dead (cut off from PostgreSQL) that started or finished the run after all:
    # its own record wins
    RunStatus.ABANDONED: frozenset(
        {RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED}
    ),
}


def may_move(current: RunStatus | None, to: RunStatus) -> bool:
    """Whether a run row in `current` (None: no row) may become `to`."""
    return to in TRANSITIONS[current]


def sources(statuses: frozenset[RunStatus]) -> list[str]:
    """A status set as the text[] a statement takes as a parameter (`status = ANY($n::text[])`)."""
    return sorted(s.value for s in statuses)


class DropReason(StrEnum):
    """Why a message was acked without a run (label `reason` of scheduler_messages_dropped_total)."""

    DISABLED = "disabled"  # the job is paused: the chain ends here; resume reseeds
    STALE_EPOCH = "stale_epoch"  # the chain was replaced since this message was posted
    EXPIRED = "expired"  # a manual message past its expires_at (recorded as an expired run)
    MISFIRE = "misfire"  # a chain message later than the grace (recorded as skipped_misfire)
    DUPLICATE = "duplicate"  # a copy of a slot a live worker is on, or a second chain's message
    ALREADY_DONE = "already_done"  # a redelivery of a slot that has finished
    OWNER_DEAD_LOCK_BUSY = "owner_dead_lock_busy"  # the owner died, but the lock is busy: the watchdog abandons it
    BUFFER_GAVE_UP = "buffer_gave_up"  # a buffered slot still locked after the grace (recorded as skipped_locked)
    FILTERED = "filtered"  # an event the job's filter said false to
    PAUSED_EVENT = "paused_event"  # an event for a paused job with on_paused_event = "drop"
    EVENT_UNKNOWN_JOB = "event_unknown_job"  # an event in the queue of a job deleted since


class ParkReason(StrEnum):
    """Why a message went to the parking queue (label `reason` of scheduler_messages_parked_total)."""

    TOO_LARGE = "too_large"
    ENCODING = "encoding"
    NOT_JSON = "not_json"
    SCHEMA = "schema"
    WRONG_SCOPE = "wrong_scope"
    UNKNOWN_JOB = "unknown_job"
    WRONG_QUEUE = "wrong_queue"
    NO_HANDLER = "no_handler"
    NEXT_DELAY = "next_delay_sec"  # asks for a delay between runs: the job's schedule decides that (DESIGN 6)
    INTERNAL_ERROR = "internal_error"
    FILTER_ERROR = "filter_error"  # the job's event filter failed on this payload
    EVENT_BODY = "event_body"  # an event body that is not a JSON object of at most 64 KiB


class ReseedReason(StrEnum):
    """Why the watchdog replaced a chain (label `reason` of scheduler_chain_reseeds_total)."""

    OVERDUE = "overdue"  # the next message is later than the job's grace
    NEVER_SEEDED = "never_seeded"  # no message was ever posted


class GapCause(StrEnum):
    """Why slots of the schedule got no run (label `reason` of scheduler_slots_not_run_total)."""

    MISFIRE = "misfire"  # the slot's message came later than the grace
    JUMPED = "jumped"  # a late message's next slot was counted from now: the slots in between were jumped over
    PAUSED = "paused"  # the job was paused
    CHAIN_LOST = "chain_lost"  # the chain's message was lost; the watchdog reseeded it
    REPLACED = "replaced"  # seed or set replaced the chain while the slot's message was on its way (now stale)


class Contention(StrEnum):
    """What happened to a message that found every lock slot taken (scheduler_lock_contention_total)."""

    SKIPPED = "skipped"
    BUFFERED = "buffered"


class Dependency(StrEnum):
    """The servers a worker depends on (label `dependency` of scheduler_dependency_up)."""

    POSTGRES = "postgres"
    RABBITMQ = "rabbitmq"
