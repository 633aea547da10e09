"""The checker: judges a recorded history (runs, executions, worker logs, the fault log) against the invariants.

    python -m tests.chaos.checker --scope S --faults faults.jsonl --jobs-file jobs.toml \\
        --database-url postgresql://... [--executions DIR] [--logs DIR] --out report.json

Per job and in total: slots due, run once, run twice (must be 0), overlapping runs where forbidden (must be 0),
slots lost outside every fault window plus grace (must be 0), abandoned runs and whether each was retried, failed
attempts with attempts left that have no next attempt outside the fault windows (must be 0),
chain reseeds and why, lateness p50/p99/max outside fault windows, time to recover after each fault.
Exit code 0 when there is no violation, 1 when there is one, 2 for a usage error.

What counts (see tests.chaos.timeline for "due" and the windows):

* a slot *ran* when some attempt of it started; it was *skipped* when a row says so (skipped_locked,
  skipped_misfire, expired: the overlap and misfire policies); it is *lost* when nothing records it at all. A slot
  that a run recorded `skipped_misfire` jumped over (its next slot was counted from now) is the misfire policy too.
* a slot *ran twice* when two executions of it overlapped, when it started again after one execution of it had
  succeeded, or when the same attempt ran twice while the first was not killed. The same attempt started again
  after a `kill -9` mid-run is a take-over after a crash (DESIGN section 6, step 5), counted apart.
* the *slot ledger*: every due slot must have a row (`no_ledger_row`, must be 0), the ones that did not run
  included; so must every slot of a pause that was resumed (`paused` rows, or the run a catch-up gave it). Only
  the window of a `seed` or `set` excuses a missing row: the schedule in force changed at a moment inside it. A gap
  row is judged by its cause as the missing row was before: `missed` (a lost or replaced chain) and a
  `skipped_misfire` row that was jumped over are losses (excused only inside a window), `paused` rows of an
  enabled stretch belong to the pause that followed. A catch-up run (a manual run of a slot row) is a run of that
  slot: it must not run it twice.
* an *overlap* is more executions of one lock (the job, or its lock group) at once than `max_parallel` allows.
  Executions are the handler's own records when there are any (else the rows' started_at..finished_at; an
  abandoned run ends when its process was killed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from shared import schedule
from shared.definitions import JobDefinition
from shared.errors import ConfigError
from shared.jobsfile import load_jobs_file
from shared.retry_policy import will_retry
from shared.vocabulary import RunStatus
from tests.chaos import timeline
from tests.chaos.event_check import check_events
from tests.chaos.faultlog import Event, iso, parse_time, read_events
from tests.chaos.history import (
    History,
    Run,
    dump_runs,
    load_runs,
    read_executions,
    read_log_events,
    read_runs,
)
from tests.chaos.report import JobReport, Report
from tests.chaos.timeline import Limits, Window

SKIPPED = frozenset({"skipped_locked", "skipped_misfire", "expired"})
GAP_LOSSES = frozenset({"missed", "paused"})  # gap rows of slots that were lost, not skipped by a policy
JUMPED = "jumped over"  # how the error of a skipped_misfire row that was jumped over begins (shared.ledger)
WAITING = frozenset({"buffer_one", "buffer_all", "cancel_other"})  # overlap policies whose slots wait for the lock


@dataclass(frozen=True)
class Span:
    """One execution in time, from the handler's record or from a row."""

    job_id: str
    run_id: str
    scheduled_for: datetime
    attempt: int
    is_slot: bool
    start: datetime
    end: datetime
    succeeded: bool
    killed: bool  # its process died under it (kill -9): it never finished


