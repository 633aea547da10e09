"""Seeding over a live definition: which of the file's values apply, which runtime changes stay. Pure code.

After a job's first seed the database holds its live definition; `pause`, `set` and the HTTP API change it
without touching the jobs file. Each seed stores what the file said (`scheduler.jobs.seeded_definition`), so
the next seed can tell, field by field, who changed what since then:

| file since last seed | live since last seed | result                     | reported        |
|----------------------|----------------------|----------------------------|-----------------|
| unchanged            | unchanged            | as is                      | -               |
| edited               | unchanged            | the file's value           | applied         |
| unchanged            | changed at runtime   | the live value stays       | drift           |
| edited               | changed at runtime   | the live value stays       | drift (both)    |
| any                  | any, equal to file   | the (same) value           | -               |

`reset` gives every field the file's value (reported as reset where the live value differed).

A job with no stored seed (created through the control layer, or seeded before seeds were recorded) has no
baseline: every field where the live value differs from the file counts as a runtime change (kept, reported),
because a pause or a `set` must never be undone by a deploy; `seed --reset JOB` applies the file.

Fields that only make sense together move together: a schedule is `cron_expr` or `interval_seconds` (and a
`reschedule_mode`), so a runtime switch to an interval and a file edit of the cron expression cannot combine
into a job with both; the same for the two retry back-off bounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.control.results import FieldDrift

# Fields decided as one: a group keeps its live values or takes the file's, never half of each.
GROUPS: tuple[tuple[str, ...], ...] = (
    ("cron_expr", "interval_seconds", "reschedule_mode"),
    ("retry_backoff_sec", "retry_backoff_max_sec"),
)

# What a job's chain depends on: a change to any of these starts a new chain; to anything else (params, timeouts,
# overlap, ...) it does not, since a worker reads those from the row when the next message arrives.
CHAIN_FIELDS = frozenset(
    {"cron_expr", "interval_seconds", "timezone", "align", "jitter_sec", "enabled", "reschedule_mode", "queue",
     "queue_type", "dst_gap", "dst_overlap"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Merged:
    """One job's definition after a seed: the values to store and what the seed reports about them."""

    values: dict[str, Any]  # every declared field
    applied: tuple[str, ...]  # file edits taken (nobody changed the field at runtime)
    drift: tuple[FieldDrift, ...]  # runtime changes kept although the file differs
    reset: tuple[FieldDrift, ...]  # runtime changes replaced by the file's values (`reset`)


def groups(fields: Sequence[str]) -> list[tuple[str, ...]]:
    """`fields` partitioned into the decision groups (GROUPS, every other field alone), in field order."""
    grouped = {field: group for group in GROUPS for field in group}
    seen: list[tuple[str, ...]] = []
    for field in fields:
        group = grouped.get(field, (field,))
        if group not in seen:
            seen.append(group)
    return seen


def merge(
    file: Mapping[str, Any], live: Mapping[str, Any], seeded: Mapping[str, Any] | None, reset: bool = False
) -> Merged:
    """The definition a seed stores, from what the file says now (`file`), the live row (`live`) and what the
    file said at the last seed (`seeded`, None when unknown). All three map every declared field to its value."""
    baseline = file if seeded is None else seeded
    values: dict[str, Any] = {}
    applied: list[str] = []
    drift: list[FieldDrift] = []
    undone: list[FieldDrift] = []
    for group in groups(list(file)):
        differing = [f for f in group if live.get(f) != file[f]]
        runtime = any(live.get(f) != baseline.get(f) for f in group)
        edited = any(file[f] != baseline.get(f) for f in group)
        keep = bool(differing) and runtime and not reset
        for field in group:
            values[field] = live.get(field) if keep else file[field]
        if not differing:
            continue
        changes = [FieldDrift(f, file[f], live.get(f), file[f] != baseline.get(f)) for f in differing]
        if keep:
            drift += changes
        elif runtime:
            undone += changes
        elif edited:
            applied += differing
    return Merged(values, tuple(applied), tuple(drift), tuple(undone))


def chain_affected(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Whether going from `before` to `after` changes what the job's chain depends on."""
    return any(before.get(field) != after.get(field) for field in CHAIN_FIELDS)
