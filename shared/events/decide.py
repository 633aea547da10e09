"""The event decisions, pure (table-tested in tests/unit/test_event_decisions.py):

subscriptions   a job's patterns: its `triggers_on` plus `job.<u>.succeeded` for each job u naming it in on_success
subscriptions_of  `subscriptions` of every job of a list, in one pass over it
decide          one event for one job: run, filtered, parked (filter error), dropped or held (paused)
event_run_id    the run id of (scope, job, event id): a redelivered or republished event claims the same row
triggered       the jobs an event would run (POST /events answers with it)
upstream_of     the upstream run an `on_success` event names
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from shared.events import filters, topics
from shared.events.filters import Verdict

_NAMESPACE = uuid.UUID("6f1b7e5c-5b1a-4c84-9b43-0c2d1e0f7a11")


class Subscriber(Protocol):
    """What the decisions read of a job (a JobRow or a JobDefinition)."""

    @property
    def job_id(self) -> str: ...
    @property
    def on_success(self) -> Sequence[str]: ...
    @property
    def triggers_on(self) -> Sequence[str]: ...


class EventAction(StrEnum):
    RUN = "run"  # hand the job a run: a job message to its work queue
    FILTERED = "filtered"  # the filter said false: ack, count
    PARK = "park"  # the filter failed on this payload: to parking with the reason
    DROP_PAUSED = "drop_paused"  # the job is paused and drops events meanwhile: ack, count
    HOLD = "hold"  # the job is paused and holds events: leave it in the event queue for resume
    UNKNOWN_JOB = "unknown_job"  # the job is gone (deleted since the event was routed): ack, count


@dataclass(frozen=True, slots=True)
class EventDecision:
    action: EventAction
    detail: str = ""


def subscriptions(job: Subscriber, jobs: Iterable[Subscriber]) -> list[str]:
    """The patterns the job's event queue is bound with (sorted, without repeats)."""
    patterns = set(job.triggers_on)
    patterns.update(topics.success_pattern(other.job_id) for other in jobs if job.job_id in other.on_success)
    return sorted(patterns)


def subscriptions_of(jobs: Iterable[Subscriber]) -> dict[str, list[str]]:
    """`subscriptions(job, jobs)` of every job, by job id, in one pass: what names each job in its on_success is
    gathered once (a scope of 10,000 jobs would otherwise be read 10,000 times, seconds of CPU per call)."""
    jobs = list(jobs)
    upstream: dict[str, set[str]] = {}
    for other in jobs:
        for name in other.on_success:
            upstream.setdefault(name, set()).add(other.job_id)
    return {
        job.job_id: sorted({*job.triggers_on, *(topics.success_pattern(u) for u in upstream.get(job.job_id, ()))})
        for job in jobs
    }


def decide(exists: bool, enabled: bool, on_paused_event: str, result: filters.FilterResult) -> EventDecision:
    """One event for one job. The filter is decided first: an event the job would never run is not held."""
    if not exists:
        return EventDecision(EventAction.UNKNOWN_JOB)
    if result.verdict is Verdict.ERROR:
        return EventDecision(EventAction.PARK, result.detail)
    if result.verdict is Verdict.FILTERED:
        return EventDecision(EventAction.FILTERED)
    if not enabled:
        return EventDecision(EventAction.HOLD if on_paused_event == "hold" else EventAction.DROP_PAUSED)
    return EventDecision(EventAction.RUN)


def event_run_id(scope: str, job_id: str, event_id: str) -> uuid.UUID:
    """The run id of one (job, event) pair: every copy of the event claims the same row, so it runs once."""
    return uuid.uuid5(_NAMESPACE, f"{scope}\0{job_id}\0{event_id}")


def upstream_of(topic: str, payload: dict[str, Any]) -> uuid.UUID | None:
    """The run an outcome event reports (`job.<id>.<status>` with a run_id), carried as the downstream run's
    `upstream_run_id`; None for any other event."""
    words = topic.split(".")
    if len(words) != 3 or words[0] != "job":
        return None
    try:
        return uuid.UUID(str(payload.get("run_id")))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A job as `triggered` needs it: its patterns (from `subscriptions`), filter and state."""

    job_id: str
    patterns: Sequence[str]
    filter: str | None
    enabled: bool
    on_paused_event: str


def triggered(candidates: Iterable[Candidate], topic: str, payload: dict[str, Any]) -> list[str]:
    """The jobs an event on `topic` reaches and would run, now or on resume: a pattern matches, the filter
    passes, and the job is enabled or holds events while paused."""
    hits = []
    for job in candidates:
        if not any(topics.matches(p, topic) for p in job.patterns):
            continue
        if filters.evaluate(job.filter, payload).verdict is not Verdict.PASS:
            continue
        if job.enabled or job.on_paused_event == "hold":
            hits.append(job.job_id)
    return sorted(hits)
