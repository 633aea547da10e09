"""A threaded HTTP server on 127.0.0.1 for stand-ins of outside systems: the server plumbing they share. A
subclass turns one request (method, path, query, content type, raw body) into a status, a content type and a body;
an exception in it becomes a 500 the test can read."""

from __future__ import annotations

import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

Reply = tuple[int, str, bytes]  # status, content type, body


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up (a long poll cancelled)
            super().handle_error(request, client_address)


class LocalHttp:
    def __init__(self) -> None:
        self._server: _Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "stand-in not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def respond(self, method: str, path: str, query: dict[str, str], content_type: str, raw: bytes) -> Reply:
        raise NotImplementedError

    def start(self) -> Self:
        local = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                query = dict(urllib.parse.parse_qsl(parts.query))
                try:
                    status, content_type, body = local.respond(
                        self.command, parts.path, query, self.headers.get("Content-Type") or "", raw
                    )
                except Exception as exc:  # a bug in a stand-in shows up as a 500 the test can read
                    status, content_type = 500, "application/json"
                    body = json.dumps({"ok": False, "error_code": 500, "error": repr(exc)}).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
