"""One RabbitMQ user per scope, as deploy/rabbitmq/definitions.json declares them: its permissions reach only
its own scope's exchanges and queues. Users are created on the local broker with rabbitmqctl, with unique names
and the definitions' patterns applied to each test's scopes, and deleted afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import aiormq.exceptions
import asyncpg
import pytest
from yarl import URL

from shared.messages import JobMessage
from shared.publisher import Publisher
from shared.settings import Settings
from shared.worker import refusal_line
from tests.support.runtime import Control, fast_settings, wait_until
from tests.support.service_process import service_process, wait_for_process

pytestmark = pytest.mark.integration

DEFINITIONS = Path(__file__).resolve().parents[2] / "deploy" / "rabbitmq" / "definitions.json"


def rabbitmqctl(*args: str) -> str:
    if shutil.which("rabbitmqctl") is None:
        raise AssertionError("these tests create users with rabbitmqctl, which is not on PATH")
    result = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"rabbitmqctl {args[0]} failed: {result.stderr.strip()}"
    return result.stdout


def scope_pattern(scope: str) -> str:
    """The permission pattern definitions.json gives the `mock` user, applied to `scope`."""
    mock = next(p for p in json.loads(DEFINITIONS.read_text())["permissions"] if p["user"] == "mock")
    assert mock["configure"] == mock["write"] == mock["read"]
    return str(mock["configure"]).replace("mock", scope)


@dataclass(frozen=True)
class ScopeUser:
    name: str
    password: str
    scope: str

    def url(self, amqp_url: str) -> str:
        return str(URL(amqp_url).with_user(self.name).with_password(self.password))


@contextlib.contextmanager
def scope_user(scope: str) -> Iterator[ScopeUser]:
    user = ScopeUser(f"{scope}-user", secrets.token_hex(8), scope)
    rabbitmqctl("add_user", user.name, user.password)
    try:
        pattern = scope_pattern(scope)
        rabbitmqctl("set_permissions", "-p", "/", user.name, pattern, pattern, pattern)
        yield user
    finally:
        rabbitmqctl("delete_user", user.name)


@pytest.fixture
async def other_scope(settings: Settings, amqp_url: str) -> AsyncIterator[str]:
    """A second private scope (the one a user must not reach); its rows and queues go afterwards."""
    from shared import topology
    from shared.store import jobs as jobs_store

    other = "t" + secrets.token_hex(4)
    yield other
    connection = await aio_pika.connect(amqp_url)
    try:
        await topology.delete_scope(await connection.channel(), other, ["buy-scanner"], ["buy-scanner"])
    finally:
        await connection.close()
    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        await jobs_store.delete_scope(conn, other)
    finally:
        await conn.close()


async def test_a_scope_user_is_refused_on_another_scopes_queues_with_one_readable_line(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    other_scope: str,
    amqp_url: str,
) -> None:
    mine, theirs = cleanup_scope, other_scope
    await Control(pool, amqp, theirs).seed(job_id="buy-scanner", cron_expr="0 0 1 1 *")  # their queue exists
    with scope_user(mine) as user:
        # a worker of my scope pointed at their scope: refused at start-up, one line, exit code 2
        env = {"AMQP_URL": user.url(amqp_url)}
        with service_process("buy_scanner", settings, theirs, "mock", **env) as proc:
            code = await asyncio.to_thread(proc.wait_exit, 60)
            output = proc.output()
        last = output.strip().splitlines()[-1]
        assert code == 2 and "Traceback" not in output
        assert last.startswith(
            f"error: buy_scanner: RabbitMQ refused access: ACCESS_REFUSED - access to exchange '{theirs}.jobs'"
        )
        assert f"refused for user '{user.name}'" in last and f"SCHEDULER_SCOPE is '{theirs}'" in last

        # a publisher with my user cannot put a message into their work queue, by their exchange or the default one
        connection = await aio_pika.connect(user.url(amqp_url))
        try:
            for publish in (_publish_through_scope_exchange, _publish_through_default_exchange, _consume):
                with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as refused:
                    await publish(connection, theirs)
                line = refusal_line(refused.value, fast_settings(settings, theirs))
                assert "\n" not in line and "ACCESS_REFUSED" in line and user.name in line
        finally:
            await connection.close()
    queue = await (await amqp.channel()).declare_queue(f"{theirs}.jobs.buy-scanner", passive=True)
    assert queue.declaration_result.message_count == 0, "nothing of mine reached their queue"


async def _publish_through_scope_exchange(connection: aio_pika.abc.AbstractConnection, scope: str) -> None:
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    await Publisher(channel, scope).to_work("buy-scanner", JobMessage(job_id="buy-scanner", scope=scope))


async def _publish_through_default_exchange(connection: aio_pika.abc.AbstractConnection, scope: str) -> None:
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    body = JobMessage(job_id="buy-scanner", scope=scope).to_body()
    await channel.default_exchange.publish(aio_pika.Message(body), routing_key=f"{scope}.jobs.buy-scanner", timeout=10)


async def _consume(connection: aio_pika.abc.AbstractConnection, scope: str) -> None:
    channel = await connection.channel()
    queue = await channel.get_queue(f"{scope}.jobs.buy-scanner", ensure=False)
    await queue.consume(_ignore)


async def _ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    await message.nack(requeue=True)


async def test_a_scope_user_runs_its_own_scope_chain(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    amqp_url: str,
) -> None:
    """Everything a worker does in its scope (declare, consume, post the next slot, retry, park) stays
    inside the user's permissions."""
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="buy-scanner", interval_seconds=1, default_params={"sleep_sec": 0.05})
    with scope_user(scope) as user:
        with service_process("buy_scanner", settings, scope, "mock", AMQP_URL=user.url(amqp_url)) as proc:
            await wait_for_process(proc, lambda: _succeeded(control, 3), 60, "3 chain runs with the scope user")
            channel = await amqp.channel()
            await channel.default_exchange.publish(
                aio_pika.Message(b"not json"), routing_key=f"{scope}.jobs.buy-scanner"
            )
            await wait_until(lambda: _parked(amqp, scope), 30, "the garbage message parked")
        assert "ACCESS_REFUSED" not in proc.output()


