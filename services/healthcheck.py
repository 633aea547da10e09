"""`python -m services.healthcheck`: the container healthcheck of a worker service.

Exit 0 when the worker in this container answers on its metrics port (METRICS_PORT) with its own metrics;
1 with one line on stderr otherwise. The metrics endpoint is up from the first second of the process, and the
worker waits for RabbitMQ and PostgreSQL by itself, so this says "the process is alive and serving", which is
what a restart policy or an operator needs to know.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from shared.settings import Settings

MARKER = b"scheduler_worker_info"


def check(port: int, timeout_sec: float = 3.0) -> str | None:
    """None when healthy, else why not."""
    if not port:
        return "METRICS_PORT is 0: the worker exposes no metrics to check"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_sec) as answer:
            body = answer.read(4_000_000)
    except (urllib.error.URLError, OSError) as exc:
        return f"no metrics on port {port}: {exc}"
    return None if MARKER in body else f"port {port} answers, but not with a worker's metrics"


def main() -> int:
    problem = check(Settings().metrics_port)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
