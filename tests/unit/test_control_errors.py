"""The control layer's errors without servers: each kind of failure, the exit code the CLI gives it, and a
definition refused with the fields at fault named."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from scheduler_seed.cli import explain
from shared.control import validation
from shared.control.errors import (
    ActionFailed,
    DependencyDown,
    ErrorKind,
    InvalidDefinition,
    InvalidRequest,
    RunningNow,
    UnknownJob,
    UnknownParkedMessage,
    kind_of,
)
from shared.errors import ConfigError, TopologyMismatch

SINCE = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("error", "kind", "exit_code"),
    [
        (UnknownJob("mock", "ghost"), ErrorKind.NOT_FOUND, 2),
        (UnknownParkedMessage("mock.jobs.dead", "abc"), ErrorKind.NOT_FOUND, 2),
        (InvalidRequest("backfill: range backwards", "from"), ErrorKind.INVALID, 2),
        (InvalidDefinition("job 'x': cron_expr: bad", ["cron_expr"]), ErrorKind.INVALID, 2),
        (ConfigError("jobs.toml: no such jobs file"), ErrorKind.INVALID, 2),
        (RunningNow("tick", uuid.uuid4(), "running", "w1", SINCE), ErrorKind.CONFLICT, 3),
        (DependencyDown("RabbitMQ", "amqp://guest:***@127.0.0.1:1/", "refused"), ErrorKind.UNAVAILABLE, 1),
        (asyncpg.PostgresConnectionError("gone"), ErrorKind.UNAVAILABLE, 1),
        (ActionFailed("no outcome in time"), ErrorKind.FAILED, 1),
        (TopologyMismatch("q", "x-queue-type", "classic vs quorum"), ErrorKind.FAILED, 1),
    ],
)
def test_every_failure_has_a_kind_and_the_cli_one_exit_code_for_it(
    error: Exception, kind: ErrorKind, exit_code: int
) -> None:
    assert kind_of(error) is kind
    code, line = explain(error)
    assert code == exit_code and line and "\n" not in line.strip()


def test_a_bug_has_no_kind_and_exits_1() -> None:
    assert kind_of(KeyError("x")) is None
    assert explain(KeyError("x"))[0] == 1


def test_running_now_carries_the_live_run_and_the_cli_says_how_to_queue_anyway() -> None:
    run_id = uuid.uuid4()
    busy = RunningNow("tick", run_id, "running", "w1", SINCE)
    assert (busy.run_id, busy.since, busy.worker) == (run_id, SINCE, "w1")
    assert "'tick' is running now" in explain(busy)[1] and "--queue" in explain(busy)[1]


def test_dependency_down_names_server_and_redacted_url_and_how_to_start_it() -> None:
    down = DependencyDown("PostgreSQL", "postgresql://postgres:***@db:5432/postgres", "ConnectionRefusedError")
    assert str(down).startswith("PostgreSQL at postgresql://postgres:***@db:5432/postgres is not reachable")
    assert "pg_ctlcluster" in str(down)


def test_an_invalid_definition_names_every_field_at_fault() -> None:
    with pytest.raises(InvalidDefinition) as caught:
        validation.definition({"job_id": "tick", "cron_expr": "61 * * * *", "max_attempts": 0}, source="set tick")
    assert set(caught.value.fields) == {"cron_expr", "max_attempts"}
    assert all(line.startswith("set tick: job 'tick': ") for line in str(caught.value).splitlines())
    assert isinstance(caught.value, ConfigError)  # what callers that know only the framework's errors catch