def check(history: History, limits: Limits | None = None) -> Report:
    """Judge the history; the report's `violations` is empty when every invariant held."""
    limits = limits or Limits()
    start, end = observation(history.events)
    report = Report(history.scope, start, end, asdict(limits))
    report.sources = {
        "runs": len(history.runs),
        "executions": None if history.executions is None else len(history.executions),
        "log_events": None if history.log_events is None else len(history.log_events),
        "events": len(history.events),
    }
    report.faults.update(e.kind for e in history.events if e.is_fault or e.is_control)
    deaths = death_times(history.events)
    spans = execution_spans(history, deaths, end)
    slot_ids = {r.run_id for r in history.runs if r.is_slot}
    spans = [replace(s, is_slot=True) if not s.is_slot and s.run_id in slot_ids else s for s in spans]
    horizon = end - timedelta(seconds=limits.settle_sec)
    for job_id, definition in sorted(history.jobs.items()):
        job = JobReport(job_id, _describe(definition))
        report.jobs[job_id] = job
        parts = timeline.segments(job_id, definition, history.events)
        wins = timeline.windows(job_id, history.events, limits)
        runs = [r for r in history.runs if r.job_id == job_id]
        stuck_after = timedelta(seconds=max(limits.grace_sec, limits.claim_sec))
        check_slots(report, job, parts, wins, runs, horizon, end, stuck_after)
        check_twice(report, job, [s for s in spans if s.job_id == job_id and s.is_slot])
        job.lateness_ms = lateness(parts, wins, runs, horizon)
    check_overlaps(report, history.jobs, spans)
    check_abandoned(report, history, limits, end)
    check_failed_retried(report, history, limits, end)
    check_records(report, history, deaths, limits)
    check_reseeds(report, history, limits)
    report.events = {job_id: asdict(t) for job_id, t in check_events(report, history, limits, horizon).items()}
    report.recovery = recovery(history, end)
    for event in history.events:
        if event.kind == "soak_check":
            report.checks[str(event.detail.get("name"))] = event.ok
            if not event.ok:
                report.add("soak_check", None, **event.detail)
    return report


def observation(events: list[Event]) -> tuple[datetime | None, datetime]:
    """From the first seed to the moment the workers were told to stop (or the soak's end marker)."""
    seeds = [e.end for e in events if e.kind == "seed" and e.ok]
    ends = [e.start for e in events if e.kind in ("workers_stopping", "soak_end")]
    end = min(ends) if ends else max(e.end for e in events)
    return (min(seeds) if seeds else None), end


def death_times(events: list[Event]) -> dict[int, datetime]:
    """When each killed (or stopped) worker process was gone, by pid."""
    deaths: dict[int, datetime] = {}
    for event in events:
        pid = event.detail.get("pid")
        if event.kind == "worker_kill" and pid is not None:
            deaths[int(pid)] = parse_time(event.detail["killed_at"]) if "killed_at" in event.detail else event.start
        elif event.kind == "worker_stop" and pid is not None:
            deaths.setdefault(int(pid), event.start)
    return deaths


def execution_spans(history: History, deaths: dict[int, datetime], end: datetime) -> list[Span]:
    if history.executions is not None:
        return [
            Span(e.job_id, e.run_id, e.scheduled_for, e.attempt, e.is_slot, e.started,
                 e.ended or deaths.get(e.pid, end), e.outcome == "succeeded", e.ended is None)
            for e in history.executions
        ]  # fmt: skip
    spans = []
    for run in history.runs:
        if run.started_at is None:
            continue
        stop = run.finished_at or end
        died = deaths.get(run.pid) if run.pid is not None else None
        killed = run.status == "abandoned" and died is not None and died <= stop
        if killed and died is not None:
            stop = died
        spans.append(
            Span(run.job_id, run.run_id, run.scheduled_for, run.attempt, run.is_slot, run.started_at, stop,
                 run.status == "succeeded", killed)
        )  # fmt: skip
    return spans


# -- slots -----------------------------------------------------------------------------------------------------


def check_slots(
    report: Report,
    job: JobReport,
    parts: list[timeline.Segment],
    wins: list[Window],
    runs: list[Run],
    horizon: datetime,
    end: datetime,
    stuck_after: timedelta,
) -> None:
    """Every due slot: ran, skipped by a policy, or lost (inside a window: excused). A slot whose only record is a
    claim that never started, `stuck_after` before the end, is lost too (`stuck_claim`: nothing will ever run
    it). Rows of slots that were not due are strays: a second chain, a stale epoch that ran, or a paused job."""
    by_slot: dict[datetime, list[Run]] = defaultdict(list)
    for run in runs:
        if run.is_slot:
            by_slot[run.scheduled_for].append(run)
    for (slot, attempt), count in _counts((r.scheduled_for, r.attempt) for r in runs if r.is_slot).items():
        if count > 1:
            report.add("duplicate_row", job.job_id, slot=slot, attempt=attempt, rows=count)
    due = timeline.due_slots(parts, end)
    chain_rows = sorted((r for r in runs if r.is_slot and r.next_posted_for is not None), key=lambda r: r.scheduled_for)
    for slot in due:
        if slot > horizon:
            continue
        job.due += 1
        rows = by_slot.get(slot, [])
        stuck = bool(rows) and _stuck(rows, end - stuck_after)
        if rows and not stuck and _gap_cause(rows) is None:
            _count_outcome(job, rows)
            continue
        if stuck:
            report.note("stuck_claim", job.job_id, slot=slot, runs=[(r.run_id, r.status, r.worker) for r in rows])
        fire = _fire(parts, slot)
        if not rows:
            rescheduling = [w for w in wins if w.covers(fire) and w.cause in RESCHEDULING]
            _no_ledger_row(report, job, slot, loss_cause(slot, chain_rows)[0], rescheduling)
        cause, jumper = ("stuck_claim", None) if stuck else _why_not_run(slot, rows, chain_rows)
        _lost(report, job, slot, cause, jumper, timeline.covering(wins, fire))
    check_paused_rows(report, job, parts, wins, by_slot, end)
    _check_strays(report, job, parts, wins, by_slot, set(due), end)


