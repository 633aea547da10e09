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

import aiormq.exceptions
import structlog
from pydantic import BaseModel, ValidationError

from services.clients.config import ClientConfig
from services.mock_executor import MockParams, mock_run
from shared.errors import ConfigError
from shared.messages import describe_validation_error
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
    spec: ServiceSpec, settings: Settings | None = None, config: ClientConfig | None = None, **worker_kw: object
) -> Worker:
    """A Worker serving the spec's queues with mock or real handlers, by `settings.mode`."""
    settings = settings or Settings()
    worker = Worker(spec.name, settings, **worker_kw)  # type: ignore[arg-type]
    if settings.mode == "mock":
        for queue in spec.queues:
            worker.register(queue, mock_run, MockParams)
        return worker
    config = config or ClientConfig()
    config.require(*spec.needs)
    for route in spec.routes:
        worker.register(route.queue, route.build(config, settings), route.params, route.job)
    return worker


def refusal_line(exc: aiormq.exceptions.AMQPError, settings: Settings) -> str:
    """RabbitMQ's ACCESS_REFUSED as one line an operator can act on."""
    text = str(exc.args[0]) if exc.args else str(exc)
    return (
        f"RabbitMQ refused access: {text}. The user in AMQP_URL ({settings.amqp_url_redacted}) "
        f"may only use its own scope's resources; SCHEDULER_SCOPE is {settings.scheduler_scope!r}: "
        "use that scope's user, or give the user permissions on it"
    )


def main(spec: ServiceSpec) -> None:
    """`python -m services.<name>`: build the worker and run it; configuration and permission errors end the
    process with one line on stderr and exit code 2, never a traceback."""
    settings: Settings | None = None
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
    except aiormq.exceptions.ChannelAccessRefused as exc:
        assert settings is not None
        line = refusal_line(exc, settings)
        log.error("worker.access_refused", error=line)
        print(f"error: {spec.name}: {line}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
