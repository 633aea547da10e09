"""Every failure as a JSON answer, in one place: the control layer's error kinds to HTTP statuses.

not found 404, invalid 422 (naming the field), conflict 409 (with the running run), unavailable 503 (naming the
server, its redacted URL and how to start it). An error nobody meant is logged with its traceback under an id and
answered 500 with that id only: a response never carries a traceback or a secret.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException

from shared.control import ErrorKind, InvalidDefinition, InvalidRequest, RunningNow, kind_of
from shared.control.results import plain
from shared.dependencies import CONNECT_ERRORS
from shared.errors import SchedulerError
from shared.messages import describe_validation_error

log = structlog.get_logger(__name__)

STATUS = {
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.INVALID: 422,
    ErrorKind.CONFLICT: 409,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.FAILED: 502,  # the action reached the system and did not work out there (no outcome, refused queue)
}


class ErrorBody(BaseModel):
    """What every error answer holds."""

    error: str = Field(description="not_found, invalid, conflict, unavailable, failed, unauthorized, forbidden, ...")
    detail: str = Field(description="one line an operator can act on")
    fields: list[str] = Field(default_factory=list, description="the request fields at fault (422)")
    run_id: str | None = Field(default=None, description="409: the run going on now")
    since: str | None = Field(default=None, description="409: when that run started (ISO 8601, UTC)")
    status: str | None = Field(default=None, description="409: that run's status")


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and JSON body for a failed action (500 with an id for an error nobody meant)."""
    kind = kind_of(exc)
    if kind is None:
        incident = uuid.uuid4().hex[:12]
        log.error("api.unexpected_error", incident=incident, error_type=type(exc).__name__, exc_info=exc)
        return 500, {"error": "internal", "detail": f"unexpected error; the server log has it as {incident}"}
    body: dict[str, Any] = {"error": kind.value, "detail": str(exc)}
    if isinstance(exc, ValidationError):  # a value a model refused inside an action (run-now params over the limit)
        body["detail"] = describe_validation_error(exc).replace("Value error, ", "")
        body["fields"] = [".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors(include_url=False)]
    elif isinstance(exc, InvalidDefinition):
        body["fields"] = list(exc.fields)
    elif isinstance(exc, InvalidRequest) and exc.field:
        body["fields"] = [exc.field]
    if isinstance(exc, RunningNow):
        body.update(run_id=str(exc.run_id), since=plain(exc.since), status=exc.status)
    return STATUS[kind], body


def _validation_body(exc: RequestValidationError) -> dict[str, Any]:
    fields, problems = [], []
    for error in exc.errors():
        location = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
        # a body that is not JSON at all is located by character offset: the body is at fault
        field = "body" if error.get("type") == "json_invalid" else ".".join(location) or "body"
        fields.append(field)
        problems.append(f"{field}: {str(error.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return {"error": ErrorKind.INVALID.value, "detail": "; ".join(problems) or "invalid request", "fields": fields}


def install(app: FastAPI) -> None:
    """Register the handlers on the app."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_validation_body(exc), status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        names = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
        body = {"error": names.get(exc.status_code, "http_error"), "detail": str(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    async def _failed(_: Request, exc: Exception) -> JSONResponse:
        status, body = error_body(exc)
        return JSONResponse(body, status_code=status)

    # The expected failures by class (answered here, nothing re-raised); `Exception` last, for bugs only: Starlette
    # answers with it and then lets the server log the traceback.
    expected: list[type[Exception]] = [SchedulerError, ValidationError]
    expected += [cls for cls in CONNECT_ERRORS if issubclass(cls, Exception)]  # all are: the check is for mypy
    for cls in (*expected, Exception):
        app.add_exception_handler(cls, _failed)