RESCHEDULING = frozenset({"seed", "reseed", "set"})  # control actions that may change the schedule in force


def _no_ledger_row(report: Report, job: JobReport, slot: datetime, cause: str, rescheduling: list[Window]) -> None:
    """A due slot with no row: a violation, unless a change of the schedule was under way (`rescheduling`: its
    windows; the timeline counts the new schedule from when the command returned, the chain took it from a moment
    before: a slot of the old schedule in between was never named by the schedule in force)."""
    if rescheduling:
        report.note("no_ledger_row_while_rescheduled", job.job_id, slot=slot, window=rescheduling[0].cause)
        return
    job.no_ledger_row += 1
    report.add("no_ledger_row", job.job_id, slot=slot, cause=cause)


def _why_not_run(slot: datetime, rows: list[Run], chain_rows: list[Run]) -> tuple[str, str | None]:
    """The cause of a slot that did not run (its gap row's, else what the chain's rows say) and the run that
    jumped over it, if any. A slot jumped over by a misfire is the misfire policy."""
    gap = _gap_cause(rows)
    if gap is not None and gap != "jumped":
        return gap, None
    cause, jumper = loss_cause(slot, chain_rows)
    return (cause if cause == "misfire" or gap is None else "jumped"), jumper


def _gap_cause(rows: list[Run]) -> str | None:
    """The slot's rows are only a gap row that records a loss (not a policy): why, else None."""
    if not rows or any(r.executed or r.status not in SKIPPED | GAP_LOSSES for r in rows):
        return None
    for row in rows:
        if row.status in GAP_LOSSES:
            return row.status
        if row.status == "skipped_misfire" and (row.error or "").startswith(JUMPED):
            return "jumped"
    return None


def check_paused_rows(
    report: Report,
    job: JobReport,
    parts: list[timeline.Segment],
    wins: list[Window],
    by_slot: dict[datetime, list[Run]],
    end: datetime,
) -> None:
    """The ledger of a pause: every slot of a paused stretch that was resumed later (on the schedule the job
    resumed with) has a row, `paused` or the run a catch-up gave it. Slots next to the pause and the resume (their
    windows) may go either way."""
    for index, part in enumerate(parts):
        following = parts[index + 1] if index + 1 < len(parts) else None
        if part.enabled or following is None or not following.enabled or following.start > end:
            continue
        plan = part.definition.schedule()
        if plan is None or not part.definition.has_chain or part.definition != following.definition:
            continue
        for slot in schedule.slots_between(plan, part.start, following.start, limit=1_000_000):
            if slot in by_slot or timeline.covering(wins, slot) is not None:
                continue
            job.no_ledger_row += 1
            report.add("no_ledger_row", job.job_id, slot=slot, cause="paused")


def _lost(
    report: Report, job: JobReport, slot: datetime, cause: str, jumper: str | None, window: Window | None
) -> None:
    """A due slot nothing ran: the misfire policy, excused by a window, or a violation."""
    if cause == "misfire":
        job.skipped_by_misfire += 1
    elif window is not None:
        job.lost_in_window += 1
        report.lost_in_window_by_cause[window.cause] += 1
    else:
        job.lost += 1
        report.add("lost_slot", job.job_id, slot=slot, cause=cause, jumped_by=jumper)


