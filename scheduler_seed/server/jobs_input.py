"""The seed's job bodies as job definitions: a pure translation at the door of `POST /jobs` and `PATCH`.

The cheat sheet of `001_646fd6323acf08fa.txt` posts bodies such as

    {"job_id": "mock-buy-scanner", "queue": "mock.jobs.buy-scanner", "cron_expr": "*/5 * * * *",
     "reschedule_mode": "queue", "interval_seconds": 120, "description": "Mock buy scanner auto", "enabled": true}

Two things differ from a jobs-file table: the queue is the full name `<scope>.jobs.<name>` (accepted in its own
scope, refused in another), and `cron_expr` comes with `interval_seconds`. Then the cron names the slots and the
interval is kept as the period the operator expects (`expected_period_sec`, what the job-state metrics and the
overdue alert use). Everything else is validated by `JobDefinition` as for a jobs file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from shared import topology
from shared.control import InvalidDefinition
from shared.store.jobs import JobRow

ScheduledBy = Literal["cron_expr", "interval_seconds", "none"]
_FULL_QUEUE = re.compile(r"^(?P<scope>[^.]+)\.jobs\.(?P<name>.+)$")


def short_queue(queue: str, scope: str, job_id: Any = "?") -> str:
    """`<scope>.jobs.<name>` -> `<name>` for this server's scope; a queue of another scope is refused."""
    match = _FULL_QUEUE.match(queue)
    if match is None:
        return queue  # a short name (or a bad one, which the definition refuses with its own message)
    if match["scope"] != scope:
        raise InvalidDefinition(
            f"job {job_id!r}: queue: {queue!r} is a queue of scope {match['scope']!r}; this server serves scope "
            f"{scope!r}: give {topology.work_queue_name(scope, match['name'])!r} or the short name {match['name']!r}",
            ["queue"],
        )
    return match["name"]


def translate(body: Mapping[str, Any], scope: str) -> dict[str, Any]:
    """A job body (a whole definition or the changes of a PATCH) in jobs-file terms (see the module docstring)."""
    data = dict(body)
    job_id = data.get("job_id", "?")
    if isinstance(data.get("queue"), str):
        data["queue"] = short_queue(data["queue"], scope, job_id)
    cron, interval = data.get("cron_expr"), data.get("interval_seconds")
    if cron is not None and interval is not None:
        declared = data.get("expected_period_sec")
        if declared is not None and declared != interval:
            raise InvalidDefinition(
                f"job {job_id!r}: interval_seconds: with cron_expr it is the expected period, and "
                f"expected_period_sec says {declared!r}: give one of them",
                ["interval_seconds", "expected_period_sec"],
            )
        data["expected_period_sec"] = interval
        del data["interval_seconds"]
    return data


def scheduled_by(row: JobRow) -> ScheduledBy:
    """Which field names the job's slots: its cron expression, its interval, or neither (by hand, on events)."""
    if not row.has_chain:
        return "none"
    return "cron_expr" if row.cron_expr is not None else "interval_seconds"
