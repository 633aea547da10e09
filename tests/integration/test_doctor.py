"""`doctor` against the real broker and database, in a private scope: clean, then each failure provoked (a
delay queue deleted, a queue redeclared with x-expires or another argument, the management API out of reach)
and named on its line, with exit code 1 and no traceback."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from typing import Any

import aio_pika
import asyncpg
import pytest
from pydantic import SecretStr

from shared import topology
from shared.settings import Settings
from tests.integration.test_cli import cli_here
from tests.support.api import VIEWER_TOKEN, bearer, serving, token_set
from tests.support.runtime import Control, wait_until

pytestmark = pytest.mark.integration


async def _redeclare(amqp: aio_pika.abc.AbstractRobustConnection, spec: topology.QueueSpec, **changes: object) -> None:
    channel = await amqp.channel()
    await channel.queue_delete(spec.name)
    await channel.declare_queue(spec.name, durable=True, arguments={**spec.arguments, **changes})
    await channel.close()


async def test_doctor_is_clean_then_names_each_provoked_failure(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="c", cron_expr="0 0 1 1 *")
    await control.seed(job_id="q", cron_expr="0 0 1 1 *", queue_type="quorum")

    clean = await cli_here(capsys, settings, scope, "doctor")
    assert clean.code == 0, clean.out
    for expected in (
        "ok   broker: RabbitMQ 3.", "ok   feature flags: quorum_queue enabled, stream_queue enabled",
        f"ok   delay queue {scope}.jobs.c.delay: present", f"ok   delivery limit {scope}.jobs.q: none",
        f"ok   retry queue {scope}.jobs.c.retry: not declared yet",
        "ok   ttl canary classic: 300 ms TTL expired", "ok   ttl canary quorum: 300 ms TTL expired",
        "ok   clock broker:", "ok   clock postgresql:", "ok   migrations: at head",
    ):  # fmt: skip
        assert expected in clean.out, clean.out

    channel = await amqp.channel()
    await channel.queue_delete(topology.delay_queue_name(scope, "c"))
    await channel.close()
    await _redeclare(amqp, topology.retry_queue_spec(scope, "c", "c"), **{"x-expires": 600000})
    await _redeclare(amqp, topology.delay_queue_spec(scope, "q", "q", "quorum"), **{"x-dead-letter-routing-key": "x"})
    broken = await cli_here(capsys, settings, scope, "doctor")
    assert broken.code == 1 and "Traceback" not in broken.err
    assert f"FAIL delay queue {scope}.jobs.c.delay: missing" in broken.out
    assert f"FAIL retry queue {scope}.jobs.c.retry: x-expires = 600000" in broken.out
    assert (
        f"FAIL delay queue {scope}.jobs.q.delay: arguments differ (x-dead-letter-routing-key: "
        f"expected '{scope}.jobs.q', found 'x')"
    ) in broken.out
    assert sum(line.startswith("FAIL") for line in broken.out.splitlines()) == 3, broken.out

    unreachable = settings.model_copy(update={"rabbitmq_management_url": SecretStr("http://guest:pw@127.0.0.1:1")})
    without = await cli_here(capsys, unreachable, scope, "doctor")
    assert without.code == 1 and "Traceback" not in without.err and "pw" not in without.out
    assert "FAIL feature flags: not checked: management API at http://127.0.0.1:1 unreachable" in without.out
    assert f"FAIL delay queue {scope}.jobs.c.delay: missing" in without.out  # probed over AMQP instead
    assert f"FAIL retry queue {scope}.jobs.c.retry: x-expires differs" in without.out


async def test_doctor_over_http(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    await Control(pool, amqp, scope).seed(job_id="h", cron_expr="0 0 1 1 *", queue_type="quorum")
    channel = await amqp.channel()
    await channel.queue_delete(topology.delay_queue_name(scope, "h"))
    await channel.close()
    tokens = token_set()
    async with serving(settings, scope, tokens) as api:
        refused = await api.get("/doctor")
        answer = await api.get("/doctor", headers=bearer(VIEWER_TOKEN))
    assert refused.status_code == 401
    assert answer.status_code == 200
    report = answer.json()
    failing = [f for f in report["findings"] if not f["ok"]]
    assert report["clean"] is False
    assert [f["check"] for f in failing] == [f"delay queue {scope}.jobs.h.delay"]
    assert any(f["check"] == "ttl canary quorum" and f["ok"] for f in report["findings"])


def _management(method: str, path: str, body: dict[str, object] | None = None) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:15672{path}", method=method)
    request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    request.add_header("Content-Type", "application/json")
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(request, data=data, timeout=10) as response:
        text = response.read()
    return json.loads(text) if text else None


async def test_doctor_names_a_delivery_limit_set_by_policy_on_a_quorum_work_queue(
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractRobustConnection,
    cleanup_scope: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scope = cleanup_scope
    await Control(pool, amqp, scope).seed(job_id="lim", cron_expr="0 0 1 1 *", queue_type="quorum")
    policy = f"/api/policies/%2F/{scope}-limit"
    definition = {"pattern": f"^{scope}\\.jobs\\.lim$", "apply-to": "queues", "definition": {"delivery-limit": 5}}
    await asyncio.to_thread(_management, "PUT", policy, definition)
    queue_path = f"/api/queues/%2F/{scope}.jobs.lim"

    async def applied() -> bool:  # the management API shows it with its next statistics round (5 s)
        found = await asyncio.to_thread(_management, "GET", queue_path)
        return bool((found.get("effective_policy_definition") or {}).get("delivery-limit"))

    try:
        await wait_until(applied, 30, "the policy in the management API")
        found = await cli_here(capsys, settings, scope, "doctor")
    finally:
        await asyncio.to_thread(_management, "DELETE", policy)
    assert found.code == 1
    assert f"FAIL delivery limit {scope}.jobs.lim: 5: a chain message requeued 5 times" in found.out
