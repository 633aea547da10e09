"""Operator mistakes against the real servers: exit code 2 and one readable line, nothing changed."""

from __future__ import annotations

import aio_pika
import asyncpg
import pytest

from shared.settings import Settings
from tests.integration.test_cli import YEARLY, cli, cli_here
from tests.support.runtime import Control

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "argv",
    [
        ["runs", "ghost"],
        ["run-now", "ghost"],
        ["pause", "ghost"],
        ["resume", "ghost"],
        ["set", "ghost", "--interval", "5"],
        ["backfill", "ghost", "--from", "now-1h", "--to", "now"],
        ["publish", "--job", "ghost"],
    ],
)
async def test_unknown_job_exits_2_naming_job_and_scope(
    argv: list[str], settings: Settings, cleanup_scope: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = await cli_here(capsys, settings, cleanup_scope, *argv)
    assert result.code == 2
    assert result.error_line == f"error: unknown job 'ghost' in scope {cleanup_scope!r}"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["set", "tick", "--cron", "61 * * * *"], "cron_expr: cron expression '61 * * * *' is not valid"),
        (["set", "tick", "--cron", "* * *"], "cron_expr"),
        (["set", "tick", "--timezone", "Mars/Olympus"], "timezone"),
        (["backfill", "tick", "--from", "now", "--to", "now-1h"], "is after --to"),
        (["backfill", "tick", "--from", "last week", "--to", "now"], "is not a time"),
    ],
)
async def test_bad_values_for_an_existing_job_exit_2_and_change_nothing(
    argv: list[str],
    expected: str,
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    control = Control(pool, amqp, cleanup_scope)
    await control.seed(job_id="tick", cron_expr=YEARLY)
    before = await control.job("tick")
    result = await cli_here(capsys, settings, cleanup_scope, *argv)
    assert result.code == 2
    assert expected in result.error_line
    after = await control.job("tick")
    assert (after["cron_expr"], after["timezone"], after["epoch"]) == (YEARLY, "UTC", before["epoch"])


async def test_unknown_job_in_a_real_process_is_one_line_without_traceback(
    settings: Settings, cleanup_scope: str
) -> None:
    result = await cli(settings, cleanup_scope, "run-now", "ghost", "--wait")
    assert result.code == 2
    assert result.error_line == f"error: unknown job 'ghost' in scope {cleanup_scope!r}"
    assert result.out == ""


async def test_status_of_an_empty_scope_says_how_to_seed_it(
    settings: Settings, cleanup_scope: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = await cli_here(capsys, settings, cleanup_scope, "status")
    assert result.code == 0 and f"seed` loads deploy/jobs/{cleanup_scope}.toml" in result.out
    listed = await cli_here(capsys, settings, cleanup_scope, "status", "--json")
    assert listed.code == 0 and listed.out.strip() == "[]"
