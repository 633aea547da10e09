"""Prometheus metrics of a worker (DESIGN section 10). Dashboards and alert rules use exactly these names.

Labels are bounded: scope, job_id (only ids of jobs that exist in scheduler.jobs), status, trigger_source, reason.
Never a run_id, an error text or a job id taken from an unvalidated message.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DURATION_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)


class Metrics:
    """One set of collectors per process (a registry may be passed in for tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        kw = {"registry": registry} if registry is not None else {}
        self.registry = registry
        self.runs = Counter(
            "scheduler_runs_total",
            "Runs recorded, by final status",
            ["scope", "job_id", "status", "trigger_source"],
            **kw,
        )
        self.run_duration = Histogram(
            "scheduler_run_duration_seconds", "Handler wall time", ["scope", "job_id"], buckets=DURATION_BUCKETS, **kw
        )
        self.start_lateness = Histogram(
            "scheduler_start_lateness_seconds",
            "Handler start minus intended fire time (slot plus jitter)",
            ["scope", "job_id", "trigger_source"],
            buckets=LATENESS_BUCKETS,
            **kw,
        )
        self.last_success = Gauge(
            "scheduler_last_success_timestamp_seconds", "Unix time of the job's last success", ["scope", "job_id"], **kw
        )
        self.running = Gauge("scheduler_running", "Runs executing now in this process", ["scope", "job_id"], **kw)
        self.dropped = Counter(
            "scheduler_messages_dropped_total", "Messages acked without a run, by reason", ["scope", "reason"], **kw
        )
        self.parked = Counter(
            "scheduler_messages_parked_total",
            "Messages sent to the parking queue, by reason",
            ["scope", "reason"],
            **kw,
        )
        self.reseeds = Counter(
            "scheduler_chain_reseeds_total", "Chains replaced, by reason", ["scope", "job_id", "reason"], **kw
        )
        self.lock_contention = Counter(
            "scheduler_lock_contention_total",
            "Messages that found every lock slot taken, by what happened",
            ["scope", "job_id", "outcome"],
            **kw,
        )
        self.retries = Counter("scheduler_retries_total", "Retry messages published", ["scope", "job_id"], **kw)
        self.dependency_up = Gauge("scheduler_dependency_up", "1 when the dependency answers", ["dependency"], **kw)
        self.worker = Info("scheduler_worker", "This worker process", **kw)


def serve(port: int, registry: CollectorRegistry | None = None) -> None:
    """Expose /metrics on `port` (a daemon thread); port 0 means no endpoint."""
    if port:
        if registry is None:
            start_http_server(port)
        else:
            start_http_server(port, registry=registry)
