"""The soak's event invariant: every success of an upstream job is one event, and each (subscribing job, event)
ran exactly once; an event with no run is lost, excused only when the upstream run finished inside a window of
either job (a fault, or a control action on them) or too close to the end of the observation.

Expected pairs come from the upstream's rows (its `succeeded` runs) and the pure functions the framework derives
ids with; runs come from the handler's own record (`Execution`), or from rows when there is none."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from shared.definitions import JobDefinition
from shared.events import topics
from shared.events.decide import event_run_id
from shared.events.envelope import outcome_message_id
from tests.chaos import timeline
from tests.chaos.history import History
from tests.chaos.report import Report
from tests.chaos.timeline import Limits


@dataclass
class EventTally:
    expected: int = 0
    ran_once: int = 0
    ran_twice: int = 0
    skipped: int = 0  # recorded skipped_locked: waited for the lock past its limit (a policy, not a loss)
    lost_in_window: int = 0
    lost: int = 0


def upstreams(definition: JobDefinition) -> list[str]:
    """The jobs whose successes `definition` subscribes to by pattern (`job.<u>.succeeded`)."""
    found = []
    for pattern in definition.triggers_on:
        words = pattern.split(".")
        if len(words) == 3 and words[0] == "job" and words[2] == "succeeded" and words[1] not in ("*", "#"):
            found.append(words[1])
    return found


def check_events(report: Report, history: History, limits: Limits, horizon: datetime) -> dict[str, EventTally]:
    """Per subscribing job, the tally; violations `event_ran_twice` and `event_lost` on the report."""
    tallies: dict[str, EventTally] = {}
    for job_id, definition in sorted(history.jobs.items()):
        for upstream in upstreams(definition):
            tally = tallies.setdefault(job_id, EventTally())
            _check_pair(report, history, limits, horizon, job_id, upstream, tally)
    return tallies


def _event_runs(history: History, job_id: str) -> dict[str, list[bool]]:
    """First attempts of the job's event runs by run id: for each execution, whether its process was killed."""
    executions: dict[str, list[bool]] = defaultdict(list)
    if history.executions is not None:
        for e in history.executions:
            if e.job_id == job_id and e.trigger_source == "event" and e.attempt == 1:
                executions[e.run_id].append(e.ended is None)
        return executions
    for r in history.runs:
        if r.job_id == job_id and r.trigger_source == "event" and r.attempt == 1 and r.started_at is not None:
            executions[r.run_id].append(r.status == "abandoned")
    return executions


def _check_pair(
    report: Report, history: History, limits: Limits, horizon: datetime, job_id: str, upstream: str, tally: EventTally
) -> None:
    executions = _event_runs(history, job_id)
    skipped = {r.run_id for r in history.runs if r.job_id == job_id and r.status == "skipped_locked"}
    wins = timeline.windows(job_id, history.events, limits) + timeline.windows(upstream, history.events, limits)
    topic = topics.outcome_topic(upstream, "succeeded")
    for run in history.runs:
        if run.job_id != upstream or run.status != "succeeded" or run.finished_at is None:
            continue
        tally.expected += 1
        event = outcome_message_id(uuid.UUID(run.run_id), "succeeded")
        expected = str(event_run_id(history.scope, job_id, event))
        runs = executions.get(expected, [])
        detail = {"topic": topic, "event_id": event, "upstream_run": run.run_id}
        if len([killed for killed in runs if not killed]) > 1:
            tally.ran_twice += 1
            report.add("event_ran_twice", job_id, runs=len(runs), **detail)
        elif runs:
            tally.ran_once += 1
        elif expected in skipped:
            tally.skipped += 1
        elif run.finished_at > horizon or timeline.covering(wins, run.finished_at) is not None:
            tally.lost_in_window += 1
        else:
            tally.lost += 1
            report.add("event_lost", job_id, upstream_finished=run.finished_at, **detail)
