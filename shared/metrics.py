"""Prometheus metrics of a worker (DESIGN section 10): the collectors. Dashboards and alert rules use exactly
these names.

Labels are bounded: scope, job_id (only ids of jobs that exist in scheduler.jobs), queue (work queues of those
jobs), status, trigger_source, reason, outcome, dependency. Never a run_id, an error text or a job id taken from
an unvalidated message. Label values come from `shared.vocabulary`.

Two kinds of series:
- event series, updated where things happen (protocol, execution, watchdog): runs, durations, lateness, drops;
- job state series (`shared.job_state`), read from PostgreSQL by the poller (`shared.job_metrics`): expected
  period, success deadline, failures in a row, live workers per queue. Alert rules compare the two (see
  deploy/prometheus/alerts.yml).

The HTTP endpoint is `shared.metrics_http`.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)

from shared.job_state import JobStateCollector

LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DURATION_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
LOG_DROP_REASONS = ("queue_full", "push_failed", "rejected", "shutdown")
"""Why a log line did not reach Loki (label `reason` of scheduler_log_lines_dropped_total; see shared.loki)."""


def new_registry() -> CollectorRegistry:
    """A worker's own registry, with the process, platform and GC collectors prometheus_client puts on its global
    one (so /metrics keeps its process_* and python_* series)."""
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


class Metrics:
    """The collectors of one worker, registered on `registry` (never on prometheus_client's global one: two
    workers, or a worker and a test, in one process each keep their own series)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        kw: dict[str, Any] = {"registry": registry}
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
        self.slots_not_run = Counter(
            "scheduler_slots_not_run_total",
            "Slots of the schedule recorded in the slot ledger as not run, by why (GapCause)",
            ["scope", "job_id", "reason"],
            **kw,
        )
        self.catchup_runs = Counter(
            "scheduler_catchup_runs_total",
            "Missed slots sent to run by the job's catch-up policy",
            ["scope", "job_id"],
            **kw,
        )
        self.retries = Counter("scheduler_retries_total", "Retry messages published", ["scope", "job_id"], **kw)
        self.retries_reposted = Counter(
            "scheduler_retries_reposted_total",
            "Retries that never arrived, published again by the watchdog",
            ["scope", "job_id"],
            **kw,
        )
        self.trigger_runs = Gauge(
            "scheduler_job_trigger_runs",
            "Executed runs of the job ever, by trigger source (from PostgreSQL: the same on every replica)",
            ["scope", "job_id", "trigger_source"],
            **kw,
        )
        self.dependency_up = Gauge("scheduler_dependency_up", "1 when the dependency answers", ["dependency"], **kw)
        self.worker = Info("scheduler_worker", "This worker process", **kw)
        self.log_lines_pushed = Counter("scheduler_log_lines_pushed_total", "Log lines accepted by Loki", **kw)
        self.log_lines_dropped = Counter(
            "scheduler_log_lines_dropped_total", "Log lines not delivered to Loki, by reason", ["reason"], **kw
        )
        self.job_state = JobStateCollector()
        registry.register(self.job_state)
        self._success_lock = threading.Lock()
        self._last_success: dict[tuple[str, str], float] = {}
        self.zeroed: set[tuple[str, ...] | tuple[str, str, bool]] = set()  # series created at zero (publish_jobs)

    def observe_success(self, scope: str, job_id: str, at: float) -> None:
        """Move the job's last-success time forward to `at` (Unix seconds); an older value never goes back.

        Both a run finishing here and the periodic read of the record report successes; whichever is newer wins.
        """
        key = (scope, job_id)
        with self._success_lock:
            if at <= self._last_success.get(key, float("-inf")):
                return
            self._last_success[key] = at
            self.last_success.labels(scope, job_id).set(at)
