"""The application factory: routes, error mapping, the Admin UI, and the lifespan that owns the connections."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from scheduler_seed.server import errors, ui
from scheduler_seed.server.access import cross_site
from scheduler_seed.server.auth import Tokens
from scheduler_seed.server.backend import Backend
from scheduler_seed.server.config import ServerSettings
from scheduler_seed.server.notify import Notifier
from scheduler_seed.server.routes import audit, bulk, dead, events, jobs, runs, system
from shared.settings import Settings

log = structlog.get_logger(__name__)


def create_app(
    settings: Settings,
    scope: str,
    tokens: Tokens,
    server_settings: ServerSettings | None = None,
    notifier: Notifier | None = None,
) -> FastAPI:
    """The control plane of one scope. Connections are made in the background at start-up (see `Backend`);
    `notifier` (the Telegram bot, or any `Notifier`) is started and stopped with the app and gets the alerts."""
    server_settings = server_settings or ServerSettings()
    backend = Backend(settings, scope)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await backend.start()
        if notifier is not None:
            await notifier.start()
        log.info("api.started", scope=scope, tokens=tokens.names, notifier=type(notifier).__name__)
        try:
            yield
        finally:
            if notifier is not None:
                with contextlib.suppress(Exception):
                    await notifier.stop()
            await backend.stop()
            log.info("api.stopped", scope=scope)

    app = FastAPI(
        title=f"Scheduler control plane ({scope})",
        description="Pause, resume, run now, change and read the self-rescheduling jobs of one scope. "
        "A control plane, not a scheduler: stopping it stops no job.",
        version="1",
        lifespan=lifespan,
    )
    app.state.backend = backend
    app.state.tokens = tokens
    app.state.notifier = notifier
    app.state.server_settings = server_settings
    errors.install(app)

    @app.middleware("http")
    async def refuse_cross_site(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if cross_site(request.method, request.headers.get("origin"), request.headers.get("host")):
            body = {"error": "forbidden", "detail": "a change from another site's page is refused (Origin differs)"}
            return JSONResponse(body, status_code=403)
        return await call_next(request)

    for module in (jobs, bulk, runs, dead, audit, events, system):
        app.include_router(module.router)
    app.include_router(ui.router)
    static = resources.files("scheduler_seed.server").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app
