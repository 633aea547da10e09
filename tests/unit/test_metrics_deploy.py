"""deploy/ agrees with the code: the dashboard and the alert rules use only metric names the workers export,
the dashboard refers to the provisioned data sources by uid, and Prometheus scrapes every worker of compose."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from shared.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana/dashboards/scheduler.json"
ALERTS = DEPLOY / "prometheus/alerts.yml"
PROMETHEUS = DEPLOY / "prometheus/prometheus.yml"
DATASOURCES = DEPLOY / "grafana/provisioning/datasources/datasources.yml"
PROVIDERS = DEPLOY / "grafana/provisioning/dashboards/dashboards.yml"
COMPOSE = DEPLOY / "docker-compose.yml"
LOKI = DEPLOY / "loki/loki-config.yml"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",), "info": ("_info",)}


def exported_names() -> set[str]:
    """Every sample name a worker's registry can expose."""
    names: set[str] = set()
    for family in Metrics(CollectorRegistry()).registry.collect():  # type: ignore[union-attr]
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return board


def panels() -> list[dict[str, Any]]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # panels inside a collapsed row
    return out


def panel_expressions() -> list[str]:
    """PromQL of every panel target (Loki targets excluded)."""
    return [
        t["expr"]
        for p in panels()
        for t in p.get("targets", [])
        if t.get("datasource", p["datasource"])["uid"] != "loki"
    ]


def alert_expressions() -> list[str]:
    return [rule["expr"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def prometheus_expressions() -> list[str]:
    variables = [v["definition"] for v in dashboard()["templating"]["list"] if v["type"] == "query"]
    return panel_expressions() + variables + alert_expressions()


def test_dashboard_and_alerts_use_only_exported_metric_names() -> None:
    exported = exported_names()
    used = {name for expr in prometheus_expressions() for name in re.findall(r"\bscheduler_[a-z_]+", expr)}
    assert used, "no scheduler metric found in the dashboard or the rules"
    assert used - exported == set()


def test_dashboard_refers_to_provisioned_datasources_by_uid() -> None:
    provisioned = {d["uid"]: d["type"] for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    assert provisioned == {"prometheus": "prometheus", "loki": "loki"}
    refs = [p["datasource"] for p in panels()] + [t["datasource"] for p in panels() for t in p.get("targets", [])]
    refs += [v["datasource"] for v in dashboard()["templating"]["list"] if "datasource" in v]
    assert refs and all(provisioned.get(ref["uid"]) == ref["type"] for ref in refs)


def test_dashboard_has_scope_and_job_variables_and_a_logs_panel_filtered_by_job() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["scope"]["definition"].startswith("label_values(")
    assert variables["job"]["definition"].startswith("label_values(") and variables["job"]["includeAll"]
    (logs,) = [p for p in panels() if p["type"] == "logs"]
    assert 'job_id=~"$job"' in logs["targets"][0]["expr"]
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    assert 36 <= board["schemaVersion"] <= 41
    for expr in panel_expressions():
        assert 'scope=~"$scope"' in expr, expr  # every panel follows the scope variable


def test_dashboard_provider_reads_the_directory_compose_mounts() -> None:
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    grafana = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]


def worker_services() -> set[str]:
    """Compose services that are workers: app services of a profile, except the one-shot seeders."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    # the seeders are one-shots and the control plane serves no /metrics: neither is scraped
    return {
        name
        for name, spec in services.items()
        if spec.get("profiles") and not name.startswith(("seeder-", "scheduler-service-"))
    }


def test_prometheus_scrapes_every_worker_of_both_profiles_and_each_replica() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    scraped: set[str] = set()
    for job in config["scrape_configs"]:
        if not job["job_name"].startswith("scheduler-"):
            continue
        for sd in job["dns_sd_configs"]:
            assert sd["type"] == "A" and sd["port"] == 9100  # one target per replica's address
            scraped.update(sd["names"])
    assert scraped == worker_services()
    assert {"mock", "real"} <= {name.rsplit("-", 1)[1] for name in scraped}
    assert config["rule_files"] == ["alerts.yml"]  # resolved next to prometheus.yml, in the repo and in compose


def test_worker_down_alert_covers_every_worker_scrape_job() -> None:
    rules = {r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    selector = re.search(r'job=~"([^"]+)"', rules["SchedulerWorkerDown"]["expr"])
    assert selector is not None
    jobs = [j["job_name"] for j in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"] if "dns_sd_configs" in j]
    assert sorted(jobs) == ["scheduler-mock", "scheduler-real"]
    assert all(re.fullmatch(selector[1], job) for job in jobs)


def test_loki_keeps_the_single_process_filesystem_layout_compose_expects() -> None:
    config = yaml.safe_load(LOKI.read_text())
    assert config["auth_enabled"] is False and config["server"]["http_listen_port"] == 3100
    assert config["common"]["path_prefix"] == "/loki"  # the loki-data volume
    assert config["schema_config"]["configs"][-1]["schema"] == "v13"
    loki = yaml.safe_load(COMPOSE.read_text())["services"]["loki"]
    assert "./loki/loki-config.yml:/etc/loki/loki-config.yml:ro" in loki["volumes"]
