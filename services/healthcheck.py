"""`python -m services.healthcheck`: the container healthcheck of a worker service, by readiness.

Exit 0 when the worker in this container answers `/readyz` on its METRICS_PORT with 200: its RabbitMQ
connection is open, PostgreSQL answers, the schema is at head and every work queue is consumed. Exit 1 with
one line on stderr otherwise (the worker's own JSON reason when it gave one). A worker whose RabbitMQ or
PostgreSQL is gone is therefore reported unhealthy until it has them back; `/healthz` says only "alive".
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

from pydantic import ValidationError

from shared.settings import Settings


def _reason(body: bytes) -> str:
    try:
        return str(json.loads(body).get("reason") or "not ready")
    except (ValueError, AttributeError):
        return "not ready (the answer is not the worker's JSON)"


def check(port: int, timeout_sec: float = 5.0) -> str | None:
    """None when ready, else why not."""
    if not port:
        return "METRICS_PORT is 0: the worker serves no /readyz to ask"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=timeout_sec) as answer:
            answer.read(100_000)
    except urllib.error.HTTPError as exc:
        return f"port {port}: {exc.code}: {_reason(exc.read(100_000))}"
    except (urllib.error.URLError, OSError) as exc:
        return f"no metrics on port {port}, nothing answers: {exc}"
    return None


def main() -> int:
    try:
        port = Settings().metrics_port
    except ValidationError as exc:
        print(f"unhealthy: invalid settings: {exc.errors()[0].get('msg')}", file=sys.stderr)
        return 1
    problem = check(port)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
