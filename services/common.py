"""What every example service shares: mock or real handlers chosen by `settings.mode`, and a `main`.

    SPEC = ServiceSpec("buy_scanner", routes=(Route("buy-scanner", ScanParams, build_scan),))
    if __name__ == "__main__":
        main(SPEC)

In `SERVICE_MODE=mock` every queue of the service gets the mock executor (`sleep_sec`, `fail_rate`) and no
outside client is built. In `real` each route's `build` is called once at start-up with the client
configuration; it returns the handler and fails fast (ConfigError) when an env var it needs is missing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from pydantic import BaseModel, ValidationError

from services.clients.config import ClientConfig
from services.mock_executor import MockParams, mock_run
from shared.errors import ConfigError
from shared.messages import describe_validation_error
from shared.metrics import Metrics
from shared.registry import HandlerFn
from shared.settings import Settings
from shared.worker import Worker

log = structlog.get_logger("services.common")

EXIT_CONFIG = 2  # a setting is wrong: restarting will not help


@dataclass(frozen=True, slots=True)
class Route:
    """A work queue (or one job on it) and how to build its real handler."""

    queue: str
    params: type[BaseModel]
    build: Callable[[ClientConfig, Settings], HandlerFn]
    job: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A service: its name (the package under services/), its routes, and the env vars its real mode needs."""

    name: str
    routes: tuple[Route, ...]
    needs: tuple[str, ...] = ()

    @property
    def queues(self) -> list[str]:
        return sorted({r.queue for r in self.routes})


def make_worker(
    spec: ServiceSpec,
    settings: Settings | None = None,
    config: ClientConfig | None = None,
    metrics: Metrics | None = None,
) -> Worker:
    """A Worker serving the spec's queues with mock or real handlers, by `settings.mode`. Real handlers are
    built here, once: a missing or malformed outside-system setting fails now (ConfigError), not at a run."""
    settings = settings or Settings()
    worker = Worker(spec.name, settings, metrics)
    if settings.mode == "mock":
        for queue in spec.queues:
            worker.register(queue, mock_run, MockParams)
        return worker
    config = config or ClientConfig()
    config.require(*spec.needs)
    for route in spec.routes:
        worker.register(route.queue, route.build(config, settings), route.params, route.job)
    return worker


def main(spec: ServiceSpec) -> None:
    """`python -m services.<name>`: build the worker and run it; configuration errors end the process with one
    line on stderr and exit code 2, never a traceback (a refused permission is handled by Worker.run)."""
    try:
        settings = Settings()
        worker = make_worker(spec, settings)
        worker.run()
    except ConfigError as exc:
        print(f"error: {spec.name}: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    except ValidationError as exc:
        print(f"error: {spec.name}: invalid settings: {describe_validation_error(exc)}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