def _stuck(rows: list[Run], before: datetime) -> bool:
    """Claimed (or buffered) long before the end and never started, skipped or abandoned: nothing will run it."""
    if any(r.executed or r.status in SKIPPED or r.status == "abandoned" for r in rows):
        return False
    # a gap row of the ledger (missed, paused) has a claimed_at too, and says why the slot did not run
    return all(r.status in ("claimed", "buffered") and r.claimed_at is not None and r.claimed_at < before for r in rows)


def _count_outcome(job: JobReport, rows: list[Run]) -> None:
    if any(r.executed for r in rows):
        job.ran += 1
        job.caught_up += any(r.executed and r.trigger_source == "manual" for r in rows)
    elif any(r.status in SKIPPED for r in rows):
        job.skipped += 1
    elif any(r.status == "abandoned" for r in rows):
        job.abandoned_unstarted += 1
    else:
        job.pending += 1


def loss_cause(slot: datetime, chain_rows: list[Run]) -> tuple[str, str | None]:
    """Why a slot has no row: `misfire` (a skipped_misfire run counted its next slot from now), `jumped` (a late
    run counted its next slot from now, past this one) or `gap` (no run posted past it: the chain broke here)."""
    for run in chain_rows:
        if run.scheduled_for >= slot:
            break
        assert run.next_posted_for is not None
        if run.next_posted_for > slot:
            return ("misfire" if run.status == "skipped_misfire" else "jumped"), run.run_id
    return "gap", None


def _check_strays(
    report: Report,
    job: JobReport,
    parts: list[timeline.Segment],
    wins: list[Window],
    by_slot: dict[datetime, list[Run]],
    due: set[datetime],
    end: datetime,
) -> None:
    for slot, rows in sorted(by_slot.items()):
        if slot in due or slot > end or not any(r.attempt == 1 for r in rows):
            continue
        if timeline.covering(wins, _fire(parts, slot)) is not None:
            continue
        segment = timeline.segment_at(parts, slot)
        if segment is not None and not segment.enabled:
            if any(r.executed and r.trigger_source != "manual" for r in rows):  # a catch-up after resume may run it
                job.stray += 1
                report.add("ran_while_paused", job.job_id, slot=slot, runs=[r.run_id for r in rows])
            continue
        job.stray += 1
        report.add("off_schedule", job.job_id, slot=slot, runs=[r.run_id for r in rows],
                   statuses=[r.status for r in rows])  # fmt: skip


def _fire(parts: list[timeline.Segment], slot: datetime) -> datetime:
    segment = timeline.segment_at(parts, slot)
    return slot if segment is None else timeline.fire_time(segment.definition, slot)


# -- run twice -------------------------------------------------------------------------------------------------


def check_twice(report: Report, job: JobReport, spans: list[Span]) -> None:
    """Per slot: executions that overlapped, ran after a success, or repeated an attempt that was not killed."""
    by_slot: dict[datetime, list[Span]] = defaultdict(list)
    for span in spans:
        by_slot[span.scheduled_for].append(span)
    twice = 0
    for slot, group in by_slot.items():
        group.sort(key=lambda s: s.start)
        problems = _twice_problems(group)
        job.reruns_after_crash += _reruns_after_crash(group)
        if problems:
            twice += 1
            report.add("slot_run_twice", job.job_id, slot=slot, why=problems, runs=[s.run_id for s in group])
    job.ran_twice = twice
    job.ran_once = max(0, job.ran - twice)


def _twice_problems(group: list[Span]) -> list[str]:
    problems = []
    for i, first in enumerate(group):
        for second in group[i + 1 :]:
            if second.start < first.end:
                problems.append("concurrent")
            if first.succeeded:
                problems.append("again_after_success")
            if second.attempt == first.attempt and not first.killed:
                problems.append("same_attempt_twice")
    return sorted(set(problems))


def _reruns_after_crash(group: list[Span]) -> int:
    return sum(
        1
        for i, first in enumerate(group)
        for second in group[i + 1 :]
        if second.attempt == first.attempt and first.killed
    )


# -- overlaps --------------------------------------------------------------------------------------------------


