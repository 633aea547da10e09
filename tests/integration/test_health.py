"""Health that tells the truth: a worker whose PostgreSQL (or RabbitMQ) is gone answers /readyz 503 with the
reason, and 200 again once it is back; /healthz stays 200 throughout (the process is alive). The server that is
stopped is always a private one (tests/chaos/servers.py), so the machine's servers are never touched."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
import pytest

from services.mock_executor import MockParams, mock_run
from shared import topology
from shared.settings import Settings
from shared.store.migrate import available_migrations
from tests.chaos.servers import PrivatePostgres, PrivateRabbit
from tests.support.ports import free_port
from tests.support.runtime import FAST, ROOT, running_worker

pytestmark = pytest.mark.integration


def http_get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def wait_status(url: str, status: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: tuple[int, dict[str, Any]] = (0, {})
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(http_get, url)
        if last[0] == status:
            return last[1]
        await asyncio.sleep(0.3)
    raise AssertionError(f"{url} did not answer {status} within {timeout} s; last answer {last}")


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres().start()
    try:
        yield pg
    finally:
        pg.remove()


@pytest.fixture
async def queues_removed(scope: str, amqp_url: str) -> AsyncIterator[str]:
    """The worker's rows live in the private cluster (removed with it); its queues on the machine's RabbitMQ
    are removed here."""
    yield scope
    connection = await aio_pika.connect(amqp_url)
    try:
        await topology.delete_scope(await connection.channel(), scope, [], ["health"])
    finally:
        await connection.close()


async def test_readyz_is_503_while_postgres_is_down_and_200_when_it_is_back(
    settings: Settings, private_pg: PrivatePostgres, queues_removed: str
) -> None:
    port = free_port()
    worker_settings = Settings(
        amqp_url=settings.amqp_url,
        database_url=private_pg.dsn(),
        scheduler_scope=queues_removed,
        metrics_port=port,
        **FAST,
    )
    base = f"http://127.0.0.1:{port}"
    async with running_worker(worker_settings, {"health": (mock_run, MockParams)}):
        ready = await wait_status(f"{base}/readyz", 200, 20)
        assert ready == {
            "status": "ready",
            "checks": {"rabbitmq": "ok", "postgres": "ok", "migrations": "ok", "queues": "ok"},
        }
        await private_pg.astop()
        down = await wait_status(f"{base}/readyz", 503, 20)
        assert down["status"] == "not ready"
        assert down["checks"]["postgres"].startswith("does not answer"), down
        assert down["reason"].startswith("postgres: "), down
        assert down["checks"]["rabbitmq"] == "ok" and down["checks"]["queues"] == "ok", down
        assert await asyncio.to_thread(http_get, f"{base}/healthz") == (200, {"status": "alive"})
        # the compose healthcheck, as the container runs it, says the same
        check = await asyncio.to_thread(healthcheck, port)
        assert check.returncode == 1 and check.stderr.startswith("unhealthy: port"), check.stderr
        assert "postgres" in check.stderr and "Traceback" not in check.stderr
        private_pg.spawn()  # from the main thread: the server dies with it
        await private_pg.wait_ready()
        back = await wait_status(f"{base}/readyz", 200, 30)
        assert back["status"] == "ready"
        assert (await asyncio.to_thread(healthcheck, port)).returncode == 0


def healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.healthcheck"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "METRICS_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_readyz_names_a_schema_behind_the_code(settings: Settings, queues_removed: str) -> None:
    """Migrations at head are part of readiness: a schema one version behind (simulated by hiding the newest
    version row in a private cluster) is 503 with the versions named."""
    pg = PrivatePostgres().start()
    try:
        port = free_port()
        worker_settings = Settings(
            amqp_url=settings.amqp_url,
            database_url=pg.dsn(),
            scheduler_scope=queues_removed,
            metrics_port=port,
            **FAST,
        )
        async with running_worker(worker_settings, {"health": (mock_run, MockParams)}) as worker:
            await wait_status(f"http://127.0.0.1:{port}/readyz", 200, 20)
            head = worker.readiness._head
            proc = await asyncio.create_subprocess_exec(
                "psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-qc",
                f"DELETE FROM scheduler.schema_migrations WHERE version = {head}",
            )  # fmt: skip
            assert await proc.wait() == 0
            behind = await wait_status(f"http://127.0.0.1:{port}/readyz", 503, 10)
            previous = max(m.version for m in available_migrations() if m.version < head)  # numbers may skip
            assert behind["checks"]["migrations"] == f"at {previous}, this code needs {head}", behind
    finally:
        pg.remove()


async def test_readyz_is_503_while_rabbitmq_is_down_and_200_when_it_is_back(
    settings: Settings, cleanup_scope: str
) -> None:
    """The broker's side: a private RabbitMQ node stopped (`stop_app`) under a worker, then started again."""
    rabbit = PrivateRabbit().start()
    try:
        port = free_port()
        worker_settings = Settings(
            amqp_url=rabbit.url(),
            database_url=settings.database_url,
            scheduler_scope=cleanup_scope,
            metrics_port=port,
            **FAST,
        )
        base = f"http://127.0.0.1:{port}/readyz"
        async with running_worker(worker_settings, {"health": (mock_run, MockParams)}):
            await wait_status(base, 200, 20)
            await rabbit.actl("stop_app")
            down = await wait_status(base, 503, 20)
            assert down["checks"]["rabbitmq"] != "ok" and down["checks"]["postgres"] == "ok", down
            assert down["reason"].startswith("rabbitmq: "), down
            await rabbit.actl("start_app")
            back = await wait_status(base, 200, 60)
            assert back["checks"] == {"rabbitmq": "ok", "postgres": "ok", "migrations": "ok", "queues": "ok"}
    finally:
        rabbit.stop()
