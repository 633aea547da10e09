"""Prometheus metrics of a worker (DESIGN section 10). Dashboards and alert rules use exactly these names.

Labels are bounded: scope, job_id (only ids of jobs that exist in scheduler.jobs), queue (work queues of those
jobs), status, trigger_source, reason, outcome, dependency. Never a run_id, an error text or a job id taken from
an unvalidated message.

Two kinds of series:
- event series, updated where things happen (protocol, execution, watchdog): runs, durations, lateness, drops;
- job state series, read from PostgreSQL by `keep_job_metrics` every few seconds (the record is shared by every
  replica, so each replica exports the same truth): expected period, success deadline, failures in a row, live
  workers per queue. Alert rules compare the two (see deploy/prometheus/alerts.yml).

Known label values are created at zero up front (`publish_jobs`): `increase()` and `rate()` only see a counter's
first event if the series already existed before it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from wsgiref.simple_server import WSGIServer

import asyncpg
import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared import schedule
from shared.store import jobs as jobs_store
from shared.store.jobs import JobRow

log = structlog.get_logger("shared.metrics")

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

# The values the code uses today, created at zero so the first event shows in increase()/rate(). A value not
# listed here is still counted when it happens; it only lacks its zero.
DROP_REASONS = (
    "disabled", "stale_epoch", "expired", "misfire", "duplicate", "already_done", "owner_dead_lock_busy",
    "buffer_gave_up",
)  # fmt: skip
PARK_REASONS = (
    "too_large", "encoding", "not_json", "schema", "wrong_scope", "unknown_job", "wrong_queue", "no_handler",
    "internal_error",
)  # fmt: skip
RESEED_REASONS = ("overdue", "never_seeded")
CONTENTION_OUTCOMES = ("skipped", "buffered")
ZERO_RUN_STATUSES = ("succeeded", "failed", "timed_out", "abandoned", "skipped_locked", "skipped_misfire")
REFRESH_TIMEOUT_SEC = 15.0
LOG_DROP_REASONS = ("queue_full", "push_failed", "rejected", "shutdown")


class Metrics:
    """One set of collectors per process (a registry may be passed in for tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        kw: dict[str, Any] = {"registry": registry} if registry is not None else {}
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
        self.log_lines_pushed = Counter("scheduler_log_lines_pushed_total", "Log lines accepted by Loki", **kw)
        self.log_lines_dropped = Counter(
            "scheduler_log_lines_dropped_total", "Log lines not delivered to Loki, by reason", ["reason"], **kw
        )
        self.job_state = JobStateCollector()
        (registry if registry is not None else REGISTRY).register(self.job_state)
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


# -- job state read from the record ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobState:
    """What the job-state series need of one enabled job."""

    scope: str
    job_id: str
    plan: schedule.Schedule | None  # None: the job has no chain (event-only)
    created_at: float
    consecutive_failures: int


def success_deadline(plan: schedule.Schedule, now: datetime) -> datetime | None:
    """The instant a job's last success must be later than, or two slots went by without one.

    Interval jobs: twice the period before now. Cron jobs: the slot before the last slot that fell due, so a
    weekday job is not overdue over a weekend. None when a cron job has no two slots in the look-back window.
    """
    if isinstance(plan, schedule.IntervalSchedule):
        return now - 2 * schedule.period_estimate(plan)
    last = schedule.previous_slot(plan, now)
    if last is None:
        return None
    return schedule.previous_slot(plan, last - timedelta(microseconds=1))


class JobStateCollector(Collector):
    """Exports the job state last handed over by `publish_jobs`; the deadline is computed at scrape time."""

    def __init__(self) -> None:
        self._jobs: tuple[JobState, ...] = ()
        self._queues: tuple[tuple[str, str, int], ...] = ()
        # cron deadline per (job, plan): (valid from, valid until, deadline); recomputed when a new slot falls due
        self._cron_cache: dict[tuple[str, str, schedule.Schedule], tuple[datetime, datetime, datetime | None]] = {}

    def update(self, jobs: Iterable[JobState], queue_workers: Iterable[tuple[str, str, int]]) -> None:
        # one reference swap: a scrape running in the HTTP thread sees the old or the new snapshot, never half
        self._jobs = tuple(jobs)
        self._queues = tuple(queue_workers)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = datetime.now(UTC)
        period, deadline, created, failures, live = self._families()
        for job in self._jobs:
            labels = [job.scope, job.job_id]
            failures.add_metric(labels, job.consecutive_failures)
            if job.plan is None:
                continue
            period.add_metric(labels, schedule.period_estimate(job.plan).total_seconds())
            created.add_metric(labels, job.created_at)
            due = self._deadline(job, now)
            if due is not None:
                deadline.add_metric(labels, due.timestamp())
        for scope, queue, count in self._queues:
            live.add_metric([scope, queue], count)
        yield from (period, deadline, created, failures, live)

    def _deadline(self, job: JobState, now: datetime) -> datetime | None:
        assert job.plan is not None
        if isinstance(job.plan, schedule.IntervalSchedule):
            return success_deadline(job.plan, now)
        key = (job.scope, job.job_id, job.plan)
        cached = self._cron_cache.get(key)
        if cached is not None and cached[0] <= now < cached[1]:
            return cached[2]
        due = success_deadline(job.plan, now)
        valid_from = schedule.previous_slot(job.plan, now) or now
        self._cron_cache[key] = (valid_from, schedule.next_slot(job.plan, now), due)
        return due

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        job = ["scope", "job_id"]
        return (
            GaugeMetricFamily(
                "scheduler_job_expected_period_seconds", "Typical time between the job's slots", labels=job
            ),
            GaugeMetricFamily(
                "scheduler_job_success_deadline_timestamp_seconds",
                "A last success older than this means two slots (interval jobs: two periods) went by without one",
                labels=job,
            ),
            GaugeMetricFamily(
                "scheduler_job_created_timestamp_seconds",
                "When the job was first declared (stands in for the last success of a job that never succeeded)",
                labels=job,
            ),
            GaugeMetricFamily(
                "scheduler_consecutive_failures", "Executed runs that failed in a row, from the record", labels=job
            ),
            GaugeMetricFamily(
                "scheduler_queue_live_workers",
                "Live workers consuming the work queue of enabled jobs of the scope",
                labels=["scope", "queue"],
            ),
        )


def publish_jobs(
    metrics: Metrics, scope: str, jobs: Sequence[JobRow], queues: Iterable[str], live_workers: Mapping[str, int]
) -> None:
    """Hand the job-state series the scope's jobs as stored now, and create the zero-valued series.

    `jobs` are all jobs of the scope (the active watchdog may reseed any of them); per-job series are exported
    for the jobs of `queues` (the work queues this worker serves); `live_workers` counts live workers per queue.
    """
    served = set(queues)
    states = [
        JobState(
            scope=scope,
            job_id=job.job_id,
            plan=job.schedule if job.has_chain else None,
            created_at=job.created_at.timestamp(),
            consecutive_failures=job.consecutive_failures,
        )
        for job in jobs
        if job.enabled and job.queue in served
    ]
    enabled_queues = sorted({job.queue for job in jobs if job.enabled})
    metrics.job_state.update(states, [(scope, q, live_workers.get(q, 0)) for q in enabled_queues])
    # Zero-valued series are created once per job (a label lookup per series is costly at thousands of jobs).
    if (scope, "") not in metrics.zeroed:
        for reason in DROP_REASONS:
            metrics.dropped.labels(scope, reason)
        for reason in PARK_REASONS:
            metrics.parked.labels(scope, reason)
        metrics.zeroed.add((scope, ""))
    for job in jobs:
        key = (scope, job.job_id)
        if key not in metrics.zeroed:
            for reason in RESEED_REASONS:
                metrics.reseeds.labels(scope, job.job_id, reason)
        if job.queue in served and (scope, job.job_id, job.has_chain) not in metrics.zeroed:
            _zero_job_series(metrics, scope, job)
            metrics.zeroed.add((scope, job.job_id, job.has_chain))
        metrics.zeroed.add(key)
        if job.last_success_at is not None and job.queue in served:
            metrics.observe_success(scope, job.job_id, job.last_success_at.timestamp())


def _zero_job_series(metrics: Metrics, scope: str, job: JobRow) -> None:
    metrics.running.labels(scope, job.job_id)
    metrics.retries.labels(scope, job.job_id)
    for outcome in CONTENTION_OUTCOMES:
        metrics.lock_contention.labels(scope, job.job_id, outcome)
    if job.has_chain:
        for status in ZERO_RUN_STATUSES:
            metrics.runs.labels(scope, job.job_id, status, "scheduler")


_LIVE_WORKERS_SQL = """
SELECT q AS queue, count(*)::int AS workers
FROM scheduler.workers, unnest(queues) AS q
WHERE scope = $1 AND scheduler.advisory_lock_held(lock_key)
GROUP BY q
"""


async def refresh_job_metrics(metrics: Metrics, pool: asyncpg.Pool, scope: str, queues: Iterable[str]) -> None:
    """Read the scope's jobs and live workers once and publish them (see `publish_jobs`)."""
    async with pool.acquire() as conn:
        jobs = await jobs_store.list_jobs(conn, scope)
        live = {r["queue"]: r["workers"] for r in await conn.fetch(_LIVE_WORKERS_SQL, scope)}
    publish_jobs(metrics, scope, jobs, queues, live)


async def keep_job_metrics(
    metrics: Metrics, pool: asyncpg.Pool, scope: str, queues: Iterable[str], period_sec: float = 5.0
) -> None:
    """Forever: refresh the job-state series, then sleep `period_sec`. A database that is down only delays the
    next refresh (the series keep their last values); this task never dies of it. Each refresh is also a probe
    of PostgreSQL, so `scheduler_dependency_up{dependency="postgres"}` comes back to 1 after an outage."""
    queues = list(queues)
    postgres_up = metrics.dependency_up.labels("postgres")
    failing = False
    while True:
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT_SEC):  # a hung connection counts as down, too
                await refresh_job_metrics(metrics, pool, scope, queues)
            postgres_up.set(1)
            if failing:
                log.info("metrics.job_state_refreshed")
            failing = False
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            postgres_up.set(0)
            if not failing:  # once per outage, not once per period
                log.warning("metrics.job_state_refresh_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            failing = True
        await asyncio.sleep(period_sec)


def serve(port: int, registry: CollectorRegistry | None = None) -> WSGIServer | None:
    """Expose /metrics on `port` (a daemon thread); port 0 means no endpoint. Returns the server (its
    `shutdown()` frees the port) or None."""
    if not port:
        return None
    server, _ = start_http_server(port, registry=registry if registry is not None else REGISTRY)
    return server
