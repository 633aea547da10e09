"""The checker's report: per job and in total, as JSON and as a short text table."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from tests.chaos.faultlog import iso


@dataclass(frozen=True)
class Violation:
    kind: str  # slot_run_twice, overlap, lost_slot, off_schedule, ran_while_paused, retry_missing, soak_check, ...
    job_id: str | None
    detail: dict[str, Any]


@dataclass
class JobReport:
    job_id: str
    schedule: str
    due: int = 0
    ran: int = 0  # some attempt of the slot executed
    ran_once: int = 0  # ... and no execution was a duplicate
    ran_twice: int = 0
    skipped: int = 0  # recorded skipped_locked / skipped_misfire / expired (a policy, not a loss)
    skipped_by_misfire: int = 0  # no row: jumped over by a run recorded skipped_misfire (the misfire policy)
    abandoned_unstarted: int = 0  # recorded abandoned before its handler started
    pending: int = 0  # claimed or buffered but not started when the soak ended
    lost_in_window: int = 0
    lost: int = 0  # not run, no policy skipped it, outside every window: a violation
    no_ledger_row: int = 0  # a due slot (or one of a resumed pause) with no row at all: a violation
    caught_up: int = 0  # of `ran`: run by the job's catch-up policy after it was missed
    stray: int = 0  # rows of slots that were not due, outside windows: a violation
    overlaps: int = 0
    reruns_after_crash: int = 0  # the same attempt run again after its process was killed mid-run (take-over)
    abandoned: int = 0
    abandoned_retried: int = 0
    reseeds: int = 0
    lateness_ms: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["lateness_ms"] = percentiles(self.lateness_ms)
        return data


@dataclass
class Report:
    scope: str
    observed_from: datetime | None
    observed_to: datetime | None
    limits: dict[str, float]
    jobs: dict[str, JobReport] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    findings: list[Violation] = field(default_factory=list)  # anomalies worth a look that break no invariant
    lost_in_window_by_cause: Counter[str] = field(default_factory=Counter)
    abandoned: list[dict[str, Any]] = field(default_factory=list)
    reseeds: list[dict[str, Any]] = field(default_factory=list)
    epochs: dict[str, dict[str, int]] = field(default_factory=dict)
    recovery: list[dict[str, Any]] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    checks: dict[str, bool] = field(default_factory=dict)  # the soak's own checks (one chain per job, ...)
    sources: dict[str, Any] = field(default_factory=dict)
    events: dict[str, dict[str, int]] = field(default_factory=dict)  # per event-triggered job: (job, event) pairs

    def add(self, kind: str, job_id: str | None, **detail: Any) -> None:
        self.violations.append(Violation(kind, job_id, {k: _plain(v) for k, v in detail.items()}))

    def note(self, kind: str, job_id: str | None, **detail: Any) -> None:
        self.findings.append(Violation(kind, job_id, {k: _plain(v) for k, v in detail.items()}))

    @property
    def ok(self) -> bool:
        return not self.violations

    def totals(self) -> dict[str, Any]:
        keys = [
            "due", "ran", "ran_once", "ran_twice", "skipped", "skipped_by_misfire", "abandoned_unstarted",
            "pending", "lost_in_window", "lost", "no_ledger_row", "caught_up", "stray", "overlaps",
            "reruns_after_crash", "abandoned", "abandoned_retried", "reseeds",
        ]  # fmt: skip
        totals: dict[str, Any] = {k: sum(getattr(j, k) for j in self.jobs.values()) for k in keys}
        totals["lateness_ms"] = percentiles([x for j in self.jobs.values() for x in j.lateness_ms])
        totals["violations"] = len(self.violations)
        totals["findings"] = len(self.findings)
        return totals

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "scope": self.scope,
            "observed_from": None if self.observed_from is None else iso(self.observed_from),
            "observed_to": None if self.observed_to is None else iso(self.observed_to),
            "limits": self.limits,
            "totals": self.totals(),
            "violations": [asdict(v) for v in self.violations],
            "findings": [asdict(v) for v in self.findings],
            "lost_in_window_by_cause": dict(self.lost_in_window_by_cause),
            "faults": dict(self.faults),
            "checks": self.checks,
            "recovery": self.recovery,
            "abandoned": self.abandoned,
            "reseeds": self.reseeds,
            "epochs": self.epochs,
            "jobs": {job_id: j.to_json() for job_id, j in sorted(self.jobs.items())},
            "sources": self.sources,
            "events": self.events,
        }

    def table(self, max_violations: int = 20) -> str:
        """A short text report: one line per job, totals, recovery per fault, the first violations."""
        head = ["job", "schedule", "due", "ran", "twice", "skip", "lost(win)", "LOST", "NOROW", "stray", "ovl",
                "aband(retr)", "p50/p99/max ms"]  # fmt: skip
        rows = [_job_row(j) for _, j in sorted(self.jobs.items())]
        total = _job_row(_sum_job(self.jobs.values()))
        total[0], total[1] = "TOTAL", f"{len(self.jobs)} jobs"
        lines = _grid(head, [*rows, total])
        lines.append("")
        lines.append("faults: " + (", ".join(f"{k} x{n}" for k, n in sorted(self.faults.items())) or "none"))
        for job_id, tally in sorted(self.events.items()):
            lines.append(f"events of {job_id}: " + ", ".join(f"{k} {v}" for k, v in tally.items()))
        if self.checks:
            lines.append("soak checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in self.checks.items()))
        if self.lost_in_window_by_cause:
            causes = ", ".join(f"{k} {n}" for k, n in sorted(self.lost_in_window_by_cause.items()))
            lines.append(f"slots lost inside windows, by window: {causes}")
        if self.recovery:
            lines.append("")
            lines += _grid(
                ["fault", "at", "lasted s", "recovered", "p50 s", "max s", "slowest"],
                [_recovery_row(r) for r in self.recovery],
            )
        if self.findings:
            kinds = Counter(f.kind for f in self.findings)
            lines.append("findings (no invariant broken): " + ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())))
        lines.append("")
        if self.ok:
            lines.append(
                "OK: no slot ran twice, no forbidden overlap, no slot lost outside a fault window,"
                " no slot without a ledger row"
            )
        else:
            lines.append(f"VIOLATIONS: {len(self.violations)}")
            for v in self.violations[:max_violations]:
                lines.append(f"  {v.kind} {v.job_id or '-'} {v.detail}")
        return "\n".join(lines)


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"n": len(ordered), "p50": round(statistics.median(ordered), 1), "p99": round(p99, 1),
            "max": round(ordered[-1], 1)}  # fmt: skip


def _sum_job(jobs: Any) -> JobReport:
    total = JobReport("", "")
    for job in jobs:
        for name, value in vars(job).items():
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(total, name, getattr(total, name) + value)
        total.lateness_ms.extend(job.lateness_ms)
    return total


def _job_row(j: JobReport) -> list[str]:
    late = percentiles(j.lateness_ms)
    spread = "-" if not late["n"] else f"{late['p50']:g}/{late['p99']:g}/{late['max']:g}"
    skipped = j.skipped + j.skipped_by_misfire + j.abandoned_unstarted
    return [j.job_id, j.schedule, str(j.due), str(j.ran), str(j.ran_twice), str(skipped), str(j.lost_in_window),
            str(j.lost), str(j.no_ledger_row), str(j.stray), str(j.overlaps), f"{j.abandoned}({j.abandoned_retried})",
            spread]  # fmt: skip


def _recovery_row(r: dict[str, Any]) -> list[str]:
    def num(v: Any) -> str:
        return "-" if v is None else f"{v:.1f}"

    return [r["kind"], r["start"][11:19], num(r["lasted_sec"]), f"{r['recovered']}/{r['jobs']}", num(r["p50_sec"]),
            num(r["max_sec"]), r["slowest"] or "-"]  # fmt: skip


def _grid(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