def check_overlaps(report: Report, jobs: dict[str, JobDefinition], spans: list[Span]) -> None:
    """More executions of one lock at once than its max_parallel: the lock group, or the job itself."""
    locks: dict[str, list[str]] = defaultdict(list)
    for job_id, definition in jobs.items():
        if definition.overlap.value != "allow_all":
            locks[definition.lock_group or job_id].append(job_id)
    for lock, members in sorted(locks.items()):
        limit = min(jobs[m].max_parallel for m in members)
        mine = sorted((s for s in spans if s.job_id in members), key=lambda s: s.start)
        for episode in _excess(mine, limit):
            for job_id in {s.job_id for s in episode}:
                report.jobs[job_id].overlaps += 1
            overlap_ms = (min(s.end for s in episode) - max(s.start for s in episode)).total_seconds() * 1000
            report.add(
                "overlap",
                episode[0].job_id,
                lock=lock,
                max_parallel=limit,
                runs=[s.run_id for s in episode],
                jobs=[s.job_id for s in episode],
                starts=[s.start for s in episode],
                ends=[s.end for s in episode],
                overlap_ms=round(overlap_ms, 1),
            )


def _excess(spans: list[Span], limit: int) -> Iterable[list[Span]]:
    """Each moment the number of running spans first goes above `limit` (touching ends do not overlap)."""
    points = sorted([(s.start, 1, i) for i, s in enumerate(spans)] + [(s.end, 0, i) for i, s in enumerate(spans)])
    active: set[int] = set()
    for _, is_start, index in points:
        if not is_start:
            active.discard(index)
            continue
        active.add(index)
        if len(active) > limit:
            yield [spans[i] for i in sorted(active)]


# -- abandoned runs, reseeds, lateness, recovery ---------------------------------------------------------------


def check_abandoned(report: Report, history: History, limits: Limits, end: datetime) -> None:
    """Each abandoned run and whether it was retried; a retry the watchdog promised but that never came is a
    violation outside the fault windows (and not one when the run was abandoned after the end of observation, as
    the workers stopped: nothing was left to run the retry)."""
    rows = {(r.job_id, r.scheduled_for, r.attempt): r for r in history.runs if r.is_slot}
    promised = {
        str(e.fields.get("run_id")): bool(e.fields.get("retry"))
        for e in history.log_events or []
        if e.event == "run.abandoned"
    }
    by_id = {r.run_id: r for r in history.runs}
    abandoned_ids = {r.run_id for r in history.runs if r.status == "abandoned"} | set(promised)
    for run_id in sorted(abandoned_ids):
        run = by_id.get(run_id)
        if run is None or not run.is_slot or run.job_id not in report.jobs:
            continue
        job = report.jobs[run.job_id]
        job.abandoned += 1
        retried = (run.job_id, run.scheduled_for, run.attempt + 1) in rows
        job.abandoned_retried += retried
        expected = promised.get(run_id, run.attempt < history.jobs[run.job_id].max_attempts)
        entry = {
            "run_id": run_id, "job_id": run.job_id, "slot": iso(run.scheduled_for), "attempt": run.attempt,
            "worker": run.worker, "status_now": run.status, "retry_expected": expected, "retried": retried,
        }  # fmt: skip
        report.abandoned.append(entry)
        if expected and not retried:
            at = run.finished_at or run.scheduled_for
            wins = timeline.windows(run.job_id, history.events, limits)
            detail = {"run_id": run_id, "slot": run.scheduled_for, "attempt": run.attempt}
            if at > end:
                report.note("retry_missing_after_end", run.job_id, **detail)
            elif timeline.covering(wins, at) is None:
                report.add("retry_missing", run.job_id, **detail)
            else:
                report.note("retry_missing_in_window", run.job_id, **detail)


def check_failed_retried(report: Report, history: History, limits: Limits, end: datetime) -> None:
    """A slot's attempt that failed (or timed out) with attempts left is followed by its next attempt: published by
    the worker that ran it or, when that message was lost on the way, again by the watchdog (shared.watchdog.retries).
    A violation outside the fault windows; a failure within the grace of the end of observation is not owed yet."""
    rows = {(r.job_id, r.scheduled_for, r.attempt) for r in history.runs if r.is_slot}
    owed_until = end - timedelta(seconds=limits.grace_sec)
    for run in history.runs:
        if not run.is_slot or run.job_id not in report.jobs or run.status not in RETRIED_STATUSES:
            continue
        if not will_retry(RunStatus(run.status), run.attempt, history.jobs[run.job_id].max_attempts, run.error):
            continue
        if (run.job_id, run.scheduled_for, run.attempt + 1) in rows:
            continue
        at = run.finished_at or run.scheduled_for
        detail = {"run_id": run.run_id, "slot": run.scheduled_for, "attempt": run.attempt, "status": run.status}
        if at > owed_until:
            report.note("retry_not_owed_yet", run.job_id, **detail)
        elif timeline.covering(timeline.windows(run.job_id, history.events, limits), at) is not None:
            report.note("failed_retry_missing_in_window", run.job_id, **detail)
        else:
            report.add("failed_retry_missing", run.job_id, **detail)


