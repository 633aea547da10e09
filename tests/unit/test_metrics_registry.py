"""Metrics live in the registry they are given: two workers (or a worker and a test) in one process keep their own
series, and prometheus_client's global registry holds none of the scheduler's."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry

from shared.metrics import Metrics, new_registry


def names(registry: CollectorRegistry) -> set[str]:
    return {family.name for family in registry.collect()}


def test_two_metrics_with_their_own_registries_coexist_and_the_global_registry_holds_none() -> None:
    first, second = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    first.retries.labels("s", "j").inc()
    first.retries.labels("s", "j").inc()
    second.retries.labels("s", "j").inc()
    assert first.registry.get_sample_value("scheduler_retries_total", {"scope": "s", "job_id": "j"}) == 2
    assert second.registry.get_sample_value("scheduler_retries_total", {"scope": "s", "job_id": "j"}) == 1
    assert "scheduler_retries" in names(first.registry)
    assert not {name for name in names(REGISTRY) if name.startswith("scheduler_")}


def test_a_worker_registry_keeps_the_process_series_of_the_default_one() -> None:
    registry = new_registry()
    Metrics(registry)
    exported = names(registry)
    assert "scheduler_runs" in exported and "python_info" in exported
    assert not {name for name in names(REGISTRY) if name.startswith("scheduler_")}
