"""Bad job definitions (DESIGN I4): refused by `load_definition` and by the CLI with a readable error.

Whatever a jobs file or `set` holds (a bad cron, an unknown zone, SQL in a name, 10 MB of params, a queue name that
tries to escape its scope), the answer is a ConfigError naming the job and the field, one line per problem, and
from the CLI exit code 2 with those lines and no traceback. Nothing reaches PostgreSQL or RabbitMQ.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.definitions import JobDefinition, load_definition
from shared.errors import ConfigError
from shared.settings import Settings
from tests.integration.test_cli import cli, cli_here
from tests.support.runtime import Control

SQL = "x'; drop table scheduler.jobs; --"

BAD = (
    [
        ({"cron_expr": "61 * * * *"}, "cron_expr: cron expression '61 * * * *' is not valid"),
        ({"cron_expr": "* * *"}, "cron_expr"),
        ({"cron_expr": "@reboot"}, "is an alias"),
        ({"cron_expr": "0 0 30 2 *"}, "never fires"),
        ({"interval_seconds": 5, "timezone": "Mars/Olympus"}, "timezone: unknown time zone 'Mars/Olympus'"),
        ({"interval_seconds": 5, "timezone": "../../etc/passwd"}, "timezone: unknown time zone"),
        ({"interval_seconds": 5, "job_id": SQL}, 'job_id: job_id "x\'; drop table scheduler.jobs; --" is not valid'),
        ({"interval_seconds": 5, "queue": "a'; drop table scheduler.jobs; --"}, "queue: name"),
        ({"interval_seconds": 5, "lock_group": "g; drop"}, "lock_group: name 'g; drop' is not valid"),
        ({"interval_seconds": 5, "on_success": [SQL]}, "on_success"),
        ({"interval_seconds": 5, "default_params": {"blob": "x" * 10_000_000}}, "default_params are 10000011 bytes"),
        ({"interval_seconds": 5, "default_params": [1, 2]}, "default_params: Input should be a valid dictionary"),
        ({"interval_seconds": 0}, "interval_seconds: Input should be greater than or equal to 1"),
        ({"interval_seconds": "fast"}, "interval_seconds: Input should be a valid integer"),
        ({"interval_seconds": 5, "enabled": "maybe"}, "enabled"),
        ({"interval_seconds": 5, "cron": "* * * * *"}, "cron: Extra inputs are not permitted"),
        ({"interval_seconds": 5, "cron_expr": "* * * * *"}, "set exactly one of cron_expr or interval_seconds"),
        ({}, "set exactly one of cron_expr or interval_seconds"),
        ({"interval_seconds": 5, "timeout_sec": math.nan}, "timeout_sec"),
        ({"interval_seconds": 5, "max_parallel": 0}, "max_parallel"),
    ]
    + [
        ({"interval_seconds": 5, "queue": escape}, "queue")
        for escape in ("a.b", "#", "*", "amq.default", "t.jobs.other", "../x", "a/b", "", "x" * 64, "A", "a b", "é")
    ]
    + [({"interval_seconds": 5, "queue": "dead"}, "the work queue name 'dead' is reserved")]
)


@pytest.mark.parametrize(("table", "expected"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_a_bad_definition_is_refused_naming_the_job_and_the_field(table: dict[str, Any], expected: str) -> None:
    data = {"job_id": "bad-job", **table}
    with pytest.raises(ConfigError) as refused:
        load_definition(data, source="jobs.toml")
    lines = str(refused.value).splitlines()
    assert any(expected in line for line in lines), lines
    job = repr(data["job_id"])
    assert all(line.startswith(f"jobs.toml: job {job}: ") for line in lines), lines
    assert all(len(line) < 400 for line in lines), "readable: no dump of the 10 MB value"


definition_keys = st.sampled_from(
    ["job_id", "cron_expr", "interval_seconds", "timezone", "queue", "default_params", "timeout_sec", "max_attempts",
     "max_parallel", "overlap", "lock_group", "jitter_sec", "misfire_grace_sec", "on_success", "enabled", "align",
     "retry_backoff_sec", "retry_backoff_max_sec", "reschedule_mode", "queue_type", "description", "unknown_key"]
)  # fmt: skip
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
) | st.sampled_from(["* * * * *", "UTC", "Asia/Seoul", "skip", "buffer_one", "quorum", SQL, "a.b", "dead"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=st.dictionaries(definition_keys, values, max_size=8))
def test_any_table_is_either_a_valid_definition_or_a_config_error(table: dict[str, Any]) -> None:
    try:
        definition = load_definition(table, source="jobs.toml")
    except ConfigError as exc:
        assert str(exc).strip() and all(line.startswith("jobs.toml: job ") for line in str(exc).splitlines())
        return
    assert isinstance(definition, JobDefinition)
    assert definition.queue_name.isascii() and "." not in definition.queue_name  # never escapes `S.jobs.<queue>`


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobs.toml"
    path.write_text(text, encoding="utf-8")
    return path


FILES = {
    "sql_job_id": f'[jobs."{SQL}"]\ninterval_seconds = 5\n',
    "bad_cron": '[jobs.a]\ncron_expr = "61 * * * *"\n',
    "bad_zone": '[jobs.a]\ncron_expr = "0 9 * * *"\ntimezone = "Mars/Olympus"\n',
    "queue_escape": '[jobs.a]\ninterval_seconds = 5\nqueue = "other.jobs.a"\n',
    "sql_queue": '[jobs.a]\ninterval_seconds = 5\nqueue = "a\'); delete from scheduler.jobs; --"\n',
    "huge_params": '[jobs.a]\ninterval_seconds = 5\ndefault_params = { blob = "' + "x" * 10_000_000 + '" }\n',
    "not_toml": "[jobs.a\ninterval_seconds = 5\n",
    "typo": "[jobs.a]\ninterval_second = 5\n",
}


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(FILES))
async def test_seeding_a_bad_jobs_file_exits_2_with_readable_lines_and_writes_nothing(
    name: str,
    tmp_path: Path,
    settings: Settings,
    pool: asyncpg.Pool,
    cleanup_scope: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write(tmp_path, FILES[name])
    result = await cli_here(capsys, settings, cleanup_scope, "seed", "--file", str(path))
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert lines and all(line.startswith(f"error: {path}: ") for line in lines), lines
    assert "Traceback" not in result.err and all(len(line) < 400 for line in lines)
    assert await pool.fetchval("SELECT count(*) FROM scheduler.jobs WHERE scope = $1", cleanup_scope) == 0
    assert await pool.fetchval("SELECT to_regclass('scheduler.jobs') IS NOT NULL")


@pytest.mark.integration
async def test_ten_megabytes_of_params_in_a_real_process_is_one_line_per_problem(
    tmp_path: Path, settings: Settings, cleanup_scope: str
) -> None:
    path = write(tmp_path, FILES["huge_params"])
    result = await cli(settings, cleanup_scope, "seed", "--file", str(path))
    assert result.code == 2
    assert (
        result.error_line
        == f"error: {path}: job 'a': default_params: default_params are 10000011 bytes; the limit is 65536"
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["set", "tick", "--cron", "61 * * * *"], "cron_expr"),
        (["set", "tick", "--timezone", "../../etc/passwd"], "timezone"),
        (["set", "tick", "--params", '{"blob": "' + "x" * 100_000 + '"}'], "default_params are 100011 bytes"),
        (["set", "tick", "--params", "[1, 2]"], "JSON object"),
        (["set", "tick", "--interval", "0"], "interval"),
        (["run-now", "tick", "--params", '{"blob": "' + "x" * 100_000 + '"}'], "params are 100011 bytes"),
    ],
)
async def test_bad_values_through_the_cli_exit_2_and_leave_the_job_as_it_was(
    argv: list[str],
    expected: str,
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    await control.seed(job_id="tick", cron_expr="0 0 1 1 *")
    before = dict(await control.job("tick"))
    result = await cli_here(capsys, settings, cleanup_scope, *argv)
    assert result.code == 2, result.err
    assert expected in result.error_line and len(result.error_line) < 400
    after = dict(await control.job("tick"))
    assert {k: after[k] for k in ("epoch", "cron_expr", "default_params", "updated_at")} == {
        k: before[k] for k in ("epoch", "cron_expr", "default_params", "updated_at")
    }
    assert await control.runs("tick") == []
