"""Stored rows built in memory, for unit tests of code that reads them (no database)."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from shared.store.jobs import JobRow

CREATED = datetime(2026, 1, 5, tzinfo=UTC)


def job_row(job_id: str, **overrides: Any) -> JobRow:
    """A stored job with plain defaults: an enabled 60 s interval chain job on a queue named like the job."""
    values: dict[str, Any] = {
        "scope": "s", "job_id": job_id, "description": "", "queue": job_id, "cron_expr": None, "timezone": "UTC",
        "interval_seconds": 60, "align": False, "enabled": True, "default_params": {}, "timeout_sec": 60.0,
        "max_attempts": 1, "retry_backoff_sec": 1.0, "retry_backoff_max_sec": 60.0, "max_parallel": 1,
        "overlap": "skip", "jitter_sec": 0.0, "lock_group": None, "misfire_grace_sec": 300.0,
        "run_on_startup": False, "reschedule_mode": "queue", "on_success": [], "queue_type": "classic", "epoch": 1,
        "pause_note": None, "next_due_at": None, "last_run_at": None, "last_status": None, "last_error": None,
        "last_duration_ms": None, "last_lateness_ms": None, "last_success_at": None, "consecutive_failures": 0,
        "created_at": CREATED, "updated_at": CREATED, "expected_period_sec": None, "triggers_on": [], "filter": None,
        "on_paused_event": "drop", "catchup": "none", "catchup_max": 10, "catchup_rate_per_sec": 1.0,
        "paused_until": None, "paused_from": None, "dst_gap": None, "dst_overlap": None, "labels": {},
        "buffer_max": 10,
    }  # fmt: skip
    values.update(overrides)
    assert set(values) == {f.name for f in fields(JobRow)}, "a JobRow field is missing here or unknown"
    return JobRow(**values)
