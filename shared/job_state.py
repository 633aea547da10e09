"""The job-state series (DESIGN section 10): what the record says about each enabled job, exported as gauges.

The poller (`shared.job_metrics`) hands the collector a snapshot every few seconds; the success deadline is computed
at scrape time from the job's schedule (`success_deadline`, pure). The record is shared by every replica, so each
replica exports the same truth.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared import schedule


@dataclass(frozen=True, slots=True)
class JobState:
    """What the job-state series need of one enabled job."""

    scope: str
    job_id: str
    plan: schedule.Schedule | None  # None: the job has no chain (event-only)
    created_at: float
    consecutive_failures: int
    expected_period_sec: float | None = None  # declared by the operator; else the schedule's own estimate


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


def expected_period(job: JobState) -> float:
    """Seconds between the job's slots as the operator expects them: the declared period when there is one (a cron
    job given with `interval_seconds` too), else the schedule's own estimate."""
    if job.expected_period_sec is not None:
        return job.expected_period_sec
    assert job.plan is not None
    return schedule.period_estimate(job.plan).total_seconds()


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
            period.add_metric(labels, expected_period(job))
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
