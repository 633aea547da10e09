"""The Admin web UI at `/`: server-rendered pages (Jinja2) made live with htmx (a static file, no build step).

Pages: the job table (refreshing), a job's runs (with its Grafana panel and Loki logs), parked messages with
replay, the audit log. Buttons post to `/ui/...` and get back one line for the flash area; a refusal is shown with
its status, as the API gives it (`409 Conflict: job 'x' is running now ...`). With tokens configured, `/login`
keeps the token in an HttpOnly, SameSite=Strict cookie; actions are audited as `ui:<token name>`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from http import HTTPStatus
from importlib import resources
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape

from scheduler_seed.server import links
from scheduler_seed.server.auth import COOKIE, LOCAL, Principal, Role
from scheduler_seed.server.backend import Backend
from scheduler_seed.server.config import ServerSettings
from scheduler_seed.server.errors import error_body
from scheduler_seed.server.routes.common import JOB_ID_PATTERN
from shared.control import Control
from shared.names import check_ident

router = APIRouter(include_in_schema=False)
_env = Environment(
    loader=FileSystemLoader(str(resources.files("scheduler_seed.server").joinpath("templates"))),
    autoescape=select_autoescape(default=True),
)
templates = Jinja2Templates(env=_env)


def when(value: datetime | None, zone: str = "UTC") -> str:
    """A time as an operator reads it, in the job's zone (UTC by default)."""
    if value is None:
        return "—"
    local = value.astimezone(ZoneInfo(zone))
    return local.strftime("%Y-%m-%d %H:%M:%S ") + (local.tzname() or zone)


def ms(value: int | None) -> str:
    if value is None:
        return "—"
    return f"{value} ms" if abs(value) < 10_000 else f"{value / 1000:.1f} s"


_env.filters["when"] = when
_env.filters["ms"] = ms


def _state(request: Request) -> tuple[Backend, ServerSettings]:
    return request.app.state.backend, request.app.state.server_settings


def _principal(request: Request) -> Principal | None:
    tokens = request.app.state.tokens
    if not tokens.enabled:
        return LOCAL
    principal: Principal | None = tokens.identify(request.cookies.get(COOKIE))
    return principal


def _flash(request: Request, status: int, text: str, headers: dict[str, str] | None = None) -> HTMLResponse:
    phrase = "" if status < 300 else f"{status} {HTTPStatus(status).phrase}: "
    return templates.TemplateResponse(
        request, "flash.html", {"ok": status < 300, "text": phrase + text}, status_code=status, headers=headers
    )


def _refused(request: Request, exc: BaseException) -> HTMLResponse:
    status, body = error_body(exc)
    return _flash(request, status, body["detail"])


def _page(request: Request, name: str, **context: Any) -> Response:
    principal = _principal(request)
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    backend, server = _state(request)
    base = {"scope": backend.scope, "who": principal, "refresh": server.ui_refresh_sec, "grafana": server.grafana_url}
    return templates.TemplateResponse(request, name, {**base, **context})


@router.get("/", response_class=HTMLResponse)
async def index(request: Request) -> Response:
    return _page(request, "index.html")


@router.get("/ui/jobs", response_class=HTMLResponse)
async def jobs_table(request: Request) -> Response:
    principal = _principal(request)
    if principal is None:
        return _flash(request, 401, "log in again (/login)")
    backend, _ = _state(request)
    try:
        async with backend.control(f"ui:{principal.name}") as control:
            statuses = await control.status()
    except Exception as exc:  # every failure becomes a line in the table's place, never a page of traceback
        return _refused(request, exc)
    return templates.TemplateResponse(
        request, "jobs_table.html", {"jobs": statuses, "now": datetime.now(UTC), "who": principal}
    )


async def _act(request: Request, job_id: str, action: str) -> Response:
    principal = _principal(request)
    if principal is None:
        return _flash(request, 401, "log in again (/login)")
    if not principal.may(Role.OPERATOR):
        return _flash(request, 403, f"token {principal.name!r} is a viewer: this needs an operator")
    backend, _ = _state(request)
    try:
        check_ident(job_id, "job_id")
        async with backend.control(f"ui:{principal.name}") as control:
            if action == "pause":
                note = (request.headers.get("HX-Prompt") or "").strip()[:500] or None
                await control.pause(job_id, note=note)
                text = f"{job_id} paused" + (f" ({note})" if note else "")
            elif action == "resume":
                changed = await control.resume(job_id)
                text = f"{job_id} resumed; first slot {when(changed.first_slot)}"
            else:
                queued = await control.run_now(job_id)
                text = f"{job_id}: run {queued.run_id} queued" + ("" if queued.worker_live else " (no live worker now)")
    except Exception as exc:  # shown plainly in the flash area with its status (409 while the job runs)
        return _refused(request, exc)
    return _flash(request, 200, text, headers={"HX-Trigger": "jobs-changed"})


