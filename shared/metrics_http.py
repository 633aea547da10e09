"""The HTTP endpoint of a worker, on METRICS_PORT: `/metrics`, `/healthz` and `/readyz`, from daemon threads.

`/metrics` is prometheus_client's own WSGI app, unchanged (so the exposition is byte-for-byte what
`start_http_server` served, every other path included). `/healthz` answers 200 while the process can answer at
all; `/readyz` answers 200 when the worker is ready (`shared.readiness`) and 503 with a JSON reason when not.
A failure inside a check answers 503 or 500 with one line of JSON, never a traceback.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from shared.readiness import Readiness, Verdict

log = structlog.get_logger("shared.metrics_http")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: scrapes every few seconds would drown the worker's JSON lines."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def application(registry: CollectorRegistry, readiness: Readiness | None) -> WsgiApp:
    """The WSGI app: health and readiness by path, everything else to prometheus_client's app."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        try:
            if path == "/healthz":
                return _json(start_response, "200 OK", {"status": "alive"})
            if path == "/readyz":
                verdict = readiness.verdict() if readiness is not None else Verdict(False, {}, "no readiness state")
                status = "200 OK" if verdict.ready else "503 Service Unavailable"
                return _json(start_response, status, verdict.plain())
            answer: Iterable[bytes] = metrics_app(environ, start_response)
            return answer
        except Exception as exc:  # an endpoint answers with a line, never a traceback
            log.error("http.endpoint_failed", path=path, error=type(exc).__name__)
            code = "503 Service Unavailable" if path == "/readyz" else "500 Internal Server Error"
            return _json(start_response, code, {"status": "error", "reason": f"{path}: {type(exc).__name__}"})

    return app


def serve(port: int, registry: CollectorRegistry, readiness: Readiness | None = None) -> WSGIServer | None:
    """Serve `registry` at /metrics, plus /healthz and /readyz, on `port` (a daemon thread); port 0 means no
    endpoint. Returns the server (its `shutdown()` then `server_close()` free the port) or None."""
    if not port:
        return None
    server = make_server("0.0.0.0", port, application(registry, readiness), ThreadingWSGIServer, _QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
