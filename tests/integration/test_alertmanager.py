"""Alerts reach people: a job that keeps failing fires SchedulerJobFailingRepeatedly in a real Prometheus (the
shipped rules), which sends it to a real Alertmanager running the shipped routing; the webhook receiver of the
job's scope gets it firing, then resolved once the job succeeds again.

Rewrites of the shipped files, and only these: the receivers' host names and ports point at a local webhook
receiver, Prometheus's alerting target at the test's Alertmanager, the notification timings (group_wait,
group_interval) are shortened so that the resolved notification comes within seconds, and the rule's hold
(`for: 1m`) is 5 s; the hold as shipped is checked by promtool in test_observability_prometheus.py."""

from __future__ import annotations

import asyncio
import re
import time

import aio_pika
import asyncpg
import pytest
import yaml

from services.mock_executor import MockParams, mock_run
from shared.settings import Settings
from tests.support.alertmanager import WebhookReceiver, running_alertmanager
from tests.support.image import ROOT
from tests.support.ports import free_port
from tests.support.prometheus import running_prometheus
from tests.support.runtime import Control, fast_settings, running_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

ALERTMANAGER_YML = ROOT / "deploy/alertmanager/alertmanager.yml"
PROMETHEUS_YML = ROOT / "deploy/prometheus/prometheus.yml"
ALERTS_YML = ROOT / "deploy/prometheus/alerts.yml"
ALERT = "SchedulerJobFailingRepeatedly"


def alertmanager_config(receiver_url: str) -> str:
    """The shipped routing with every webhook pointed at the local receiver and faster notification timings."""
    text = re.sub(r"http://scheduler-service-(mock|real):\d+", receiver_url, ALERTMANAGER_YML.read_text())
    text = re.sub(r"group_wait: \w+", "group_wait: 1s", text)
    return re.sub(r"group_interval: \w+", "group_interval: 2s", text)


def prometheus_config(alertmanager_url: str, worker_port: int, scope: str) -> str:
    """The shipped global and alerting blocks, evaluated every second, scraping the test's worker (the
    shipped scrape jobs find compose services by DNS, which only the compose network has)."""
    shipped = yaml.safe_load(PROMETHEUS_YML.read_text())
    targets = shipped["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"], "prometheus.yml must send alerts to the compose Alertmanager"
    shipped["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager_url.split("//")[1]]
    shipped["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    shipped["scrape_configs"] = [
        {"job_name": f"scheduler-{scope}", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]}
    ]
    return yaml.safe_dump(shipped)


def alerts_with_short_hold(alert: str, hold: str) -> str:
    """The shipped rules, with `alert`'s `for:` (a minute, when shipped) cut to `hold`: the rest is as shipped."""
    rules = yaml.safe_load(ALERTS_YML.read_text())
    found = [r for group in rules["groups"] for r in group["rules"] if r.get("alert") == alert]
    assert len(found) == 1 and "for" in found[0], f"alerts.yml has one {alert} rule with a `for:`"
    found[0]["for"] = hold
    return yaml.safe_dump(rules, sort_keys=False)


def states(receiver: WebhookReceiver, job_id: str) -> list[str]:
    """The status of each notification about this job's alert, in order."""
    found = []
    for body in receiver.notifications():
        alerts = [a for a in body.get("alerts", []) if a["labels"].get("alertname") == ALERT]
        found += [a["status"] for a in alerts if a["labels"].get("job_id") == job_id]
    return found


async def wait_for_state(receiver: WebhookReceiver, job_id: str, state: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state in states(receiver, job_id):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"no {state} notification for {job_id} within {timeout} s: {receiver.notifications()}")


async def test_a_failing_job_alert_reaches_the_webhook_firing_then_resolved(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractRobustConnection, cleanup_scope: str
) -> None:
    scope = cleanup_scope
    control = Control(pool, amqp, scope)
    await control.seed(
        job_id="doomed", interval_seconds=1, max_attempts=1, default_params={"sleep_sec": 0, "fail_rate": 1.0}
    )
    port = free_port()
    worker_settings = fast_settings(settings, scope, metrics_port=str(port))
    with WebhookReceiver() as receiver, running_alertmanager(alertmanager_config(receiver.url)) as alertmanager:
        config = prometheus_config(alertmanager, port, scope)
        files = {"alerts.yml": alerts_with_short_hold(ALERT, "5s")}
        async with running_worker(worker_settings, {"doomed": (mock_run, MockParams)}):
            with running_prometheus(config, files):
                # the rule's `for: 1m` is 5 s here: how `for` holds an alert back is promtool's part (rule tests)
                await wait_for_state(receiver, "doomed", "firing", 150)
                notified = receiver.notifications()[0]
                assert notified["receiver"] == "control-plane-real"  # a test scope is neither mock nor real
                assert notified["commonLabels"]["severity"] == "warning"
                await control.change("doomed", default_params={"sleep_sec": 0, "fail_rate": 0.0})
                await wait_for_state(receiver, "doomed", "resolved", 60)
    assert states(receiver, "doomed")[-1] == "resolved"
