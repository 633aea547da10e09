"""The run decisions, table-tested without servers: every branch of steps 2-5 and of the chain repair is a named
case here (DESIGN section 6)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import decisions, schedule
from shared.decisions import Action, ChainRepair, Decision
from shared.definitions import load_definition
from shared.events import topics
from shared.events.decide import subscriptions
from shared.messages import JobMessage
from shared.store.jobs import DEFINITION_COLUMNS, JobRow
from shared.store.runs import NewRun, RunRow
from shared.vocabulary import DropReason, ParkReason, RunStatus, TriggerSource

SCOPE = "t"
NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
SLOT = NOW - timedelta(seconds=1)
ME = "worker-me"
OTHER = "worker-other"


def job(**changes: Any) -> JobRow:
    definition = load_definition({"job_id": "scan", "interval_seconds": 60, "misfire_grace_sec": 30, **changes})
    declared = {name: getattr(definition, name) for name in DEFINITION_COLUMNS}
    declared["queue"] = definition.queue_name
    declared["on_success"] = list(definition.on_success)
    return JobRow(
        scope=SCOPE, job_id=definition.job_id, **declared, epoch=5, pause_note=None, next_due_at=None,
        last_run_at=None, last_status=None, last_error=None, last_duration_ms=None, last_lateness_ms=None,
        last_success_at=None, consecutive_failures=0, created_at=NOW, updated_at=NOW,
    )  # fmt: skip


def chain_msg(**changes: Any) -> JobMessage:
    fields: dict[str, Any] = {
        "job_id": "scan", "trigger_source": TriggerSource.SCHEDULER, "epoch": 5, "scheduled_for": SLOT,
    }  # fmt: skip
    return JobMessage(**{**fields, **changes})


def manual_msg(**changes: Any) -> JobMessage:
    return JobMessage(**{"job_id": "scan", "scheduled_for": SLOT, **changes})


def row(status: RunStatus, **changes: Any) -> RunRow:
    fields: dict[str, Any] = {
        "run_id": uuid.uuid4(), "scope": SCOPE, "job_id": "scan", "epoch": 5, "trigger_source": "scheduler",
        "scheduled_for": SLOT, "attempt": 1, "status": status, "worker": OTHER, "next_posted_for": None, "params": {},
    }  # fmt: skip
    return RunRow(**{**fields, **changes})


def run_of(msg: JobMessage, the_job: JobRow | None = None) -> NewRun:
    return decisions.new_run(SCOPE, the_job or job(), msg)


def admit(the_job: JobRow | None, msg: JobMessage, queue: str = "scan", reread: bool = False) -> Decision:
    return decisions.admit(the_job, msg, queue, SCOPE, NOW, reread)


# -- steps 2 and 3 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "the_job", "msg", "queue", "reread", "action", "reason"),
    [
        ("unknown_job", None, chain_msg(), "scan", False, Action.PARK, ParkReason.UNKNOWN_JOB),
        ("epoch_ahead_waits_for_the_reseed", job(), chain_msg(epoch=6), "scan", False, Action.REREAD, "epoch_ahead"),
        ("epoch_ahead_after_reread_is_stale", job(), chain_msg(epoch=6), "scan", True, Action.DROP,
         DropReason.STALE_EPOCH),
        ("wrong_queue", job(), chain_msg(), "other-queue", False, Action.PARK, ParkReason.WRONG_QUEUE),
        ("disabled_chain_message_ends_the_chain", job(enabled=False), chain_msg(), "scan", False, Action.DROP,
         DropReason.DISABLED),
        ("disabled_job_still_runs_a_manual_message", job(enabled=False), manual_msg(), "scan", False,
         Action.PROCEED, ""),
        ("disabled_job_still_runs_a_retry_of_run_now", job(enabled=False),
         manual_msg(trigger_source=TriggerSource.RETRY, attempt=2), "scan", False, Action.PROCEED, ""),
        ("disabled_job_drops_a_retry_of_a_chain_run", job(enabled=False),
         chain_msg(trigger_source=TriggerSource.RETRY, attempt=2), "scan", False, Action.DROP, DropReason.DISABLED),
        ("disabled_job_drops_a_startup_message", job(enabled=False),
         manual_msg(trigger_source=TriggerSource.STARTUP), "scan", False, Action.DROP, DropReason.DISABLED),
        ("stale_epoch", job(), chain_msg(epoch=4), "scan", False, Action.DROP, DropReason.STALE_EPOCH),
        ("expired_manual_message", job(), manual_msg(expires_at=NOW), "scan", False, Action.EXPIRE,
         DropReason.EXPIRED),
        ("misfire_past_the_grace", job(), chain_msg(scheduled_for=NOW - timedelta(seconds=31)), "scan", False,
         Action.SKIP_MISFIRE, DropReason.MISFIRE),
        ("on_time_at_the_grace", job(), chain_msg(scheduled_for=NOW - timedelta(seconds=30)), "scan", False,
         Action.PROCEED, ""),
        ("jitter_extends_the_grace", job(jitter_sec=10), chain_msg(scheduled_for=NOW - timedelta(seconds=39)),
         "scan", False, Action.PROCEED, ""),
        ("a_late_manual_message_is_no_misfire", job(), manual_msg(scheduled_for=NOW - timedelta(hours=1)), "scan",
         False, Action.PROCEED, ""),
        ("chain_message_on_time", job(), chain_msg(), "scan", False, Action.PROCEED, ""),
    ],
)  # fmt: skip
def test_admit(
    name: str, the_job: JobRow | None, msg: JobMessage, queue: str, reread: bool, action: Action, reason: str
) -> None:
    decision = admit(the_job, msg, queue, reread)
    assert (decision.action, decision.reason) == (action, str(reason)), name


def test_parking_says_why() -> None:
    assert "served by queue 'scan'" in admit(job(), chain_msg(), "elsewhere").detail
    assert "no job 'scan' in scope 't'" in admit(None, chain_msg()).detail


# -- step 4 ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overlap", "buffer_taken", "action"),
    [
        ("skip", False, Action.SKIP_LOCKED),
        ("buffer_one", False, Action.BUFFER),
        ("buffer_one", True, Action.SKIP_LOCKED),  # one slot waits already: this one is skipped
    ],
)
def test_when_locked(overlap: str, buffer_taken: bool, action: Action) -> None:
    assert decisions.when_locked(overlap, buffer_taken).action is action


# -- step 5 ----------------------------------------------------------------------------------------------------


def on_existing(existing: RunRow, run: NewRun | None = None, **kw: Any) -> Decision:
    facts: dict[str, Any] = {
        "lock_free": True, "worker_id": ME, "inflight": False, "owner_alive": True, "now": NOW, "grace_sec": 30.0,
    }  # fmt: skip
    return decisions.on_existing(existing, run or run_of(chain_msg()), **{**facts, **kw})


BACKFILL = run_of(manual_msg(epoch=5))


@pytest.mark.parametrize(
    ("name", "existing", "run", "facts", "action", "reason"),
    [
        ("backfill_revived_a_skipped_slot", row(RunStatus.SKIPPED_LOCKED), BACKFILL, {}, Action.REVIVE,
         "backfill_revived"),
        ("backfill_revived_a_misfired_slot", row(RunStatus.SKIPPED_MISFIRE), BACKFILL, {}, Action.REVIVE,
         "backfill_revived"),
        ("backfill_revived_an_expired_slot", row(RunStatus.EXPIRED), BACKFILL, {}, Action.REVIVE, "backfill_revived"),
        ("backfill_while_locked_is_already_done", row(RunStatus.SKIPPED_LOCKED), BACKFILL, {"lock_free": False},
         Action.DROP, DropReason.ALREADY_DONE),
        ("catchup_revived_a_paused_slot", row(RunStatus.PAUSED), BACKFILL, {"waits": True}, Action.REVIVE,
         "backfill_revived"),
        ("catchup_revived_a_missed_slot", row(RunStatus.MISSED), BACKFILL, {}, Action.REVIVE, "backfill_revived"),
        ("catchup_waits_for_the_lock", row(RunStatus.SKIPPED_MISFIRE), BACKFILL, {"lock_free": False, "waits": True},
         Action.BUFFER, "catchup_waits"),
        ("catchup_of_a_slot_that_ran_is_already_done", row(RunStatus.SUCCEEDED), BACKFILL,
         {"lock_free": False, "waits": True}, Action.DROP, DropReason.ALREADY_DONE),
        ("backfill_of_a_succeeded_slot_is_already_done", row(RunStatus.SUCCEEDED), BACKFILL, {}, Action.DROP,
         DropReason.ALREADY_DONE),
        ("chain_copy_of_a_skipped_slot_is_already_done", row(RunStatus.SKIPPED_LOCKED), None, {}, Action.DROP,
         DropReason.ALREADY_DONE),
        ("redelivery_after_completion", row(RunStatus.FAILED), None, {}, Action.DROP, DropReason.ALREADY_DONE),
        ("buffered_ran_when_the_lock_came_free", row(RunStatus.BUFFERED), None, {}, Action.PROMOTE, "buffered_ran"),
        ("buffer_still_locked", row(RunStatus.BUFFERED), None, {"lock_free": False}, Action.BUFFER, "still_locked"),
        ("buffer_gave_up_after_the_grace", row(RunStatus.BUFFERED, scheduled_for=NOW - timedelta(seconds=31)), None,
         {"lock_free": False}, Action.GIVE_UP, DropReason.BUFFER_GAVE_UP),
        ("duplicate_of_a_live_owner", row(RunStatus.RUNNING), None, {}, Action.DROP, DropReason.DUPLICATE),
        ("duplicate_of_a_live_claim", row(RunStatus.CLAIMED), None, {}, Action.DROP, DropReason.DUPLICATE),
        ("take_over_of_a_dead_owners_claim", row(RunStatus.CLAIMED), None, {"owner_alive": False}, Action.TAKE_OVER,
         "taken_over"),
        ("take_over_of_a_dead_owners_run", row(RunStatus.RUNNING), None, {"owner_alive": False}, Action.TAKE_OVER,
         "taken_over"),
        ("owner_dead_lock_busy", row(RunStatus.RUNNING), None, {"owner_alive": False, "lock_free": False},
         Action.DROP, DropReason.OWNER_DEAD_LOCK_BUSY),
        ("my_own_left_over_claim_is_taken_over_though_i_live", row(RunStatus.CLAIMED, worker=ME), None, {},
         Action.TAKE_OVER, "taken_over"),
        ("my_claim_in_flight_is_a_duplicate", row(RunStatus.RUNNING, worker=ME), None, {"inflight": True},
         Action.DROP, DropReason.DUPLICATE),
        ("a_given_back_claim_is_taken_over", row(RunStatus.CLAIMED, worker=None), None, {"owner_alive": False},
         Action.TAKE_OVER, "taken_over"),
    ],
)  # fmt: skip
def test_on_existing(
    name: str, existing: RunRow, run: NewRun | None, facts: dict[str, Any], action: Action, reason: str
) -> None:
    decision = on_existing(existing, run, **facts)
    assert (decision.action, decision.reason) == (action, str(reason)), name


@pytest.mark.parametrize(
    ("existing", "inflight", "needed"),
    [
        (row(RunStatus.RUNNING), False, True),
        (row(RunStatus.CLAIMED), False, True),
        (row(RunStatus.RUNNING, worker=ME), False, False),  # mine, not running here: no need to ask
        (row(RunStatus.RUNNING, worker=ME), True, True),
        (row(RunStatus.SUCCEEDED), False, False),
        (row(RunStatus.BUFFERED), False, False),
    ],
)
def test_owner_is_asked_about_only_when_it_decides(existing: RunRow, inflight: bool, needed: bool) -> None:
    assert decisions.owner_check_needed(existing, ME, inflight) is needed


@pytest.mark.parametrize(
    ("won", "lost"),
    [
        (Decision(Action.REVIVE, "backfill_revived"), DropReason.ALREADY_DONE),
        (Decision(Action.PROMOTE, "buffered_ran"), DropReason.DUPLICATE),
        (Decision(Action.TAKE_OVER, "taken_over"), DropReason.OWNER_DEAD_LOCK_BUSY),
    ],
)
def test_a_lost_race_for_a_row_is_a_drop(won: Decision, lost: DropReason) -> None:
    assert decisions.lost_race(won) == Decision(Action.DROP, lost.value)


def test_other_decisions_are_no_race() -> None:
    kept = Decision(Action.BUFFER, "still_locked")
    assert decisions.lost_race(kept) is kept


# -- chain repair after a drop ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "msg", "existing", "repair"),
    [
        ("carried_over_chain", chain_msg(), row(RunStatus.RUNNING, epoch=4), ChainRepair.CARRY_OVER),
        ("carried_over_even_when_the_old_run_finished", chain_msg(), row(RunStatus.SUCCEEDED, epoch=4),
         ChainRepair.CARRY_OVER),
        ("repost_after_a_run_that_died_before_posting", chain_msg(), row(RunStatus.ABANDONED), ChainRepair.REPOST),
        ("no_repost_when_the_next_slot_was_posted", chain_msg(), row(RunStatus.SUCCEEDED, next_posted_for=NOW),
         ChainRepair.NONE),
        ("no_repost_while_the_run_goes_on", chain_msg(), row(RunStatus.RUNNING), ChainRepair.NONE),
        ("manual_copies_never_carry_the_chain", manual_msg(epoch=5), row(RunStatus.ABANDONED), ChainRepair.NONE),
        ("nothing_to_repair_without_a_row", chain_msg(), None, ChainRepair.NONE),
    ],
)  # fmt: skip
def test_chain_repair(name: str, msg: JobMessage, existing: RunRow | None, repair: ChainRepair) -> None:
    assert decisions.chain_repair(msg, job(), existing) is repair, name


# -- facts -----------------------------------------------------------------------------------------------------


def test_cached_row_is_used_only_for_chain_messages_of_its_epoch() -> None:
    assert decisions.usable_cached(job(), chain_msg(), "scan", NOW)
    assert not decisions.usable_cached(job(), chain_msg(epoch=4), "scan", NOW)
    assert not decisions.usable_cached(job(enabled=False), chain_msg(), "scan", NOW)
    assert not decisions.usable_cached(job(), chain_msg(), "other", NOW)
    assert not decisions.usable_cached(job(), manual_msg(), "scan", NOW)
    assert not decisions.usable_cached(job(), chain_msg(expires_at=NOW), "scan", NOW)


def test_lateness_counts_from_the_slot_plus_its_jitter() -> None:
    jittered = job(jitter_sec=10)
    msg = chain_msg()
    fire = decisions.fire_time(jittered, msg)
    assert fire == SLOT + schedule.slot_jitter("scan", SLOT, 10)
    assert SLOT <= fire < SLOT + timedelta(seconds=10)
    assert decisions.lateness(fire + timedelta(milliseconds=7), fire) == timedelta(milliseconds=7)
    assert decisions.fire_time(jittered, manual_msg()) == SLOT  # by hand: no jitter


def test_slot_runs_share_a_derived_run_id_and_manual_runs_keep_theirs() -> None:
    first, second = chain_msg(), chain_msg(run_id=uuid.uuid4())
    assert run_of(first).run_id == run_of(second).run_id == schedule.derive_run_id(SCOPE, "scan", 5, SLOT, 1)
    manual = manual_msg()
    assert run_of(manual).run_id == manual.run_id


def test_backfill_is_a_first_attempt_manual_message_with_an_epoch() -> None:
    assert decisions.is_backfill(run_of(manual_msg(epoch=5)))
    assert not decisions.is_backfill(run_of(manual_msg()))
    assert not decisions.is_backfill(run_of(chain_msg()))
    assert not decisions.is_backfill(run_of(manual_msg(epoch=5, attempt=2)))


def test_buffer_poll_is_a_fifth_of_the_period_within_bounds() -> None:
    assert decisions.buffer_poll_delay(job(interval_seconds=5), 0.5) == pytest.approx(1.0)
    assert decisions.buffer_poll_delay(job(interval_seconds=1), 0.5) == pytest.approx(0.2)
    assert decisions.buffer_poll_delay(job(interval_seconds=3600), 0.5) == pytest.approx(2.0)


def test_downstream_only_after_success() -> None:
    upstream, report = job(on_success=["report"]), job(job_id="report")
    (pattern,) = subscriptions(report, [upstream, report])
    assert topics.matches(pattern, topics.outcome_topic(upstream.job_id, RunStatus.SUCCEEDED))
    assert not topics.matches(pattern, topics.outcome_topic(upstream.job_id, RunStatus.FAILED))


def test_next_slot_only_for_chain_messages_of_scheduled_jobs() -> None:
    assert decisions.needs_next_slot(chain_msg(), job())
    assert not decisions.needs_next_slot(manual_msg(), job())
    assert not decisions.needs_next_slot(chain_msg(), job(reschedule_mode="none"))


def test_with_run_id_keeps_everything_else() -> None:
    run = run_of(chain_msg())
    other = uuid.uuid4()
    assert decisions.with_run_id(run, other) == replace(run, run_id=other)


# -- step 1 and queued runs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "msg", "action", "reason"),
    [
        ("plain_message", manual_msg(), Action.PROCEED, ""),
        ("its_own_scope", manual_msg(scope=SCOPE), Action.PROCEED, ""),
        ("another_scope", manual_msg(scope="other"), Action.PARK, ParkReason.WRONG_SCOPE),
        ("next_delay_sec_is_not_honoured", manual_msg(next_delay_sec=600), Action.PARK, ParkReason.NEXT_DELAY),
        ("not_even_zero", chain_msg(next_delay_sec=0), Action.PARK, ParkReason.NEXT_DELAY),
    ],
)  # fmt: skip
def test_screen(name: str, msg: JobMessage, action: Action, reason: str) -> None:
    decision = decisions.screen(msg, SCOPE)
    assert (decision.action, decision.reason) == (action, str(reason)), name


def test_next_delay_parking_says_what_to_do_instead() -> None:
    detail = decisions.screen(manual_msg(next_delay_sec=600), SCOPE).detail
    assert "next_delay_sec=600 is not honoured" in detail and "set" in detail


@pytest.mark.parametrize("overlap", ["skip", "buffer_one"])
def test_a_queued_run_waits_whatever_the_overlap(overlap: str) -> None:
    assert decisions.when_locked(overlap, buffer_taken=True, wait_for_lock=True) == Decision(Action.BUFFER, "queued")


def test_a_queued_run_waits_long_enough_for_the_run_in_its_way_to_time_out() -> None:
    the_job = job(timeout_sec=600, misfire_grace_sec=30)
    assert decisions.wait_limit_sec(the_job, manual_msg(wait_for_lock=True)) == 630
    assert decisions.wait_limit_sec(the_job, chain_msg()) == 30


@pytest.mark.parametrize(
    ("name", "msg", "action"),
    [
        ("hop whose slot is ahead", chain_msg(rearm_at=NOW + timedelta(days=30)), Action.REARM),
        ("hop one millisecond early", chain_msg(rearm_at=NOW + timedelta(milliseconds=1)), Action.REARM),
        ("hop arriving at its fire time", chain_msg(rearm_at=NOW), Action.PROCEED),
        ("hop arriving late", chain_msg(rearm_at=NOW - timedelta(hours=1)), Action.PROCEED),
        ("chain message, no hop", chain_msg(), Action.PROCEED),
        ("manual message claiming a hop", manual_msg(rearm_at=NOW + timedelta(days=1)), Action.PROCEED),
    ],
)
def test_rearm(name: str, msg: JobMessage, action: Action) -> None:
    assert decisions.rearm(msg, NOW).action is action, name


def test_rearm_counts_the_dispatch_lead() -> None:
    hop = chain_msg(rearm_at=NOW + timedelta(milliseconds=200))
    assert decisions.rearm(hop, NOW, lead_sec=0.25).action is Action.PROCEED  # within the lead: the slot itself
    assert decisions.rearm(hop, NOW, lead_sec=0.1).action is Action.REARM


@pytest.mark.parametrize(
    ("overlap", "ahead"),
    [("skip", True), ("allow_all", True), ("buffer_one", False), ("buffer_all", False), ("cancel_other", False)],
)
def test_only_non_buffering_policies_claim_in_the_lead(overlap: str, ahead: bool) -> None:
    assert decisions.claims_ahead(overlap) is ahead


# -- step 6: where the next slot is counted from -----------------------------------------------------------------


def test_a_message_a_few_seconds_late_continues_the_grid_from_its_own_slot() -> None:
    """An on-time message whose TTL was set on a clock 2 s behind and which runs on a clock 2 s ahead looks 4 s
    late: the chain still goes on from its slot, so the slots in between are posted, not skipped."""
    assert decisions.next_slot_after(chain_msg(), SLOT + timedelta(seconds=4)) == SLOT
    assert decisions.next_slot_after(chain_msg(), SLOT - timedelta(seconds=2)) == SLOT  # early: a clock ahead


def test_a_message_later_than_the_catch_up_counts_the_next_slot_from_now_without_a_burst() -> None:
    late = SLOT + timedelta(seconds=decisions.CHAIN_CATCH_UP_SEC + 20)
    after = decisions.next_slot_after(chain_msg(), late)
    assert after == late - timedelta(seconds=decisions.CHAIN_CATCH_UP_SEC)
    plan = job(interval_seconds=1).schedule
    assert plan is not None
    assert schedule.next_slot(plan, after) > SLOT + timedelta(seconds=20)  # the 20 s missed are not run
