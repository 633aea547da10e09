"""The job-metrics poller: reads the scope's jobs and live workers from PostgreSQL every few seconds, hands them to
the job-state collector (`shared.job_state`) and creates the zero-valued series of known label values.

Known label values are created at zero up front (`publish_jobs`): `increase()` and `rate()` only see a counter's
first event if the series already existed before it. The values come from `shared.vocabulary`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

import asyncpg

from shared import backoff
from shared.dependencies import CONNECT_ERRORS
from shared.job_state import JobState
from shared.metrics import Metrics
from shared.store import jobs as jobs_store
from shared.store import triggers
from shared.store.jobs import JobRow
from shared.vocabulary import (
    Contention,
    Dependency,
    DropReason,
    GapCause,
    ParkReason,
    ReseedReason,
    RunStatus,
    TriggerSource,
)

REFRESH_TIMEOUT_SEC = 15.0
ZERO_CHUNK = 200
"""New jobs whose zero-valued series are created between two turns of the event loop (about 50 ms of CPU: a worker
starting on 10,000 jobs would otherwise hold its loop for seconds)."""
OnJobs = Callable[[list[JobRow]], Awaitable[None]]
# the run statuses a chain job's runs_total series start at zero with (what a chain run can end as)
ZERO_RUN_STATUSES = (
    RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ABANDONED, RunStatus.SKIPPED_LOCKED,
    RunStatus.SKIPPED_MISFIRE,
)  # fmt: skip


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
            expected_period_sec=job.expected_period_sec,
        )
        for job in jobs
        if job.enabled and job.queue in served
    ]
    enabled_queues = sorted({job.queue for job in jobs if job.enabled})
    metrics.job_state.update(states, [(scope, q, live_workers.get(q, 0)) for q in enabled_queues])
    zero_series(metrics, scope, jobs, served)


def zero_series(metrics: Metrics, scope: str, jobs: Sequence[JobRow], served: set[str]) -> None:
    """Create the zero-valued series of `jobs` not created yet (per-job series for the jobs of `served` queues)
    and the latest success of each served job."""
    # Zero-valued series are created once per job (a label lookup per series is costly at thousands of jobs).
    if (scope, "") not in metrics.zeroed:
        for reason in DropReason:
            metrics.dropped.labels(scope, reason.value)
        for park in ParkReason:
            metrics.parked.labels(scope, park.value)
        metrics.zeroed.add((scope, ""))
    for job in jobs:
        key = (scope, job.job_id)
        if key not in metrics.zeroed:
            for reseed in ReseedReason:
                metrics.reseeds.labels(scope, job.job_id, reseed.value)
            for cause in GapCause:
                metrics.slots_not_run.labels(scope, job.job_id, cause.value)
            metrics.catchup_runs.labels(scope, job.job_id)
            metrics.retries_reposted.labels(scope, job.job_id)
        if job.queue in served and (scope, job.job_id, job.has_chain) not in metrics.zeroed:
            _zero_job_series(metrics, scope, job)
            metrics.zeroed.add((scope, job.job_id, job.has_chain))
        metrics.zeroed.add(key)
        if job.last_success_at is not None and job.queue in served:
            metrics.observe_success(scope, job.job_id, job.last_success_at.timestamp())


def _zero_job_series(metrics: Metrics, scope: str, job: JobRow) -> None:
    metrics.running.labels(scope, job.job_id)
    metrics.retries.labels(scope, job.job_id)
    for outcome in Contention:
        metrics.lock_contention.labels(scope, job.job_id, outcome.value)
    if job.has_chain:
        for status in ZERO_RUN_STATUSES:
            metrics.runs.labels(scope, job.job_id, status.value, TriggerSource.SCHEDULER.value)


_LIVE_WORKERS_SQL = """
SELECT q AS queue, count(*)::int AS workers
FROM scheduler.workers, unnest(queues) AS q
WHERE scope = $1 AND scheduler.advisory_lock_held(lock_key)
GROUP BY q
"""


async def refresh_job_metrics(
    metrics: Metrics, pool: asyncpg.Pool, scope: str, queues: Iterable[str], on_jobs: OnJobs | None = None
) -> None:
    """Read the scope's jobs and live workers once and publish them (see `publish_jobs`). A job row that no longer
    makes a job (a definition broken in SQL) is left out: the other jobs' series stay current. `on_jobs` gets the
    rows too (the worker's event consumers follow them: one read of the jobs serves both)."""
    async with pool.acquire() as conn:
        jobs, _bad = await jobs_store.list_jobs_checked(conn, scope)  # the reseed sweep logs the bad ones
        live = {r["queue"]: r["workers"] for r in await conn.fetch(_LIVE_WORKERS_SQL, scope)}
        counted = await triggers.counts(conn, scope)
    queues = list(queues)
    fresh = [job for job in jobs if (scope, job.job_id) not in metrics.zeroed]
    for start in range(0, len(fresh), ZERO_CHUNK):  # thousands of new jobs: let the runs go on in between
        zero_series(metrics, scope, fresh[start : start + ZERO_CHUNK], set(queues))
        await asyncio.sleep(0)
    publish_jobs(metrics, scope, jobs, queues, live)
    publish_trigger_counts(metrics, scope, jobs, queues, counted)
    if on_jobs is not None:
        await on_jobs(jobs)


def publish_trigger_counts(
    metrics: Metrics,
    scope: str,
    jobs: Sequence[JobRow],
    queues: Iterable[str],
    counted: Mapping[str, Mapping[str, int]],
) -> None:
    """The durable trigger counts (`scheduler.trigger_counts`) of the jobs of `queues`, as gauges."""
    served = set(queues)
    for job in jobs:
        if job.queue in served:
            for source, runs in counted.get(job.job_id, {}).items():
                metrics.trigger_runs.labels(scope, job.job_id, source).set(runs)


async def keep_job_metrics(
    metrics: Metrics,
    pool: asyncpg.Pool,
    scope: str,
    queues: Iterable[str],
    period_sec: float = 5.0,
    on_jobs: OnJobs | None = None,
) -> None:
    """Forever: refresh the job-state series, then sleep `period_sec`. A database that is down only delays the
    next refresh (retried with back-off, at most `period_sec` apart; the series keep their last values); this task
    never dies of it. Each refresh is also a probe of PostgreSQL, so `scheduler_dependency_up{dependency="postgres"}`
    comes back to 1 after an outage."""
    queues = list(queues)
    postgres_up = metrics.dependency_up.labels(Dependency.POSTGRES.value)

    async def refresh() -> None:
        async with asyncio.timeout(REFRESH_TIMEOUT_SEC):  # a hung connection counts as down, too
            await refresh_job_metrics(metrics, pool, scope, queues, on_jobs)

    while True:
        await backoff.forever(
            "job-state metrics",
            refresh,
            cap_sec=period_sec,
            errors=CONNECT_ERRORS,
            on_attempt=lambda ok: postgres_up.set(1 if ok else 0),
            event="metrics.job_state_refresh_failed",
        )
        await asyncio.sleep(period_sec)
