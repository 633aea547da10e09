"""The fault log: one JSON line per fault or control action, with when it started and when it ended.

    {"kind": "pg_outage", "start": "2026-...Z", "end": "2026-...Z", "ok": true, "detail": {"down_sec": 17.2}}
    {"kind": "set", "start": ..., "end": ..., "ok": true, "jobs": ["iv-03"], "changes": {"interval_seconds": 2}}

`jobs` is absent for faults that hit every job (a broker restart) and lists the jobs a control action touched.
`ok` is false when a control command failed (its effect is then unknown; the soak retries until one succeeds).
The soak writes it; the checker reads it.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Faults that can disturb every job: a window [start, end + grace] for all of them.
GLOBAL_FAULTS = frozenset({
    "worker_kill", "amqp_close", "amqp_restart", "pg_terminate", "pg_outage", "pg_crash",
    # the HA soak's (tests.chaos.ha_faults)
    "node_kill", "leader_kill", "node_stop_app", "rolling_restart", "node_freeze", "pg_switchover",
})  # fmt: skip
# Operator actions that restart chains: a window [start, end] for the jobs they touch.
CONTROL_ACTIONS = frozenset({"seed", "reseed", "pause", "resume", "set"})
# Everything else is a marker (soak_start, worker_start, faults_end, workers_stopping, worker_stop, soak_end) or the
# result of one of the soak's own checks (soak_check, `ok` false when it failed).


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Event:
    kind: str
    start: datetime
    end: datetime
    ok: bool = True
    jobs: tuple[str, ...] | None = None  # None: every job
    changes: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def is_fault(self) -> bool:
        return self.kind in GLOBAL_FAULTS

    @property
    def is_control(self) -> bool:
        return self.kind in CONTROL_ACTIONS

    def touches(self, job_id: str) -> bool:
        return self.jobs is None or job_id in self.jobs

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "start": iso(self.start), "end": iso(self.end), "ok": self.ok}
        if self.jobs is not None:
            data["jobs"] = list(self.jobs)
        if self.changes:
            data["changes"] = self.changes
        if self.detail:
            data["detail"] = self.detail
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        jobs = data.get("jobs")
        return cls(
            kind=str(data["kind"]),
            start=parse_time(data["start"]),
            end=parse_time(data["end"]),
            ok=bool(data.get("ok", True)),
            jobs=None if jobs is None else tuple(jobs),
            changes=dict(data.get("changes") or {}),
            detail=dict(data.get("detail") or {}),
        )


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class FaultLog:
    """Appends events to a JSON-lines file, one write per line, flushed at once (a crash loses nothing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: Event) -> Event:
        line = json.dumps(event.to_json(), sort_keys=True) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(line)
        return event

    def mark(self, kind: str, **detail: Any) -> Event:
        now = utcnow()
        return self.write(Event(kind, now, now, detail=detail))


def read_events(path: Path) -> list[Event]:
    """Every event of a fault log, ordered by start time."""
    events = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            events.append(Event.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a fault log line: {exc}") from None
    return sorted(events, key=lambda e: (e.start, e.end))
