"""What each job was supposed to do when: its definition over time, the slots due, the windows of excuse.

"Due" across reseeds. Slots are a property of the *schedule*, not of a chain: an interval grid has a fixed phase
(a hash of the job id) and cron slots are absolute times, so a reseed with an unchanged schedule continues the
same grid (its first message is the first slot after the reseed). A job's slots are therefore due from the end
of its first seed, on the schedule in force at the slot:

* `seed`/`reseed` puts the jobs file's definition back (and enables the job, as `seed` does);
* `set` changes the definition from the moment the command returned; `pause` and `resume` toggle whether
  slots are due at all. A control action that failed changes nothing here (the soak retries until one succeeds).

A reseed starts a new epoch: chain messages of the old epoch still in flight are dropped by design, so the slots
just before a reseed may be lost. Every control action is therefore a window for the jobs it touches, from a
little before it started (messages in flight) to just after it returned; every fault is a window for all jobs,
from a little before it started to `grace` after it ended (the time to reconnect, notice a lost chain and reseed
it). Windows excuse lost and stray slots; they never excuse a slot run twice or an overlap.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared import schedule
from shared.definitions import JobDefinition, load_definition
from tests.chaos.faultlog import Event


@dataclass(frozen=True)
class Limits:
    grace_sec: float = 20.0  # after a fault ended: reconnect back-off + chain-lost threshold + a watchdog pass
    in_flight_sec: float = 2.0  # before a fault or action started: slots whose message was already on its way
    after_action_sec: float = 0.5  # after a control action returned (the command's own exit is in there)
    settle_sec: float = 3.0  # slots this close to the end of the observation need not have run yet
    claim_sec: float = 60.0  # a claim given back is the watchdog's to abandon after this (RELEASED_CLAIM_GRACE_SEC)


@dataclass(frozen=True)
class Segment:
    """From `start` (exclusive) to the next segment's start, the job had `definition` and was (not) enabled."""

    start: datetime
    definition: JobDefinition
    enabled: bool


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    cause: str  # the event kind

    def covers(self, at: datetime) -> bool:
        return self.start <= at <= self.end


def apply_changes(definition: JobDefinition, changes: dict[str, Any]) -> JobDefinition:
    """What `set` does to a stored definition: cron and interval replace each other."""
    data = definition.model_dump()
    if changes.get("cron_expr") is not None:
        data["interval_seconds"] = None
    if changes.get("interval_seconds") is not None:
        data["cron_expr"] = None
    data.update(changes)
    return load_definition(data, source="set")


def segments(job_id: str, file_definition: JobDefinition, events: list[Event]) -> list[Segment]:
    """The job's definition over time, from the end of its first successful seed."""
    out: list[Segment] = []
    current: tuple[JobDefinition, bool] | None = None
    for event in sorted(events, key=lambda e: e.end):
        if not event.ok or not event.is_control or not event.touches(job_id):
            continue
        if event.kind in ("seed", "reseed"):
            current = (file_definition, file_definition.enabled)
        elif current is None:
            continue  # nothing is due before the first seed
        elif event.kind == "pause":
            current = (current[0], False)
        elif event.kind == "resume":
            current = (current[0], True)
        elif event.kind == "set":
            current = (apply_changes(current[0], event.changes), current[1])
        out.append(Segment(event.end, *current))
    return out


def segment_at(parts: list[Segment], at: datetime) -> Segment | None:
    """The segment in force at `at` (None before the first seed)."""
    index = bisect.bisect_left([p.start for p in parts], at) - 1
    return parts[index] if index >= 0 else None


def due_slots(parts: list[Segment], until: datetime) -> list[datetime]:
    """Every slot the job owed between its first seed and `until`, on the schedule in force at each slot."""
    slots: list[datetime] = []
    for index, part in enumerate(parts):
        end = parts[index + 1].start if index + 1 < len(parts) else until
        end = min(end, until)
        plan = part.definition.schedule()
        if not part.enabled or plan is None or not part.definition.has_chain or end <= part.start:
            continue
        slots += [s for s in schedule.slots_between(plan, part.start, end, limit=1_000_000) if s > part.start]
    return slots


def windows(job_id: str, events: list[Event], limits: Limits) -> list[Window]:
    """The windows of excuse for one job: every fault, and every control action that touched the job."""
    pre = timedelta(seconds=limits.in_flight_sec)
    out = []
    for event in events:
        if event.is_fault:
            out.append(Window(event.start - pre, event.end + timedelta(seconds=limits.grace_sec), event.kind))
        elif event.is_control and event.touches(job_id):
            out.append(Window(event.start - pre, event.end + timedelta(seconds=limits.after_action_sec), event.kind))
    return out


def covering(wins: list[Window], at: datetime) -> Window | None:
    return next((w for w in wins if w.covers(at)), None)


def fire_time(definition: JobDefinition, slot: datetime) -> datetime:
    """When the slot's message was meant to arrive: the slot plus the job's deterministic jitter."""
    return slot + schedule.slot_jitter(definition.job_id, slot, definition.jitter_sec)
