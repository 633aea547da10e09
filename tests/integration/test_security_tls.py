"""TLS connection strings are passed through unchanged: `AMQP_URL=amqps://...` and `DATABASE_URL=...?sslmode=require`.

Shown twice: the settings and the connect functions hand the very strings to aio-pika and asyncpg, and a worker
runs a chain against a private RabbitMQ node with a TLS listener and a private PostgreSQL with `ssl = on`, whose
own views (`rabbitmqctl list_connections ssl`, `pg_stat_ssl`) say that every one of its connections is encrypted.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aio_pika
import asyncpg
import pytest

from shared import connect
from shared.settings import Settings
from shared.store.migrate import migrate
from shared.store.pool import create_pool
from tests.chaos.servers import PrivatePostgres, PrivateRabbit, TlsFiles
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import Control, fast_settings, running_worker, wait_until

AMQPS = "amqps://svc:p%40ss@broker.example:5671/vhost?cafile=/etc/ssl/ca.pem&no_verify_ssl=0"
PG_TLS = "postgresql://svc:p%40ss@db.example:5432/app?sslmode=require&sslrootcert=/etc/ssl/ca.pem"


def test_settings_keep_tls_connection_strings_as_given() -> None:
    s = Settings(amqp_url=AMQPS, database_url=PG_TLS)
    assert s.amqp_url.get_secret_value() == AMQPS
    assert s.database_url.get_secret_value() == PG_TLS
    assert s.amqp_url_redacted == "amqps://svc:***@broker.example:5671/vhost?cafile=/etc/ssl/ca.pem&no_verify_ssl=0"
    assert s.database_url_redacted.endswith("@db.example:5432/app?sslmode=require&sslrootcert=/etc/ssl/ca.pem")


async def test_connect_hands_the_tls_strings_to_the_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    async def fake_failover(urls: list[str], start: int = 0, **kw: Any) -> str:
        seen["amqp"] = urls[start % len(urls)]  # the URL the failover connection hands to aio-pika
        return "connection"

    async def fake_pool(dsn: str, **kw: Any) -> str:
        seen["pg"] = dsn
        return "pool"

    monkeypatch.setattr(connect, "open_failover", fake_failover)
    monkeypatch.setattr(asyncpg, "create_pool", fake_pool)
    await connect.rabbitmq(AMQPS, "test", name="worker-1")
    await connect.postgres_pool(PG_TLS, "test", max_size=2, name="worker-1")
    amqp = urlsplit(seen["amqp"])
    assert (amqp.scheme, amqp.netloc, amqp.path) == ("amqps", "svc:p%40ss@broker.example:5671", "/vhost")
    assert parse_qs(amqp.query) == {"cafile": ["/etc/ssl/ca.pem"], "no_verify_ssl": ["0"], "name": ["worker-1"]}
    assert seen["pg"] == PG_TLS


@pytest.fixture(scope="module")
def tls_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrivateRabbit, PrivatePostgres, TlsFiles]]:
    """A RabbitMQ node with a TLS listener and a PostgreSQL with ssl = on, both private, both removed afterwards."""
    tls = TlsFiles.create(tmp_path_factory.mktemp("tls"))
    rabbit, pg = PrivateRabbit(tls), PrivatePostgres(tls)
    try:
        rabbit.start()
        pg.start()
        yield rabbit, pg, tls
    finally:
        rabbit.stop()
        pg.remove()


@pytest.mark.integration
@pytest.mark.slow
async def test_a_worker_runs_a_chain_with_every_connection_encrypted(
    tls_servers: tuple[PrivateRabbit, PrivatePostgres, TlsFiles],
) -> None:
    rabbit, pg, tls = tls_servers
    amqp_url = rabbit.url(tls=True) + f"?cafile={tls.ca}"
    dsn = pg.dsn(sslmode="require")
    scope = "t" + secrets.token_hex(4)
    settings = fast_settings(Settings(amqp_url=amqp_url, database_url=dsn), scope)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await create_pool(dsn)
    amqp = await aio_pika.connect_robust(amqp_url)
    try:
        control = Control(pool, amqp, scope)
        await control.seed(job_id="tick", interval_seconds=1)
        async with running_worker(settings, {"tick": (probe, ProbeParams)}) as worker:
            await wait_until(lambda: _succeeded(control, 2), 60, "two chain runs over TLS")
            listed = await rabbit.actl("list_connections", "client_properties", "ssl", "--formatter", "json")
            connections = [(_connection_name(c), c["ssl"]) for c in json.loads(listed.stdout)]
            assert any(worker.worker_id in name for name, _ in connections), connections
            assert all(ssl for _, ssl in connections), connections
            sessions = await pool.fetch(
                "SELECT a.application_name, s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
                " WHERE a.backend_type = 'client backend'"
            )
            assert any(r["application_name"] == worker.worker_id for r in sessions)
            assert all(r["ssl"] for r in sessions), [dict(r) for r in sessions]
    finally:
        await amqp.close()
        await pool.close()


def _connection_name(connection: dict[str, Any]) -> str:
    props = connection.get("client_properties") or []
    return str(next((p[2] for p in props if isinstance(p, list) and p and p[0] == "connection_name"), ""))


async def _succeeded(control: Control, n: int) -> bool:
    return bool(sum(r["status"] == "succeeded" for r in await control.runs("tick")) >= n)
