"""The history the checker judges, and where it comes from.

* `runs`: the framework's record, `scheduler.job_runs` of the scope (read from PostgreSQL, or a JSON-lines dump);
* `executions`: the handler's own record of every execution it started and ended (tests.chaos.worker), which
  does not trust the framework: it shows a slot that ran twice even where the framework's rows could not;
* `log_events`: `chain.reseeded` and `run.abandoned` lines of the workers' JSON logs (why a chain was reseeded,
  whether an abandoned run was to be retried);
* `events`: the fault log; `jobs`: the jobs file; `final_epochs`: the jobs table at the end.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from shared.definitions import JobDefinition
from tests.chaos.faultlog import Event, iso, parse_time

LOG_EVENTS = frozenset({"chain.reseeded", "run.abandoned"})


@dataclass(frozen=True)
class Run:
    """One row of scheduler.job_runs."""

    run_id: str
    job_id: str
    epoch: int | None
    trigger_source: str
    scheduled_for: datetime
    attempt: int
    status: str
    worker: str | None = None
    claimed_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_posted_for: datetime | None = None
    error: str | None = None

    @property
    def is_slot(self) -> bool:
        """A chain slot or a retry of one (they carry the epoch they were posted in)."""
        return self.epoch is not None

    @property
    def executed(self) -> bool:
        return self.started_at is not None

    @property
    def pid(self) -> int | None:
        """The worker process id, from the worker id `<service>-<host>-<pid>-<hex>`."""
        if not self.worker:
            return None
        parts = self.worker.rsplit("-", 2)
        return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None

    def to_json(self) -> dict[str, Any]:
        return {k: iso(v) if isinstance(v, datetime) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        times = ("scheduled_for", "claimed_at", "started_at", "finished_at", "next_posted_for")
        fields: dict[str, Any] = {k: parse_time(v) if k in times and v is not None else v for k, v in data.items()}
        return cls(**fields)


@dataclass(frozen=True)
class Execution:
    """One handler execution as the handler itself recorded it; `ended` is None when its process was killed."""

    run_id: str
    job_id: str
    scheduled_for: datetime
    attempt: int
    trigger_source: str
    pid: int
    started: datetime
    ended: datetime | None = None
    outcome: str | None = None

    @property
    def is_slot(self) -> bool:
        return self.trigger_source in ("scheduler", "retry")


@dataclass(frozen=True)
class LogEvent:
    at: datetime
    event: str
    job_id: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class History:
    scope: str
    jobs: dict[str, JobDefinition]
    events: list[Event]
    runs: list[Run]
    executions: list[Execution] | None = None
    log_events: list[LogEvent] | None = None
    final_epochs: dict[str, int] | None = None


# -- loading ---------------------------------------------------------------------------------------------------

# finished_at is written from the worker's clock (when its handler stopped); started_at from PostgreSQL's. A run's
# end on PostgreSQL's clock is its start plus its duration: the time line every other stamp is on, also when a
# worker's clock is skewed (the HA soak's). Rows without a start keep their finished_at.
RUN_COLUMNS = (
    "run_id::text AS run_id, job_id, epoch, trigger_source, scheduled_for, attempt, status, worker, claimed_at,"
    " started_at, COALESCE(started_at + duration_ms * interval '1 millisecond', finished_at) AS finished_at,"
    " next_posted_for, error"
)


async def load_runs(dsn: str, scope: str) -> tuple[list[Run], dict[str, int]]:
    """Every run of the scope, and each job's epoch now."""
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        rows = await conn.fetch(
            f"SELECT {RUN_COLUMNS} FROM scheduler.job_runs WHERE scope = $1 ORDER BY scheduled_for, attempt", scope
        )
        epochs = await conn.fetch("SELECT job_id, epoch FROM scheduler.jobs WHERE scope = $1", scope)
    finally:
        await conn.close()
    return [Run(**dict(r)) for r in rows], {r["job_id"]: r["epoch"] for r in epochs}


def dump_runs(path: Path, runs: list[Run], epochs: dict[str, int]) -> None:
    """The runs as JSON lines (plus a first line with the epochs), for the checker to read again later."""
    with path.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"final_epochs": epochs}) + "\n")
        for run in runs:
            out.write(json.dumps(run.to_json()) + "\n")


def read_runs(path: Path) -> tuple[list[Run], dict[str, int]]:
    runs, epochs = [], {}
    for line in path.read_text(encoding="utf-8").splitlines():
        data = json.loads(line)
        if "final_epochs" in data:
            epochs = data["final_epochs"]
        else:
            runs.append(Run.from_json(data))
    return runs, epochs


def read_executions(directory: Path) -> list[Execution]:
    """Pair each start line with its end line (by run id and pid)."""
    starts: dict[tuple[str, int], dict[str, Any]] = {}
    ends: dict[tuple[str, int], dict[str, Any]] = {}
    for path in sorted(directory.glob("exec-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                data = json.loads(line)
            except ValueError:
                continue  # a line cut by kill -9 mid-write
            key = (data["run_id"], int(data["pid"]))
            (starts if data["event"] == "start" else ends)[key] = data
    out = []
    for key, start in starts.items():
        end = ends.get(key)
        out.append(
            Execution(
                run_id=start["run_id"],
                job_id=start["job_id"],
                scheduled_for=parse_time(start["scheduled_for"]),
                attempt=int(start["attempt"]),
                trigger_source=start["trigger_source"],
                pid=key[1],
                started=datetime.fromtimestamp(start["at"], UTC),
                ended=None if end is None else datetime.fromtimestamp(end["at"], UTC),
                outcome=None if end is None else end["outcome"],
            )
        )
    return sorted(out, key=lambda e: e.started)


def read_log_events(paths: list[Path]) -> list[LogEvent]:
    """`chain.reseeded` and `run.abandoned` lines of the workers' JSON logs."""
    found = []
    for path in paths:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.startswith("{") or not any(name in line for name in LOG_EVENTS):
                continue
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if data.get("event") in LOG_EVENTS and "job_id" in data and "timestamp" in data:
                found.append(LogEvent(parse_time(data["timestamp"]), data["event"], data["job_id"], data))
    return sorted(found, key=lambda e: e.at)
