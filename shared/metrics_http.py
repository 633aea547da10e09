"""The /metrics HTTP endpoint of a worker: serves one registry from a daemon thread."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server


def serve(port: int, registry: CollectorRegistry) -> WSGIServer | None:
    """Expose `registry` at /metrics on `port` (a daemon thread); port 0 means no endpoint. Returns the server
    (its `shutdown()` frees the port) or None."""
    if not port:
        return None
    server, _ = start_http_server(port, registry=registry)
    return server