async def _succeeded(control: Control, n: int) -> bool:
    return sum(r["status"] == "succeeded" for r in await control.runs("buy-scanner")) >= n


async def _parked(amqp: aio_pika.abc.AbstractRobustConnection, scope: str) -> bool:
    channel = await amqp.channel()
    try:
        queue = await channel.declare_queue(f"{scope}.jobs.dead", passive=True)
        return bool(queue.declaration_result.message_count)
    finally:
        await channel.close()


def test_the_definitions_file_imports_one_user_per_scope_on_a_real_broker() -> None:
    """definitions.json as RabbitMQ reads it at boot (users renamed so the test touches nobody's users)."""
    prefix = "t" + secrets.token_hex(4)
    data = json.loads(DEFINITIONS.read_text())
    data.pop("vhosts", None)  # "/" exists here; leave it as it is
    for user in data["users"]:
        user["name"] = f"{prefix}-{user['name']}"
    for permission in data["permissions"]:
        permission["user"] = f"{prefix}-{permission['user']}"
    names = [u["name"] for u in data["users"]]
    path = Path(f"/tmp/{prefix}-definitions.json")
    path.write_text(json.dumps(data))
    try:
        rabbitmqctl("import_definitions", str(path))
        permissions = _wait_for_users(names)
        assert permissions[f"{prefix}-mock"] == ["^mock\\.", "^mock\\.", "^mock\\."]
        assert permissions[f"{prefix}-real"] == ["^real\\.", "^real\\.", "^real\\."]
        assert permissions[f"{prefix}-admin"] == [".*", ".*", ".*"]
        rabbitmqctl("authenticate_user", f"{prefix}-mock", "change-me-mock")
    finally:
        path.unlink(missing_ok=True)
        listed = rabbitmqctl("list_users", "--quiet", "--no-table-headers")
        for name in names:
            if name in listed.split():
                rabbitmqctl("delete_user", name)


def _wait_for_users(names: list[str]) -> dict[str, list[str]]:
    """Import is asynchronous: poll the permissions until every user shows up (bounded)."""
    for _ in range(100):
        lines = rabbitmqctl("list_permissions", "-p", "/", "--quiet", "--no-table-headers").splitlines()
        found = {parts[0]: parts[1:] for parts in (line.split("\t") for line in lines) if parts[0] in names}
        if len(found) == len(names):
            return found
        subprocess.run(["sleep", "0.2"], check=True)
    raise AssertionError(f"users {names} did not appear after the import")
