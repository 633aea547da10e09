"""The jobs files the seeders load agree with the services the compose file runs: every queue has exactly
one service, every service has jobs, and every job's default_params are valid for the handler that will get
them (the real params models in `real`, the mock executor's in `mock`)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from services.common import ServiceSpec
from services.mock_executor import MockParams
from shared.definitions import JobDefinition, RescheduleMode
from shared.jobsfile import load_jobs_file

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("buy_scanner", "news_crawler", "price_monitor", "scout", "daily_pipeline", "trading", "maintenance")
JOB_QUEUES = {
    "buy-scanner": "buy-scanner",
    "news-crawler": "news-crawler",
    "price-monitor-start": "price-monitor",
    "price-monitor-stop": "price-monitor",
    "scout-daily": "scout",
    "daily-pipeline-seed": "daily-pipeline",
    "daily-pipeline-cases": "daily-pipeline",
    "trading-cycle": "trading",
    "position-management": "trading",
    "maintenance": "maintenance",
}


def specs() -> list[ServiceSpec]:
    return [importlib.import_module(f"services.{name}").SPEC for name in SERVICES]


def jobs(scope: str) -> dict[str, JobDefinition]:
    path = ROOT / "deploy" / "jobs" / f"{scope}.toml"
    assert path.exists(), f"{path.relative_to(ROOT)} is missing"
    return {d.job_id: d for d in load_jobs_file(path)}


def params_model(job: JobDefinition) -> type[BaseModel]:
    for spec in specs():
        routes = [r for r in spec.routes if r.queue == job.queue_name]
        for route in routes:
            if route.job == job.job_id:
                return route.params
        for route in routes:
            if route.job is None:
                return route.params
    raise AssertionError(f"no service serves job {job.job_id!r} (queue {job.queue_name!r})")


def test_each_queue_is_served_by_exactly_one_service() -> None:
    owners: dict[str, list[str]] = {}
    for spec in specs():
        for queue in spec.queues:
            owners.setdefault(queue, []).append(spec.name)
    assert {q: o for q, o in owners.items() if len(o) > 1} == {}
    assert set(owners) == set(JOB_QUEUES.values())


@pytest.mark.parametrize("scope", ["mock", "real"])
def test_jobs_file_has_the_jobs_and_queues_the_services_serve(scope: str) -> None:
    found = jobs(scope)
    assert {j: d.queue_name for j, d in found.items()} == JOB_QUEUES
    assert found["trading-cycle"].lock_group == found["position-management"].lock_group == "trading"
    assert found["daily-pipeline-seed"].on_success == ("daily-pipeline-cases",)
    assert found["daily-pipeline-cases"].reschedule_mode is RescheduleMode.NONE
    assert found["price-monitor-start"].default_params.get("action") == "start"
    assert found["price-monitor-stop"].default_params.get("action") == "stop"


def test_real_jobs_params_are_valid_for_their_real_handlers() -> None:
    problems = []
    for job in jobs("real").values():
        try:
            params_model(job).model_validate(job.default_params)
        except ValidationError as exc:
            problems.append(f"{job.job_id}: {exc}")
    assert not problems, "\n".join(problems)


def test_mock_jobs_params_are_valid_for_the_mock_executor() -> None:
    for job in jobs("mock").values():
        MockParams.model_validate(job.default_params)
        params_model(job)  # and some service serves it
