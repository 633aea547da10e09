"""The audit trail of operator changes: what each change looked like before and after, and reading it back.

A job's snapshot is its declared definition plus whether it is enabled and the pause note; a change records only
the fields that differ, so a row reads as "interval_seconds 60 -> 30" and not as two whole definitions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from shared.control.results import AuditEntry
from shared.store import audit as audit_store
from shared.store.jobs import DEFINITION_COLUMNS, JobRow


def snapshot(row: JobRow | None) -> dict[str, Any] | None:
    """The declared state of a job as JSON-ready values (None: no such job)."""
    if row is None:
        return None
    state: dict[str, Any] = {name: getattr(row, name) for name in DEFINITION_COLUMNS}
    state["on_success"] = list(row.on_success)
    state["pause_note"] = row.pause_note
    state["paused_until"] = None if row.paused_until is None else row.paused_until.isoformat()
    return state


def difference(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Only the fields whose values differ (a job created or deleted keeps its whole side)."""
    if before is None or after is None:
        return before, after
    keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return {k: before.get(k) for k in keys}, {k: after.get(k) for k in keys}


async def record(
    conn: asyncpg.Connection,
    scope: str,
    actor: str,
    action: str,
    job_id: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    note: str | None = None,
) -> datetime:
    return await audit_store.record(conn, scope, actor, action, job_id, before, after, note)


async def recent(conn: asyncpg.Connection, scope: str, limit: int, job_id: str | None) -> list[AuditEntry]:
    fields = ("id", "at", "actor", "action", "job_id", "before", "after", "note")
    return [
        AuditEntry(**{name: r[name] for name in fields}) for r in await audit_store.recent(conn, scope, limit, job_id)
    ]
