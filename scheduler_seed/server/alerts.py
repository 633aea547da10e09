"""Alertmanager's webhook (payload version 4) as one line per alert: a pure function, no I/O.

A line reads `FIRING SchedulerJobFailing job=buy-scanner scope=mock: 3 runs failed in a row`, or `RESOLVED ...`:
what happened, which alert, which job, and the summary an operator wrote in the alert rule.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_LINE = 400  # a chat message stays readable; a summary that long is a rule to fix


class Alert(BaseModel):
    """One alert of the webhook (only what a line needs; other keys are kept by Alertmanager, ignored here)."""

    model_config = ConfigDict(extra="ignore")

    status: str = Field(description="firing or resolved")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class AlertmanagerPayload(BaseModel):
    """The body Alertmanager posts to a webhook receiver."""

    model_config = ConfigDict(extra="ignore")

    version: str = Field(default="4", description="the webhook payload version; 4 is the one Alertmanager sends")
    status: str = Field(default="firing", description="firing or resolved, for the group as a whole")
    receiver: str = ""
    alerts: list[Alert] = Field(default_factory=list, max_length=1000)


def alert_line(alert: Alert, group_status: str = "firing") -> str:
    """One line for one alert: status, alert name, job (and scope) when labelled, summary."""
    status = (alert.status or group_status or "firing").upper()
    parts = [status, alert.labels.get("alertname", "alert")]
    for label, shown in (("job_id", "job"), ("scope", "scope")):
        if alert.labels.get(label):
            parts.append(f"{shown}={alert.labels[label]}")
    head = " ".join(parts)
    summary = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    line = f"{head}: {summary}" if summary else head
    line = " ".join(line.split())  # one line, whatever the annotation held
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


def alert_lines(payload: AlertmanagerPayload) -> list[str]:
    """One line per alert of the payload, in the order Alertmanager sent them."""
    return [alert_line(alert, payload.status) for alert in payload.alerts]


def example_payload() -> dict[str, Any]:
    """A webhook body as Alertmanager sends it (for the OpenAPI document and the README)."""
    return {
        "version": "4",
        "status": "firing",
        "receiver": "scheduler",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "SchedulerJobFailing", "job_id": "buy-scanner", "scope": "mock"},
                "annotations": {"summary": "3 runs failed in a row"},
            }
        ],
    }
