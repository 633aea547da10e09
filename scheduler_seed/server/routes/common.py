"""What every route module shares: the backend of the app, the actor a principal acts as, the documented errors."""

from __future__ import annotations

from typing import Any

from fastapi import Path, Request

from scheduler_seed.server.auth import Principal
from scheduler_seed.server.backend import Backend
from scheduler_seed.server.errors import ErrorBody

JOB_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
JobId = Path(pattern=JOB_ID_PATTERN, description="the job id (lowercase letters, digits, '-' or '_')")


def backend(request: Request) -> Backend:
    found: Backend = request.app.state.backend
    return found


def actor(principal: Principal, door: str = "api") -> str:
    """What the audit names: the door and the token's name (`api:deploy-bot`, `ui:alice`)."""
    return f"{door}:{principal.name}"


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route documents: always 401, 403, 422, 503, 502, plus `codes`."""
    return {code: {"model": ErrorBody} for code in sorted({401, 403, 422, 502, 503, *codes})}