RETRIED_STATUSES = frozenset({RunStatus.FAILED.value, RunStatus.TIMED_OUT.value})


def check_records(report: Report, history: History, deaths: dict[int, datetime], limits: Limits) -> None:
    """What the rows say about executions whose process stayed alive. A run the handler finished must have its
    outcome on the row within the grace (a row left `running` under a live worker is invisible to the watchdog:
    its retry and `jobs.last_*` wait); and `abandoned` means the worker died, so a live one must not say it."""
    if history.executions is None:
        return
    rows = {r.run_id: r for r in history.runs}
    grace = timedelta(seconds=limits.grace_sec)
    for execution in history.executions:
        if execution.ended is None:
            continue
        died = deaths.get(execution.pid)
        if died is not None and died <= execution.ended + grace:
            continue  # its process was gone right after: recording it was the watchdog's job
        row = rows.get(execution.run_id)
        recorded = None if row is None else row.finished_at
        detail = {
            "run_id": execution.run_id, "handler_ended": execution.ended, "handler_outcome": execution.outcome,
            "row_status": None if row is None else row.status, "row_finished_at": recorded,
        }  # fmt: skip
        if row is None or recorded is None or recorded - execution.ended > grace:
            report.note("finish_not_recorded", execution.job_id, **detail)
        elif row.status == "abandoned":
            report.note("abandoned_while_worker_alive", execution.job_id, error=row.error, **detail)


def check_reseeds(report: Report, history: History, limits: Limits) -> None:
    """Why each chain was reseeded by the watchdog, and whether every epoch of a job is explained: one per
    seed/pause/resume/set that touched it, one per watchdog reseed (failed commands and seeding the file again may
    or may not have bumped)."""
    reseeds = [e for e in history.log_events or [] if e.event == "chain.reseeded"]
    for event in reseeds:
        was_due = event.fields.get("was_due")
        wins = timeline.windows(event.job_id, history.events, limits)
        due_at = parse_time(was_due) if was_due else None
        window = None if due_at is None else timeline.covering(wins, due_at)
        report.reseeds.append({
            "at": iso(event.at), "job_id": event.job_id, "reason": event.fields.get("reason"), "was_due": was_due,
            "epoch": event.fields.get("epoch"), "lost_during": None if window is None else window.cause,
        })  # fmt: skip
        if event.job_id in report.jobs:
            report.jobs[event.job_id].reseeds += 1
    if history.final_epochs is None:
        return
    for job_id in report.jobs:
        controls = [e for e in history.events if e.is_control and e.touches(job_id)]
        # seeding the file again bumps only the jobs whose definition differs from the file's (one `set` since)
        again = [e for e in controls if e.kind == "reseed"]
        expected = sum(e.ok for e in controls if e.kind != "reseed") + report.jobs[job_id].reseeds
        final = history.final_epochs.get(job_id, 0)
        # a command that failed may have bumped the epoch before it failed (seed goes job by job): every failed
        # attempt, also those before a command's final success, is one epoch that may or may not exist
        uncertain = sum(int(e.detail.get("attempts", 1)) - e.ok for e in controls) + sum(e.ok for e in again)
        report.epochs[job_id] = {"final": final, "explained": expected, "uncertain": uncertain}
        if not expected <= final <= expected + uncertain:
            report.note("epoch_unexplained", job_id, final=final, explained=expected, uncertain=uncertain)


def lateness(parts: list[timeline.Segment], wins: list[Window], runs: list[Run], horizon: datetime) -> list[float]:
    """Start minus fire time of first attempts of chain slots, outside every window (buffered jobs excluded: their
    slots wait for the lock on purpose)."""
    out = []
    for run in runs:
        if not run.is_slot or run.attempt != 1 or run.trigger_source != "scheduler" or run.started_at is None:
            continue
        segment = timeline.segment_at(parts, run.scheduled_for)
        if segment is None or segment.definition.overlap.value in WAITING or run.scheduled_for > horizon:
            continue
        fire = timeline.fire_time(segment.definition, run.scheduled_for)
        if timeline.covering(wins, fire) is None:
            out.append((run.started_at - fire).total_seconds() * 1000)
    return out


