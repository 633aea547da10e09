"""Links from the Admin UI to a job's Grafana panel and its Loki logs (pure: URLs from names)."""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

DASHBOARD_UID = "scheduler"  # deploy/grafana/dashboards/scheduler.json
LOKI_UID = "loki"  # deploy/grafana/provisioning/datasources/datasources.yml


def grafana_panel(grafana_url: str, scope: str, job_id: str) -> str:
    """The scheduler dashboard filtered to the job."""
    query = urlencode({"var-scope": scope, "var-job": job_id})
    return f"{grafana_url.rstrip('/')}/d/{DASHBOARD_UID}/scheduler?{query}"


def loki_logs(grafana_url: str, scope: str, job_id: str, since: str = "now-1h") -> str:
    """Grafana Explore on the job's log lines (the labels the workers push: scope, job_id)."""
    state = {
        "datasource": LOKI_UID,
        "queries": [{"refId": "A", "datasource": {"type": "loki", "uid": LOKI_UID},
                     "expr": f'{{scope="{scope}", job_id="{job_id}"}}'}],
        "range": {"from": since, "to": "now"},
    }  # fmt: skip
    return f"{grafana_url.rstrip('/')}/explore?left={quote(json.dumps(state, separators=(',', ':')))}"
