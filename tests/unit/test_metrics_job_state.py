"""The job-state series and the zero-valued series a worker exports: pure code, a private registry, no servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry

from shared.job_metrics import publish_jobs
from shared.job_state import success_deadline
from shared.metrics import Metrics
from shared.schedule import make_schedule
from shared.vocabulary import DropReason, ParkReason
from tests.support.rows import CREATED, job_row

SEOUL = ZoneInfo("Asia/Seoul")


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    assert metrics.registry is not None
    return metrics.registry.get_sample_value(name, labels)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


# -- the deadline a last success must beat --------------------------------------------------------------------


def test_interval_job_is_due_a_success_within_twice_its_period() -> None:
    plan = make_schedule(cron_expr=None, timezone="UTC", interval_seconds=30, job_id="j", align=True)
    now = datetime(2026, 3, 2, 10, 0, 7, tzinfo=UTC)
    assert success_deadline(plan, now) == now - timedelta(seconds=60)


@pytest.mark.parametrize(
    ("now_local", "expected_local"),
    [
        (datetime(2026, 3, 2, 10, 30, tzinfo=SEOUL), datetime(2026, 3, 2, 9, 0, tzinfo=SEOUL)),
        (datetime(2026, 3, 2, 10, 0, tzinfo=SEOUL), datetime(2026, 3, 2, 9, 0, tzinfo=SEOUL)),  # on a slot
        (datetime(2026, 3, 2, 9, 59, 59, tzinfo=SEOUL), datetime(2026, 3, 2, 8, 0, tzinfo=SEOUL)),
    ],
)
def test_hourly_cron_job_is_due_a_success_since_the_slot_before_last(
    now_local: datetime, expected_local: datetime
) -> None:
    plan = make_schedule(cron_expr="0 * * * *", timezone="Asia/Seoul", interval_seconds=None, job_id="j", align=False)
    assert success_deadline(plan, now_local.astimezone(UTC)) == expected_local.astimezone(UTC)


def test_weekday_cron_job_is_not_overdue_over_the_weekend() -> None:
    plan = make_schedule(cron_expr="0 8 * * 1-5", timezone="Asia/Seoul", interval_seconds=None, job_id="j", align=False)
    sunday = datetime(2026, 3, 8, 20, 0, tzinfo=SEOUL)  # last slot Friday 08:00, the one before Thursday 08:00
    assert success_deadline(plan, sunday.astimezone(UTC)) == datetime(2026, 3, 5, 8, 0, tzinfo=SEOUL)
    monday = datetime(2026, 3, 9, 9, 0, tzinfo=SEOUL)  # Monday's run is the last slot: Friday's must have succeeded
    assert success_deadline(plan, monday.astimezone(UTC)) == datetime(2026, 3, 6, 8, 0, tzinfo=SEOUL)


def test_cron_job_with_no_two_slots_in_the_look_back_has_no_deadline() -> None:
    plan = make_schedule(cron_expr="0 0 29 2 *", timezone="UTC", interval_seconds=None, job_id="j", align=False)
    assert success_deadline(plan, datetime(2027, 6, 1, tzinfo=UTC)) is None


# -- what publish_jobs exports --------------------------------------------------------------------------------


def test_served_enabled_chain_jobs_export_period_deadline_created_and_failures(metrics: Metrics) -> None:
    jobs = [
        job_row("tick", interval_seconds=5, consecutive_failures=2),
        job_row("nightly", interval_seconds=None, cron_expr="0 3 * * *"),
        job_row("paused", enabled=False),
        job_row("downstream", interval_seconds=None, reschedule_mode="none", consecutive_failures=4),
        job_row("elsewhere"),  # on a queue this worker does not serve
    ]
    before = datetime.now(UTC).timestamp()
    publish_jobs(metrics, "s", jobs, ["tick", "nightly", "paused", "downstream"], {"tick": 2})
    assert value(metrics, "scheduler_job_expected_period_seconds", scope="s", job_id="tick") == 5
    assert value(metrics, "scheduler_job_expected_period_seconds", scope="s", job_id="nightly") == 86400
    assert value(metrics, "scheduler_job_created_timestamp_seconds", scope="s", job_id="tick") == CREATED.timestamp()
    assert value(metrics, "scheduler_consecutive_failures", scope="s", job_id="tick") == 2
    assert value(metrics, "scheduler_consecutive_failures", scope="s", job_id="downstream") == 4
    deadline = value(metrics, "scheduler_job_success_deadline_timestamp_seconds", scope="s", job_id="tick")
    assert deadline is not None and before - 10 <= deadline <= datetime.now(UTC).timestamp() - 10
    for absent in ("paused", "downstream", "elsewhere"):  # paused, event-only, not served: no deadline
        assert value(metrics, "scheduler_job_success_deadline_timestamp_seconds", scope="s", job_id=absent) is None
    assert value(metrics, "scheduler_consecutive_failures", scope="s", job_id="elsewhere") is None


def test_a_declared_expected_period_is_the_period_a_cron_job_exports(metrics: Metrics) -> None:
    # the cheat sheet's `"cron_expr": "*/5 * * * *"` with `"interval_seconds": 120`: the cron schedules, 120 s is meant
    jobs = [
        job_row("scanner", interval_seconds=None, cron_expr="*/5 * * * *", expected_period_sec=120),
        job_row("plain", interval_seconds=None, cron_expr="*/5 * * * *"),
    ]
    publish_jobs(metrics, "s", jobs, ["scanner", "plain"], {})
    assert value(metrics, "scheduler_job_expected_period_seconds", scope="s", job_id="scanner") == 120
    assert value(metrics, "scheduler_job_expected_period_seconds", scope="s", job_id="plain") == 300


def test_every_queue_of_an_enabled_job_reports_its_live_workers(metrics: Metrics) -> None:
    jobs = [job_row("a"), job_row("b", queue="shared"), job_row("c", queue="shared"), job_row("off", enabled=False)]
    publish_jobs(metrics, "s", jobs, ["a"], {"a": 1, "shared": 3})
    assert value(metrics, "scheduler_queue_live_workers", scope="s", queue="a") == 1
    assert value(metrics, "scheduler_queue_live_workers", scope="s", queue="shared") == 3
    assert value(metrics, "scheduler_queue_live_workers", scope="s", queue="off") is None


def test_counters_exist_at_zero_before_their_first_event(metrics: Metrics) -> None:
    publish_jobs(metrics, "s", [job_row("mine"), job_row("theirs")], ["mine"], {})
    for reason in DropReason:
        assert value(metrics, "scheduler_messages_dropped_total", scope="s", reason=reason) == 0
    for reason in ParkReason:
        assert value(metrics, "scheduler_messages_parked_total", scope="s", reason=reason) == 0
    # any worker's watchdog may reseed any job of the scope
    for job_id in ("mine", "theirs"):
        assert value(metrics, "scheduler_chain_reseeds_total", scope="s", job_id=job_id, reason="overdue") == 0
    assert value(metrics, "scheduler_running", scope="s", job_id="mine") == 0
    assert value(metrics, "scheduler_lock_contention_total", scope="s", job_id="mine", outcome="skipped") == 0
    assert (
        value(metrics, "scheduler_runs_total", scope="s", job_id="mine", status="failed", trigger_source="scheduler")
        == 0
    )
    assert value(metrics, "scheduler_running", scope="s", job_id="theirs") is None


def test_a_disabled_job_stops_exporting_its_state(metrics: Metrics) -> None:
    publish_jobs(metrics, "s", [job_row("j", consecutive_failures=5)], ["j"], {})
    assert value(metrics, "scheduler_consecutive_failures", scope="s", job_id="j") == 5
    publish_jobs(metrics, "s", [job_row("j", enabled=False, consecutive_failures=5)], ["j"], {})
    assert value(metrics, "scheduler_consecutive_failures", scope="s", job_id="j") is None
    assert value(metrics, "scheduler_job_success_deadline_timestamp_seconds", scope="s", job_id="j") is None


def test_last_success_comes_from_the_record_and_never_goes_back(metrics: Metrics) -> None:
    recorded = datetime(2026, 3, 1, 12, tzinfo=UTC)
    publish_jobs(metrics, "s", [job_row("j", last_success_at=recorded)], ["j"], {})
    assert value(metrics, "scheduler_last_success_timestamp_seconds", scope="s", job_id="j") == recorded.timestamp()
    metrics.observe_success("s", "j", recorded.timestamp() + 30)  # a run finished here since
    publish_jobs(metrics, "s", [job_row("j", last_success_at=recorded)], ["j"], {})  # an older read of the record
    assert (
        value(metrics, "scheduler_last_success_timestamp_seconds", scope="s", job_id="j") == recorded.timestamp() + 30
    )


def test_cron_deadline_is_recomputed_when_a_new_slot_falls_due(metrics: Metrics) -> None:
    # every minute: the deadline (the slot before last) is two minutes old at most
    publish_jobs(metrics, "s", [job_row("m", interval_seconds=None, cron_expr="* * * * *")], ["m"], {})
    for _ in range(2):  # the second scrape may use the cached value
        before = datetime.now(UTC).timestamp()
        deadline = value(metrics, "scheduler_job_success_deadline_timestamp_seconds", scope="s", job_id="m")
        after = datetime.now(UTC).timestamp()
        assert deadline is not None and before - 120 <= deadline <= after - 60