@router.post("/ui/jobs/{job_id}/pause", response_class=HTMLResponse)
async def ui_pause(request: Request, job_id: str) -> Response:
    return await _act(request, job_id, "pause")


@router.post("/ui/jobs/{job_id}/resume", response_class=HTMLResponse)
async def ui_resume(request: Request, job_id: str) -> Response:
    return await _act(request, job_id, "resume")


@router.post("/ui/jobs/{job_id}/run-now", response_class=HTMLResponse)
async def ui_run_now(request: Request, job_id: str) -> Response:
    return await _act(request, job_id, "run-now")


@router.get("/ui/job/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: str) -> Response:
    backend, server = _state(request)
    if not _valid(job_id):
        return _flash(request, 422, "job_id: not a job id")
    return _page(
        request,
        "job.html",
        job_id=job_id,
        panel=links.grafana_panel(server.grafana_url, backend.scope, job_id),
        logs=links.loki_logs(server.grafana_url, backend.scope, job_id),
    )


@router.get("/ui/job/{job_id}/runs", response_class=HTMLResponse)
async def job_runs(request: Request, job_id: str) -> Response:
    principal = _principal(request)
    if principal is None:
        return _flash(request, 401, "log in again (/login)")
    backend, _ = _state(request)
    try:
        check_ident(job_id, "job_id")
        async with backend.control(f"ui:{principal.name}") as control:
            runs = await control.runs(job_id, 50)
    except Exception as exc:  # shown in the table's place
        return _refused(request, exc)
    return templates.TemplateResponse(request, "runs_table.html", {"runs": runs})


async def _list_page(request: Request, template: str, key: str, read: Callable[[Control], Awaitable[Any]]) -> Response:
    """A page showing what `read` returns under `key`, or, when it cannot be read, what is down instead."""
    principal = _principal(request)
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    backend, _ = _state(request)
    try:
        async with backend.control(f"ui:{principal.name}") as control:
            found = await read(control)
    except Exception as exc:  # the page says what is down instead of a table
        return _page(request, template, **{key: None}, problem=error_body(exc)[1]["detail"])
    return _page(request, template, **{key: found}, problem=None)


@router.get("/ui/dead", response_class=HTMLResponse)
async def dead_page(request: Request) -> Response:
    return await _list_page(request, "dead.html", "parked", lambda control: control.dead_letters(200))


@router.post("/ui/dead/{message_id}/replay", response_class=HTMLResponse)
async def ui_replay(request: Request, message_id: str) -> Response:
    principal = _principal(request)
    if principal is None:
        return _flash(request, 401, "log in again (/login)")
    if not principal.may(Role.OPERATOR):
        return _flash(request, 403, f"token {principal.name!r} is a viewer: this needs an operator")
    backend, _ = _state(request)
    try:
        async with backend.control(f"ui:{principal.name}") as control:
            replayed = await control.replay(message_id[:200])
    except Exception as exc:  # shown in the flash area
        return _refused(request, exc)
    return _flash(request, 200, f"message {replayed.message_id} sent back to {replayed.routing_key}")


@router.get("/ui/audit", response_class=HTMLResponse)
async def audit_page(request: Request) -> Response:
    return await _list_page(request, "audit.html", "entries", lambda control: control.audit(200))


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {"problem": None, "scope": _state(request)[0].scope})


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, token: Annotated[str, Form(max_length=500)]) -> Response:
    principal = request.app.state.tokens.identify(token)
    if principal is None:
        context = {"problem": "that token is not one of CONTROL_API_TOKENS", "scope": _state(request)[0].scope}
        return templates.TemplateResponse(request, "login.html", context, status_code=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


def _valid(job_id: str) -> bool:
    return re.fullmatch(JOB_ID_PATTERN, job_id) is not None
