"""No metric label takes unbounded values: after successes, failures with error text, manual runs with their own
run ids, garbage and unknown-job messages, the worker's /metrics has only known label names, and no value that
looks like a run id, an error text or a job id nobody declared."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
import uuid

import aio_pika
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared import topology
from shared.job_metrics import keep_job_metrics
from shared.settings import Settings
from shared.vocabulary import RunStatus, TriggerSource
from tests.support.ports import free_port
from tests.support.probe import ProbeParams, probe
from tests.support.runtime import Control, fast_settings, running_worker, wait_until

pytestmark = pytest.mark.integration

ALLOWED_LABELS = {
    "scope", "job_id", "queue", "status", "trigger_source", "reason", "outcome", "dependency",
    "service", "mode", "version",  # scheduler_worker_info
    "le",  # histogram buckets
}  # fmt: skip
UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.IGNORECASE)
SHORT_TOKEN = re.compile(r"^[A-Za-z0-9_.+:-]{0,63}$")


async def test_metric_labels_stay_bounded_whatever_the_runs_and_messages(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(job_id="tick", interval_seconds=1)
    await control.seed(job_id="broken", interval_seconds=1, max_attempts=2, retry_backoff_sec=0.1,
                       default_params={"fail_until_attempt": 99})  # fmt: skip
    port = free_port()
    manual_run_id = uuid.uuid4()
    handlers = {"tick": (probe, ProbeParams), "broken": (probe, ProbeParams)}
    async with running_worker(fast_settings(settings, scope, metrics_port=str(port)), handlers) as worker:
        refresh = asyncio.create_task(keep_job_metrics(worker.metrics, pool, scope, worker.registry.queues, 0.5))
        try:
            await publish(amqp, scope, "tick", json.dumps({"job_id": "tick", "run_id": str(manual_run_id)}).encode())
            await publish(amqp, scope, "tick", b"\x00 garbage \xff")
            await publish(amqp, scope, "tick", json.dumps({"job_id": "no-such-job-7f3a"}).encode())
            await wait_until(lambda: _ran(control, "broken", "failed", 3), 30, "three failed runs of broken")
            await wait_until(lambda: _ran(control, "tick", "succeeded", 3), 30, "three successful runs of tick")
            await wait_until(lambda: _manual_done(control, manual_run_id), 30, "the manual run")
            text = await asyncio.to_thread(scrape, port)
        finally:
            refresh.cancel()

    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    assert any(s.name == "scheduler_runs_total" and s.labels.get("status") == "failed" for s in samples)
    assert any(s.name == "scheduler_messages_parked_total" and s.value > 0 for s in samples)
    problems = []
    for sample in samples:
        for name, value in sample.labels.items():
            if name not in ALLOWED_LABELS:
                problems.append(f"{sample.name}: label name {name!r}")
            if UUID.search(value) or not SHORT_TOKEN.match(value):
                problems.append(f"{sample.name}: {name}={value!r}")
        labels = sample.labels
        if "job_id" in labels and labels["job_id"] not in {"tick", "broken"}:
            problems.append(f"{sample.name}: job_id={labels['job_id']!r} is not a declared job")
        if "status" in labels and labels["status"] not in {s.value for s in RunStatus}:
            problems.append(f"{sample.name}: status={labels['status']!r}")
        if "trigger_source" in labels and labels["trigger_source"] not in {t.value for t in TriggerSource}:
            problems.append(f"{sample.name}: trigger_source={labels['trigger_source']!r}")
    assert problems == []
    for unbounded in (str(manual_run_id), "probe failure", "no-such-job-7f3a", "garbage"):
        assert unbounded not in text


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


async def publish(amqp: aio_pika.abc.AbstractRobustConnection, scope: str, queue: str, body: bytes) -> None:
    channel = await amqp.channel()
    try:
        exchange = await channel.get_exchange(topology.exchange_name(scope))
        await exchange.publish(aio_pika.Message(body), routing_key=topology.work_queue_name(scope, queue))
    finally:
        await channel.close()


async def _ran(control: Control, job_id: str, status: str, n: int) -> bool:
    return len([r for r in await control.runs(job_id) if r["status"] == status]) >= n


async def _manual_done(control: Control, run_id: uuid.UUID) -> bool:
    return any(r["run_id"] == run_id and r["status"] == "succeeded" for r in await control.runs("tick"))
