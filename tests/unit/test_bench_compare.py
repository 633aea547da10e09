"""The before/after aggregation of the benchmark (tests.bench.compare): medians, ranges and the table."""

from __future__ import annotations

from typing import Any

from tests.bench import compare


def row(jobs: int, p50: float, p99: float, done: int, cpu: float | None = 3.0) -> dict[str, Any]:
    return {
        "system": "framework", "mode": "spread", "jobs": jobs, "workers": 1, "expected": 100, "done": done,
        "duplicates": 0, "lateness_ms": {"p50": p50, "p99": p99}, "cpu_sec_per_1000_runs": cpu,
        "rabbitmq_cpu_sec_per_1000_runs": 1.0, "postgres_cpu_sec_per_1000_runs": 0.5, "pg_round_trips_per_run": 4.0,
    }  # fmt: skip


def test_median_and_range_per_scenario_and_tree() -> None:
    runs = {
        "before": [{"lateness": [row(100, 9.0, 20.0, 100)]}, {"lateness": [row(100, 11.0, 40.0, 98)]},
                   {"lateness": [row(100, 10.0, 25.0, 99)]}],
        "after": [{"lateness": [row(100, 3.0, 10.0, 100)]}],
    }  # fmt: skip
    table = compare.aggregate(runs)
    cell = table["lateness: framework spread, 100 jobs, 1 worker(s)"]
    assert cell["before"]["n"] == 3
    assert cell["before"]["p50"] == (10.0, 9.0, 11.0)
    assert cell["before"]["p99"] == (25.0, 20.0, 40.0)
    assert cell["before"]["done_share"] == (0.99, 0.98, 1.0)
    assert cell["after"]["p50"] == (3.0, 3.0, 3.0)
    assert cell["after"]["total_cpu_ms_per_run"] == (4.5, 4.5, 4.5)


def test_total_cpu_needs_all_three_parts() -> None:
    assert compare.figures(row(100, 1.0, 2.0, 100, cpu=None))["total_cpu_ms_per_run"] is None


def test_markdown_orders_by_job_count_and_shows_ranges() -> None:
    runs = {"before": [{"lateness": [row(1000, 50.0, 90.0, 100), row(100, 9.0, 20.0, 100)]},
                       {"lateness": [row(1000, 70.0, 95.0, 100), row(100, 9.0, 20.0, 100)]}]}  # fmt: skip
    text = compare.markdown(compare.aggregate(runs), ["before"])
    lines = [line for line in text.splitlines() if line.startswith("| lateness")]
    assert lines[0].startswith("| lateness: framework spread, 100 jobs")
    assert "| 60.0 (50.0-70.0) |" in lines[1]
    assert "| 9.0 |" in lines[0]  # no range when every run agrees
