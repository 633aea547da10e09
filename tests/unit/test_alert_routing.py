"""The shipped Alertmanager routing, checked by Alertmanager's own tool (`amtool`, Debian's
prometheus-alertmanager): every severity of every alert reaches the control plane of its scope."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy/alertmanager/alertmanager.yml"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("amtool")
    assert tool, "amtool not found: apt-get install -y prometheus-alertmanager (make test installs it)"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)


def test_the_config_is_valid() -> None:
    result = amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def shipped_severities() -> set[str]:
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    return {r["labels"]["severity"] for r in rules}


@pytest.mark.parametrize("severity", sorted(shipped_severities()))
@pytest.mark.parametrize(
    "labels, receiver",
    [
        (["scope=mock"], "control-plane-mock"),
        (["job=scheduler-mock"], "control-plane-mock"),
        (["scope=real"], "control-plane-real"),
        (["job=scheduler-real"], "control-plane-real"),
    ],
)
def test_each_severity_reaches_the_control_plane_of_its_scope(severity: str, labels: list[str], receiver: str) -> None:
    result = amtool("config", "routes", "test", f"--config.file={CONFIG}", f"severity={severity}", *labels)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receiver


def test_every_receiver_is_a_webhook_to_a_control_plane_that_sends_resolved() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    urls = {
        r["name"]: [(w["url"], w.get("send_resolved")) for w in r.get("webhook_configs", [])]
        for r in config["receivers"]
    }
    assert urls == {
        "control-plane-mock": [("http://scheduler-service-mock:9095/alerts", True)],
        "control-plane-real": [("http://scheduler-service-real:8095/alerts", True)],
    }
