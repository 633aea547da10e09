"""Test harness: the real RabbitMQ and PostgreSQL, one private scope per test, cleanup afterwards.

URLs come from AMQP_URL / DATABASE_URL (defaults: localhost, guest/guest, postgres on 127.0.0.1). If they do not
answer and a Docker engine does, RabbitMQ and PostgreSQL are started with testcontainers; otherwise the run stops
with one clear line. Integration tests are never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator

import aio_pika
import asyncpg
import pytest

from shared import topology
from shared.preflight import preflight
from shared.settings import Settings
from shared.store import jobs as jobs_store
from shared.store.migrate import migrate
from shared.store.pool import create_pool
from tests.support import leftovers


def _docker_engine_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _start_containers() -> Iterator[None]:
    from testcontainers.postgres import PostgresContainer
    from testcontainers.rabbitmq import RabbitMqContainer

    with RabbitMqContainer("rabbitmq:3.13-management") as rabbit, PostgresContainer("postgres:16") as pg:
        os.environ["AMQP_URL"] = f"amqp://guest:guest@{rabbit.get_container_host_ip()}:{rabbit.get_exposed_port(5672)}/"
        os.environ["DATABASE_URL"] = pg.get_connection_url().replace("postgresql+psycopg2", "postgresql")
        yield


@pytest.fixture(scope="session", autouse=True)
def servers() -> Iterator[Settings]:
    """Make sure both servers answer, and migrate once."""
    problems = asyncio.run(preflight(Settings()))
    if problems and _docker_engine_available():
        containers = _start_containers()
        next(containers)
        problems = asyncio.run(preflight(Settings()))
    if problems:
        pytest.exit("\n".join(problems), returncode=3)
    settings = Settings()

    async def _migrate() -> None:
        conn = await asyncpg.connect(settings.database_url.get_secret_value())
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(_migrate())
    yield settings


@pytest.fixture
def settings(servers: Settings) -> Settings:
    return servers


@pytest.fixture
def amqp_url(settings: Settings) -> str:
    return settings.amqp_url.get_secret_value()


@pytest.fixture
def database_url(settings: Settings) -> str:
    return settings.database_url.get_secret_value()


@pytest.fixture
def scope() -> str:
    """A private scope for one test: its queues and rows touch nobody else's (a live demo included)."""
    return "t" + secrets.token_hex(4)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=10)
    yield pool
    await pool.close()


@pytest.fixture
async def amqp(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(amqp_url)
    yield connection
    await connection.close()


DELETED_JOBS = """
SELECT DISTINCT job_id, COALESCE(before->>'queue', after->>'queue') AS queue
FROM scheduler.audit WHERE scope = $1 AND job_id IS NOT NULL
"""


@pytest.fixture
async def cleanup_scope(scope: str, database_url: str, amqp_url: str) -> AsyncIterator[str]:
    """Yields the scope; afterwards deletes every queue of its jobs and every row of the scope."""
    yield scope
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT job_id, queue FROM scheduler.jobs WHERE scope = $1", scope)
        gone = await conn.fetch(DELETED_JOBS, scope)  # the management API may not list a fresh queue yet
        job_ids = sorted({r["job_id"] for r in [*rows, *gone]})
        queues = sorted({r["queue"] for r in [*rows, *gone] if r["queue"]})
        connection = await aio_pika.connect(amqp_url)
        try:
            channel = await connection.channel()
            await topology.delete_scope(channel, scope, job_ids, queues)
            for name in await leftovers.scope_queues(amqp_url, scope):  # queues of jobs the test deleted
                channel = await connection.channel()  # a failed deletion closes its channel
                with contextlib.suppress(aio_pika.exceptions.AMQPError):
                    await channel.queue_delete(name)
        finally:
            await connection.close()
        await jobs_store.delete_scope(conn, scope)
    finally:
        await conn.close()


# The longest files (bounded soaks, the compose rehearsal, failover on private clusters) start first: with test files
# spread over processes (`make test`: -n 2 --dist loadfile), one started last would run alone at the end. xdist
# would reorder files by their number of tests (a soak has one test, so it went last): `make test` passes
# --no-loadscope-reorder to keep this order. xdist gives each process one file, then a second: with two processes
# the two soaks (first and third) go to the same process, one after the other, and never share the two cores.
LONGEST_FIRST = (
    "test_chaos_ha_bounded.py",
    "test_compose_rehearsal.py",
    "test_chaos_bounded.py",
    "test_ha_failover.py",
    "test_ha_freeze.py",
    "test_packaging.py",
    "test_bench_smoke.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file and among the others is kept
