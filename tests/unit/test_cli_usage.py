"""Usage and connection errors of `python -m scheduler_seed`: one readable line on stderr, exit code 2 for what
was typed wrong and 1 for a server that does not answer, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from scheduler_seed.cli import main
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEAD_AMQP = "amqp://guest:s3cret@127.0.0.1:1/"
DEAD_PG = "postgresql://postgres:s3cret@127.0.0.1:1/postgres"


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run-now", "tick", "--params", "{"], "not valid JSON"),
        (["run-now", "tick", "--params", "[1]"], "JSON object"),
        (["set", "tick", "--interval", "soon"], "not a duration"),
        (["set", "tick"], "nothing to change"),
        (["status", "--scope", "Bad.Scope"], "scope 'Bad.Scope' is not valid"),
        (["runs", "tick", "--limit", "0"], "whole number"),
        (["dead", "--replay", "abc", "--purge"], "not allowed with"),
        (["frobnicate"], "invalid choice"),
        ([], "required: VERB"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str], settings: Settings
) -> None:
    assert main(argv, settings) == 2
    assert expected in one_error_line(capsys.readouterr().err)


def test_malformed_jobs_file_exits_2_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], settings: Settings
) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[jobs.tick]\ninterval_seconds = 5\nqueue = "oops\n')
    assert main(["seed", "--scope", "tnofile", "--file", str(path)], settings) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(path) in line and "line 3" in line


def test_missing_jobs_file_exits_2(capsys: pytest.CaptureFixture[str], settings: Settings) -> None:
    assert main(["seed", "--scope", "tnofile"], settings) == 2
    assert "deploy/jobs/tnofile.toml: no such jobs file" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("amqp", "pg", "argv", "server", "how"),
    [
        (DEAD_AMQP, None, ["dead"], "RabbitMQ", "rabbitmq-server -detached"),
        (None, DEAD_PG, ["status"], "PostgreSQL", "pg_ctlcluster"),
    ],
)
def test_unreachable_server_exits_1_with_redacted_url_and_how_to_start_it(
    amqp: str | None,
    pg: str | None,
    argv: list[str],
    server: str,
    how: str,
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
) -> None:
    overrides = {"amqp_url": SecretStr(amqp)} if amqp else {"database_url": SecretStr(pg or "")}
    broken = settings.model_copy(update=overrides)
    assert main([*argv, "--scope", "tnoserver"], broken) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"{server} at " in line and "***" in line and "s3cret" not in line and how in line


def test_unreachable_broker_in_a_real_process_is_one_line_without_traceback(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.toml"
    jobs.write_text("[jobs.tick]\ninterval_seconds = 5\n")
    env = {**os.environ, "AMQP_URL": DEAD_AMQP, "SCHEDULER_SCOPE": "tnoserver"}
    done = subprocess.run(
        [sys.executable, "-m", "scheduler_seed", "seed", "--file", str(jobs)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert "RabbitMQ at amqp://guest:***@127.0.0.1:1/ is not reachable" in line and "s3cret" not in line
