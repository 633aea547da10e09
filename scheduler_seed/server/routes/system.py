"""`/healthz` (always answers: the server is alive, and says which servers it reaches), `GET /doctor` and
`POST /alerts`."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Body, Depends, Request

from scheduler_seed.server.access import operator, viewer
from scheduler_seed.server.alerts import AlertmanagerPayload, alert_lines, example_payload
from scheduler_seed.server.auth import Principal
from scheduler_seed.server.models import AlertsOut, Health
from scheduler_seed.server.notify import Notifier
from scheduler_seed.server.routes.common import actor, backend, errors
from shared import diagnosis
from shared.control.results import DoctorReport

log = structlog.get_logger(__name__)
router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=Health)
async def healthz(request: Request) -> Health:
    """200 while the server runs, even with PostgreSQL or RabbitMQ down (then `degraded`, naming which)."""
    found = await backend(request).health()
    status = "ok" if all(state == "up" for state in found.values()) else "degraded"
    return Health(status=status, scope=backend(request).scope, **found)


@router.get("/doctor", response_model=DoctorReport, responses=errors())
async def doctor(request: Request, principal: Annotated[Principal, Depends(viewer)]) -> DoctorReport:
    """What `python -m scheduler_seed doctor` checks, as JSON: `clean` is true when every finding is ok."""
    async with backend(request).control(actor(principal)) as control:
        findings = await control.doctor()
    return DoctorReport(clean=diagnosis.clean(findings), findings=findings)


@router.post("/alerts", response_model=AlertsOut, responses=errors())
async def alerts(
    request: Request,
    principal: Annotated[Principal, Depends(operator)],
    payload: Annotated[AlertmanagerPayload, Body(openapi_examples={"one firing alert": {"value": example_payload()}})],
) -> AlertsOut:
    """Alertmanager's webhook (version 4): one line per alert (firing or resolved) to the notifier, if any."""
    lines = alert_lines(payload)
    notifier: Notifier | None = request.app.state.notifier
    if notifier is None or not lines:
        return AlertsOut(forwarded=False, lines=lines)
    for line in lines:
        try:
            await notifier.notify(line)
        except Exception as exc:  # a chat that cannot be reached must not turn Alertmanager's webhook into a 500
            log.warning("api.alert_not_delivered", error_type=type(exc).__name__, sent_by=principal.name)
            return AlertsOut(forwarded=False, lines=lines)
    return AlertsOut(forwarded=True, lines=lines)
