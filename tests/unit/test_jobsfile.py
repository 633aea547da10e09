"""The jobs files: both shipped files load with the project's job set; bad files are refused with file, job and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.definitions import JobDefinition
from shared.errors import ConfigError
from shared.jobsfile import load_jobs_file

ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "deploy" / "jobs"
QUEUES = {
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


def by_id(path: Path) -> dict[str, JobDefinition]:
    return {d.job_id: d for d in load_jobs_file(path)}


@pytest.mark.parametrize("name", ["real.toml", "mock.toml"])
def test_both_files_declare_the_same_jobs_on_the_same_queues(name: str) -> None:
    jobs = by_id(JOBS / name)
    assert {job_id: d.queue_name for job_id, d in jobs.items()} == QUEUES
    assert jobs["price-monitor-start"].default_params["action"] == "start"
    assert jobs["price-monitor-stop"].default_params["action"] == "stop"
    assert jobs["daily-pipeline-seed"].on_success == ("daily-pipeline-cases",)
    assert not jobs["daily-pipeline-cases"].has_chain
    assert jobs["trading-cycle"].lock_group == jobs["position-management"].lock_group == "trading"
    assert all(d.enabled for d in jobs.values())


def test_real_file_has_the_cadences_of_the_design_notes() -> None:
    jobs = by_id(JOBS / "real.toml")
    cron = {job_id: d.cron_expr for job_id, d in jobs.items()}
    assert cron == {
        "buy-scanner": "*/5 * * * *",
        "news-crawler": "*/10 * * * *",
        "price-monitor-start": "0 9 * * 1-5",
        "price-monitor-stop": "30 15 * * 1-5",
        "scout-daily": "0 8 * * 1-5",
        "daily-pipeline-seed": "0 8 * * 1-5",
        "daily-pipeline-cases": None,
        "trading-cycle": "1 * * * *",
        "position-management": "1,16,31,46 * * * *",
        "maintenance": "17 3 * * *",
    }
    pipeline = jobs["daily-pipeline-seed"]
    assert (pipeline.timezone, pipeline.timeout_sec, pipeline.misfire_grace_sec) == ("Asia/Seoul", 600, 3600)
    assert jobs["daily-pipeline-cases"].timeout_sec == 600
    assert {jobs[j].timezone for j in ("price-monitor-start", "price-monitor-stop", "scout-daily")} == {"Asia/Seoul"}


def test_mock_file_runs_everything_within_seconds() -> None:
    jobs = by_id(JOBS / "mock.toml")
    intervals = [d.interval_seconds for d in jobs.values() if d.interval_seconds is not None]
    assert intervals and all(3 <= s <= 20 for s in intervals)
    assert [d.cron_expr for d in jobs.values() if d.cron_expr] == ["* * * * *"]
    for d in jobs.values():
        assert 0.2 <= d.default_params["sleep_sec"] <= 2
        assert 0 <= d.default_params["fail_rate"] <= 0.2


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobs.toml"
    path.write_text(text)
    return path


def test_malformed_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[jobs.tick]\ninterval_seconds = 5\nqueue = "unterminated\n')
    with pytest.raises(ConfigError) as exc:
        load_jobs_file(path)
    assert str(path) in str(exc.value) and "line 3" in str(exc.value)


def test_unknown_key_is_refused_naming_the_job_and_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[jobs.tick]\ninterval_seconds = 5\ninterval_sec = 5\n")
    with pytest.raises(ConfigError) as exc:
        load_jobs_file(path)
    assert "'tick'" in str(exc.value) and "interval_sec" in str(exc.value)


def test_job_id_that_differs_from_the_table_name_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[jobs.tick]\njob_id = "tock"\ninterval_seconds = 5\n')
    with pytest.raises(ConfigError) as exc:
        load_jobs_file(path)
    assert "jobs.tick" in str(exc.value) and "'tock'" in str(exc.value)


def test_bad_cron_names_the_job_and_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, '[jobs.tick]\ncron_expr = "61 * * * *"\n')
    with pytest.raises(ConfigError) as exc:
        load_jobs_file(path)
    assert "'tick'" in str(exc.value) and "cron_expr" in str(exc.value)
