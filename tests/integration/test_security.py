"""Secrets and names: no password ever printed, no identifier able to escape its queue or SQL name.

The AMQP and PostgreSQL passwords are chosen with characters that need URL-encoding, so both their written and
their encoded forms are looked for, in everything a worker and the CLI print: normal runs, failures, retries,
parked garbage, `status`, and the error paths (a server that refuses, a wrong password, a closed port).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import asyncpg
import pytest
from pydantic import ValidationError
from yarl import URL

from shared import topology
from shared.definitions import load_definition
from shared.errors import ConfigError
from shared.messages import BadMessage, parse_message
from shared.names import check_ident
from shared.settings import Settings
from tests.support.ports import free_port
from tests.support.runtime import ROOT, Control, spawn_worker, stop_process, wait_until

pytestmark = pytest.mark.integration


def forms(secret: str) -> set[str]:
    """The ways a password can show up: as written, and URL-encoded (fully, or leaving '/' alone)."""
    return {secret, quote(secret, safe=""), quote(secret)}


@contextlib.contextmanager
def broker_user(name: str, password: str) -> Iterator[None]:
    """A user on the local broker, allowed everything (this test is about what is printed, not permissions)."""
    ctl = shutil.which("rabbitmqctl")
    assert ctl is not None, "this test creates a broker user with rabbitmqctl"

    def run(*args: str) -> None:
        result = subprocess.run([ctl, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr

    run("add_user", name, password)
    try:
        run("set_permissions", "-p", "/", name, ".*", ".*", ".*")
        yield
    finally:
        run("delete_user", name)


def with_password(url: str, user: str, password: str) -> str:
    return str(URL(url).with_user(user).with_password(password))


async def cli(env: dict[str, str], *argv: str, timeout: float = 120) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scheduler_seed", *argv, cwd=ROOT, env={**os.environ, "LOG_LEVEL": "DEBUG", **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def worker_output(scope: str, settings: Settings, seconds: float, **env: str) -> str:
    """What a worker prints while it cannot get going (a server down, a wrong password) for a few seconds."""
    proc = spawn_worker(scope, ["tick"], settings, LOG_LEVEL="DEBUG", PYTHONUNBUFFERED="1", **env)
    try:
        await asyncio.sleep(seconds)
    finally:
        stop_process(proc, signal.SIGKILL)
    return read_log(proc)


def read_log(proc: subprocess.Popen[bytes]) -> str:
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


COMMANDS = [
    "status",
    "status --json",
    "runs tick",
    "runs tick --json",
    "run-now tick --queue --wait",
    "dead",
    "set tick --interval 2",
    "pause tick",
    "resume tick",
    "publish --job tick",
    "status --help",
]


async def test_passwords_never_appear_in_worker_logs_status_or_cli_output(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    tmp_path: Path,
) -> None:
    scope = cleanup_scope
    user = f"{scope}-secret"
    amqp_password = f"S3c!{secrets.token_hex(6)}:@/%#"
    pg_password = f"Pg#{secrets.token_hex(6)}@:/"
    wrong_password = f"Wr0ng!{secrets.token_hex(6)}"
    amqp_url = with_password(settings.amqp_url.get_secret_value(), user, amqp_password)
    dsn = with_password(settings.database_url.get_secret_value(), "postgres", pg_password)  # trust: ignored, kept
    env = {"AMQP_URL": amqp_url, "DATABASE_URL": dsn, "SCHEDULER_SCOPE": scope}
    jobs_file = tmp_path / "jobs.toml"
    jobs_file.write_text('[jobs.tick]\ninterval_seconds = 1\nmax_attempts = 2\nretry_backoff_sec = 0.2\n'
                         'default_params = { fail_until_attempt = 1 }\n')  # fmt: skip
    printed: dict[str, str] = {}
    with broker_user(user, amqp_password):
        code, printed["seed"] = await cli(env, "seed", "--file", str(jobs_file))
        assert code == 0, printed["seed"]
        proc = spawn_worker(scope, ["tick"], settings, LOG_LEVEL="DEBUG", PYTHONUNBUFFERED="1", **env)
        try:
            control = Control(pool, amqp, scope)
            await wait_until(lambda: _retried(control), 60, "a failed run and its successful retry")
            await (await amqp.channel()).default_exchange.publish(
                aio_pika.Message(b"garbage"), routing_key=topology.work_queue_name(scope, "tick")
            )
            for command in COMMANDS:
                code, printed[command] = await cli(env, *command.split())
                assert code == 0, printed[command]
        finally:
            stop_process(proc)
        printed["worker"] = read_log(proc)
        closed = f"127.0.0.1:{free_port()}"
        down_amqp = str(URL(amqp_url).with_host("127.0.0.1").with_port(int(closed.split(":")[1])))
        down_pg = str(URL(dsn).with_host("127.0.0.1").with_port(int(closed.split(":")[1])))
        bad_login = with_password(settings.amqp_url.get_secret_value(), user, wrong_password)
        failures = {
            "publish, broker down": ({**env, "AMQP_URL": down_amqp}, ["publish", "--job", "tick"]),
            "status, database down": ({**env, "DATABASE_URL": down_pg}, ["status"]),
            "publish, wrong password": ({**env, "AMQP_URL": bad_login}, ["publish", "--job", "tick"]),
        }
        for name, (failing_env, argv) in failures.items():
            code, printed[name] = await cli(failing_env, *argv)
            assert code == 1 and "Traceback" not in printed[name], printed[name]
            assert ":***@" in printed[name], f"{name}: the URL is named, redacted: {printed[name]}"
        printed["worker, database down"] = await worker_output(scope, settings, 4, **{**env, "DATABASE_URL": down_pg})
        printed["worker, broker down"] = await worker_output(scope, settings, 4, **{**env, "AMQP_URL": down_amqp})
        printed["worker, wrong password"] = await worker_output(scope, settings, 4, **{**env, "AMQP_URL": bad_login})
    for name in ("worker, database down", "worker, broker down", "worker, wrong password"):
        assert "dependency.waiting" in printed[name] or "error:" in printed[name], printed[name][-2000:]
    assert f"{user}:***@" in printed["worker"], "the worker names its broker, redacted"
    leaks = [
        (name, form)
        for name, text in printed.items()
        for secret in (amqp_password, pg_password, wrong_password)
        for form in forms(secret)
        if form in text
    ]
    assert leaks == [], f"passwords printed by: {sorted({name for name, _ in leaks})}"


async def _retried(control: Control) -> bool:
    runs = await control.runs("tick")
    return any(r["status"] == "failed" for r in runs) and any(
        r["attempt"] == 2 and r["status"] == "succeeded" for r in runs
    )


def test_settings_never_show_a_password() -> None:
    s = Settings(amqp_url="amqp://u:amqp-pw-1@h:5672/", database_url="postgresql://u:pg-pw-2@h/db")
    for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        assert "amqp-pw-1" not in text and "pg-pw-2" not in text
    assert s.amqp_url_redacted == "amqp://u:***@h:5672/"
    assert s.database_url_redacted == "postgresql://u:***@h/db"


ESCAPES = [
    "x'; drop table scheduler.jobs; --", "a.b", "other.jobs.x", "tick.delay", "../x", "a/b", "#", "*", "A",
    "a b", "", "x" * 64, "é", "amq.default", "tick\n", "tick\x00",
]  # fmt: skip


@pytest.mark.parametrize("name", ESCAPES, ids=[repr(n) for n in ESCAPES])
def test_a_name_that_could_escape_a_queue_or_sql_name_is_refused_at_every_door(name: str) -> None:
    with pytest.raises(ValueError):
        check_ident(name, "job_id")
    for queue_name in (topology.work_queue_name, topology.delay_queue_name, topology.retry_queue_name):
        with pytest.raises(ValueError):
            queue_name("scope", name)
    with pytest.raises(ValueError):
        topology.exchange_name(name)
    for column in ("job_id", "queue", "lock_group"):
        with pytest.raises(ConfigError):
            load_definition({"job_id": "ok", "interval_seconds": 5, column: name})
    with pytest.raises(BadMessage) as parked:
        parse_message(f'{{"job_id": {_json(name)}}}'.encode())
    assert parked.value.reason in ("schema", "encoding")
    with pytest.raises(ValidationError):
        Settings(scheduler_scope=name)


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


async def test_escaping_job_ids_given_to_the_cli_touch_nothing(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    await Control(pool, amqp, cleanup_scope).seed(job_id="tick", cron_expr="0 0 1 1 *")
    env = {
        "AMQP_URL": settings.amqp_url.get_secret_value(),
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "SCHEDULER_SCOPE": cleanup_scope,
    }
    sql = "tick'; drop table scheduler.jobs; --"
    for argv in (
        ["run-now", sql],
        ["pause", sql],
        ["set", "tick.delay", "--interval", "5"],
        ["publish", "--job", "a.b"],
    ):
        code, out = await cli(env, *argv)
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and "Traceback" not in out, out
    assert await pool.fetchval("SELECT count(*) FROM scheduler.jobs WHERE scope = $1", cleanup_scope) == 1
    job = await pool.fetchrow("SELECT epoch, enabled FROM scheduler.jobs WHERE scope = $1", cleanup_scope)
    assert (job["epoch"], job["enabled"]) == (1, True)