def recovery(history: History, end: datetime) -> list[dict[str, Any]]:
    """After each fault: how long until each job (enabled then, with a schedule) had its first successful run."""
    out = []
    successes: dict[str, list[datetime]] = defaultdict(list)
    for run in history.runs:
        if run.status == "succeeded" and run.started_at is not None:
            successes[run.job_id].append(run.started_at)
    for event in (e for e in history.events if e.is_fault):
        delays: dict[str, float | None] = {}
        for job_id, definition in history.jobs.items():
            segment = timeline.segment_at(timeline.segments(job_id, definition, history.events), event.end)
            if segment is None or not segment.enabled or not segment.definition.has_chain:
                continue
            after = [t for t in successes[job_id] if t > event.end]
            delays[job_id] = (min(after) - event.end).total_seconds() if after else None
        done = {k: v for k, v in delays.items() if v is not None}
        slowest = max(done, key=lambda k: done[k]) if done else None
        out.append({
            "kind": event.kind, "start": iso(event.start), "end": iso(event.end),
            "lasted_sec": round((event.end - event.start).total_seconds(), 2), "detail": event.detail,
            "jobs": len(delays), "recovered": len(done),
            "p50_sec": None if not done else round(sorted(done.values())[len(done) // 2], 2),
            "max_sec": None if not done else round(done[slowest], 2) if slowest else None, "slowest": slowest,
            "not_recovered": sorted(k for k, v in delays.items() if v is None),
        })  # fmt: skip
    return out


def _describe(definition: JobDefinition) -> str:
    plan = definition.schedule()
    words = "-" if plan is None else schedule.describe(plan)
    extra = []
    if definition.lock_group:
        extra.append(f"group {definition.lock_group}")
    if definition.max_parallel > 1:
        extra.append(f"x{definition.max_parallel}")
    if definition.overlap.value != "skip":
        extra.append(definition.overlap.value)
    return words + (f" ({', '.join(extra)})" if extra else "")


def _counts(items: Iterable[Any]) -> dict[Any, int]:
    counts: dict[Any, int] = defaultdict(int)
    for item in items:
        counts[item] += 1
    return counts


# -- command line ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.checker", description=__doc__.split("\n\n")[0])
    p.add_argument("--scope", required=True)
    p.add_argument("--faults", type=Path, required=True, help="the soak's fault log (JSON lines)")
    p.add_argument("--jobs-file", type=Path, help="the jobs file (default: the one the fault log's seed names)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--database-url", help="read scheduler.job_runs there (default: DATABASE_URL)")
    source.add_argument("--runs", type=Path, help="read runs from a JSON-lines dump instead")
    p.add_argument("--dump-runs", type=Path, help="also write the runs read to this file")
    p.add_argument("--executions", type=Path, help="directory of the handler's exec-*.jsonl records")
    p.add_argument("--logs", type=Path, help="directory of the workers' JSON logs (*.log)")
    p.add_argument("--out", type=Path, required=True, help="the JSON report")
    p.add_argument("--grace", type=float, default=Limits.grace_sec, help="seconds after a fault that are excused")
    return p.parse_args(argv)


async def load(args: argparse.Namespace) -> History:
    events = read_events(args.faults)
    jobs_file = args.jobs_file or next(
        (Path(e.detail["file"]) for e in events if e.kind == "seed" and "file" in e.detail), None
    )
    if jobs_file is None:
        raise ConfigError("no --jobs-file and the fault log's seed names none")
    jobs = {d.job_id: d for d in load_jobs_file(jobs_file)}
    if args.runs is not None:
        runs, epochs = read_runs(args.runs)
    else:
        import os

        dsn = args.database_url or os.environ.get("DATABASE_URL")
        if not dsn:
            raise ConfigError("give --database-url (or DATABASE_URL) or --runs")
        runs, epochs = await load_runs(dsn, args.scope)
    if args.dump_runs is not None:
        dump_runs(args.dump_runs, runs, epochs)
    executions = read_executions(args.executions) if args.executions else None
    log_events = read_log_events(sorted(args.logs.glob("*.log"))) if args.logs else None
    return History(args.scope, jobs, events, runs, executions, log_events, epochs)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        history = asyncio.run(load(args))
    except (ConfigError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = check(history, Limits(grace_sec=args.grace))
    args.out.write_text(json.dumps(report.to_json(), indent=2, default=str) + "\n")
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
