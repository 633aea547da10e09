"""The compose stack rehearsed without an engine (tests/support/compose.py): every service of a profile runs as
its container would, from the installed wheel, in depends_on order, each healthcheck run as written until it
passes. Profile `mock` then runs every job of deploy/jobs/mock.toml; profile `real` comes up healthy with every
outside system a local stand-in. The infrastructure is private (RabbitMQ with the deploy's definitions, a
PostgreSQL cluster), so the profiles' own scopes never meet a live demo; both are removed afterwards."""

from __future__ import annotations

import asyncio
import json
import time
import tomllib
import urllib.request
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.support.compose import DEPLOY, LOCAL_HOSTS, Rehearsal, rehearsed
from tests.support.image import Image, app_image
from tests.support.runtime import wait_until
from tests.support.standins import BrokerStandIn, LlmStandIn, MarketStandIn, NewsStandIn

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def image() -> Image:
    return app_image()


def every_worker_is_ready(rehearsal: Rehearsal) -> None:
    for container in rehearsal.app_containers():
        port = container.env.get("METRICS_PORT")
        # the seeder is a one-shot; the control plane (`serve`) is no worker: its own healthcheck asked its /healthz
        if not port or container.proc is None or container.service.startswith(("seeder-", "scheduler-service-")):
            continue
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as answer:
            assert answer.status == 200, container.name
            assert json.loads(answer.read())["status"] == "ready"


def prometheus_sends_to_alertmanager(rehearsal: Rehearsal) -> None:
    """The shipped Prometheus config, as the compose file mounts it, loaded its rules and found Alertmanager."""
    prometheus = f"http://127.0.0.1:{rehearsal.addresses.ports[('prometheus', 9090)]}"
    alertmanager = rehearsal.addresses.ports[("alertmanager", 9093)]
    with urllib.request.urlopen(f"{prometheus}/api/v1/rules", timeout=10) as answer:
        groups = json.loads(answer.read())["data"]["groups"]
    assert {g["name"] for g in groups} >= {"scheduler-jobs", "scheduler-workers"}
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"{prometheus}/api/v1/alertmanagers", timeout=10) as answer:
            active = json.loads(answer.read())["data"]["activeAlertmanagers"]
        if any(f"127.0.0.1:{alertmanager}" in a["url"] for a in active):
            return
        assert time.monotonic() < deadline, f"prometheus found no alertmanager: {active}"
        time.sleep(1)


def scheduler_dsn(rehearsal: Rehearsal, service: str) -> str:
    return rehearsal.app_containers_of(service)[0].env["DATABASE_URL"]


async def test_mock_profile_comes_up_healthy_and_runs_every_job(image: Image) -> None:
    jobs = set(tomllib.loads((DEPLOY / "jobs" / "mock.toml").read_text())["jobs"])
    with rehearsed(image, "mock") as rehearsal:
        assert {c.service for c in rehearsal.app_containers()} >= {"seeder-mock", "buy-scanner-mock"}
        assert len(rehearsal.containers["buy-scanner-mock"]) == 2, "replicas: 2 must give two processes"
        await asyncio.to_thread(every_worker_is_ready, rehearsal)
        await asyncio.to_thread(prometheus_sends_to_alertmanager, rehearsal)
        conn = await asyncpg.connect(scheduler_dsn(rehearsal, "buy-scanner-mock"))
        try:

            async def ran() -> set[str]:
                rows = await conn.fetch(
                    "SELECT DISTINCT job_id FROM scheduler.job_runs WHERE scope = 'mock' AND started_at IS NOT NULL"
                )
                return {r["job_id"] for r in rows}

            async def all_ran() -> bool:
                return await ran() >= jobs

            try:
                await wait_until(all_ran, 150, "a run of every job of deploy/jobs/mock.toml")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: never ran {sorted(jobs - await ran())}") from None
        finally:
            await conn.close()
        # `make ctl PROFILE=mock ARGS="..."`: a verb in the stack, as the scope's own user
        status = await asyncio.to_thread(
            rehearsal.run, "seeder-mock", ["python", "-m", "scheduler_seed", "status", "--json"]
        )
        assert status.returncode == 0, status.stdout
        assert {job["job_id"] for job in json.loads(status.stdout)} == jobs
        paused = await asyncio.to_thread(
            rehearsal.run,
            "seeder-mock",
            ["python", "-m", "scheduler_seed", "pause", "maintenance", "--note", "rehearsal"],
            {"SCHEDULER_ACTOR": "cli:rehearsal@compose"},
        )
        assert paused.returncode == 0, paused.stdout
        audit = await asyncio.to_thread(
            rehearsal.run, "seeder-mock", ["python", "-m", "scheduler_seed", "audit", "maintenance", "--json"]
        )
        assert audit.returncode == 0, audit.stdout
        assert json.loads(audit.stdout)[0]["actor"] == "cli:rehearsal@compose", audit.stdout
        for container in rehearsal.app_containers():
            assert container.proc is not None
            alive = container.service.startswith("seeder-") or container.proc.poll() is None
            assert alive, f"{container.name} died:\n{container.output()}"


async def test_real_profile_comes_up_healthy_and_every_outside_call_stays_local(image: Image) -> None:
    with MarketStandIn() as market, BrokerStandIn() as broker, LlmStandIn() as llm, NewsStandIn() as news:
        variables = {
            "MARKET_API_URL": market.url,
            "BROKER_API_URL": broker.url,
            "LLM_API_URL": llm.url + "/v1",
            "NEWS_FEED_URL": news.url + "/feed.xml",
        }
        with rehearsed(image, "real", variables) as rehearsal:
            await asyncio.to_thread(every_worker_is_ready, rehearsal)
            outside = [
                f"{c.name}: {key}={value}"
                for c in rehearsal.app_containers()
                for key, value in c.env.items()
                if "://" in value and urlsplit(value).hostname not in LOCAL_HOSTS
            ]
            assert not outside, "addresses leaving the machine:\n" + "\n".join(outside)
