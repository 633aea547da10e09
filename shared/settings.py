"""Process configuration from the environment (DESIGN section 9), validated once at start-up.

Connection strings are `SecretStr`: neither `repr(settings)` nor a log line ever shows a password.
Use `redact_url` when a URL has to be named in a message.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from functools import cached_property
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.brokers import BrokerUrlError, parse_amqp_urls, redact_all
from shared.event_loop import EventLoopSetting
from shared.lead import DEFAULT_CLAIM_LINGER_MS, DEFAULT_LEAD_MS
from shared.names import check_ident
from shared.store.vacuum import VacuumSetting

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

ServiceMode = Literal["mock", "real"]
QueueTypeSetting = Literal["classic", "quorum"]

TTL_CEILING_MS = 4_294_967_295
"""The largest per-message TTL RabbitMQ accepts (2^32 - 1 ms, about 49.7 days)."""


def redact_url(url: str) -> str:
    """Return `url` with any password replaced by `***` (user, host, port and path kept for diagnosis). A comma
    list of URLs, or one URL naming several hosts (`h1:5672,h2:5673`), has every password replaced."""
    if "," in url:
        return redact_all(url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Settings(BaseSettings):
    """Everything a worker or the CLI reads from the environment. Field names are the env var names."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", frozen=True, hide_input_in_errors=True
    )

    amqp_url: SecretStr = Field(
        default=SecretStr(DEFAULT_AMQP_URL),
        description="RabbitMQ URL (amqp:// or amqps://); several nodes of a cluster as a comma list of URLs or "
        "amqp://user:password@h1:5672,h2:5673/vhost",
    )
    rabbitmq_management_url: SecretStr | None = Field(
        default=None,
        description="RabbitMQ management HTTP API for `doctor` (http://user:pass@host:15672); default: the "
        "AMQP_URL host on port 15672 with its user",
    )
    database_url: SecretStr = Field(
        default=SecretStr(DEFAULT_DATABASE_URL),
        description="PostgreSQL DSN (sslmode=require is passed through); a primary and standbys as "
        "postgresql://user@h1:5432,h2:5432/db?target_session_attrs=read-write",
    )
    scheduler_scope: str = Field(default="mock", description="isolates queues and rows: mock, real or any slug")
    service_mode: ServiceMode | None = Field(
        default=None, description="mock|real: what the example services do; default mock in scope mock, else real"
    )
    metrics_port: int = Field(default=0, ge=0, le=65535, description="Prometheus /metrics port; 0 disables it")
    loki_url: str | None = Field(default=None, description="Loki base URL; logs are pushed there when set")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")
    worker_prefetch: int = Field(
        default=256, ge=1, le=10_000, description="unacked messages per worker (a claim ahead holds its message)"
    )
    worker_concurrency: int = Field(default=16, ge=1, le=10_000, description="handlers running at once per worker")
    db_pool_max: int = Field(default=0, ge=0, le=1000, description="PostgreSQL pool size; 0 = concurrency + 4")
    scheduler_dispatch_lead_ms: int = Field(
        default=DEFAULT_LEAD_MS,
        ge=0,
        le=5000,
        description="chain messages arrive this early; the worker claims the slot and posts the next one meanwhile"
        " and starts the handler at the slot (0: on arrival, no lead)",
    )
    scheduler_claim_linger_ms: int = Field(
        default=DEFAULT_CLAIM_LINGER_MS,
        ge=0,
        le=1000,
        description="with batching and a lead: a claim ahead waits up to this long (within half the lead) for other"
        " claims to share its statement and its post's record (0: only those that arrive together)",
    )
    scheduler_batching: bool = Field(
        default=True,
        description="claims ahead that arrive together, and the starts and finishes of runs that share a slot, go in"
        " one statement each (shared.lead_batch, shared.slot_batch); false: one message at a time",
    )
    shutdown_grace_sec: float = Field(default=30.0, ge=0, le=3600, description="SIGTERM: wait this long for runs")
    heartbeat_sec: float = Field(default=5.0, gt=0, le=300, description="worker heartbeat period")
    watchdog_interval_sec: float = Field(default=5.0, gt=0, le=3600, description="watchdog pass period")
    run_retention_days: float = Field(default=30.0, gt=0, description="job_runs older than this are pruned")
    chain_lost_after_sec: float = Field(
        default=60.0,
        gt=0,
        description="watchdog reseeds a chain whose next message is this overdue, and publishes again a retry"
        " that is this overdue",
    )
    dependency_retry_max_sec: float = Field(default=30.0, gt=0, description="cap of the reconnect back-off")
    amqp_stall_sec: float = Field(
        default=15.0,
        ge=0,
        le=3600,
        description="a connection whose oldest unconfirmed publish has waited this long (the broker not blocking it)"
        " is closed and reopened on the next node (shared.connection_watch); 0: never",
    )
    scheduler_queue_type: QueueTypeSetting = Field(
        default="classic",
        description="classic|quorum: the queue type of a work queue (and the delay and retry queues feeding it) "
        "whose jobs do not set queue_type",
    )
    scheduler_ttl_ceiling_ms: int = Field(
        default=TTL_CEILING_MS,
        ge=1000,
        le=TTL_CEILING_MS,
        description="longest per-message TTL posted; a slot further away is reached by re-arm hops",
    )
    scheduler_vacuum: VacuumSetting = Field(
        default="auto",
        description="auto|always|off: the watchdog vacuums the scheduler tables by autovacuum's rule; auto: only"
        " while the server's autovacuum is off (shared.watchdog.vacuum)",
    )
    scheduler_event_loop: EventLoopSetting = Field(
        default="auto",
        description="auto|uvloop|asyncio: the event loop of a worker and of the CLI and its server (shared.event_loop);"
        " auto: uvloop when installed (the `fast` extra), else asyncio's; uvloop without it installed stops at start",
    )
    scheduler_run_immediately: bool = Field(
        default=False,
        description="true: each boot of a service posts one startup run of every scheduled job it serves (once per "
        "service boot, not per replica), as if each had run_on_startup; for development, off by default",
    )

    @field_validator("amqp_url")
    @classmethod
    def _amqp_urls_parse(cls, value: SecretStr) -> SecretStr:
        try:
            parse_amqp_urls(value.get_secret_value())
        except BrokerUrlError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("scheduler_scope")
    @classmethod
    def _scope_is_ident(cls, value: str) -> str:
        return check_ident(value, "SCHEDULER_SCOPE")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"LOG_LEVEL {value!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @cached_property
    def mode(self) -> ServiceMode:
        """The effective service mode: SERVICE_MODE, else mock in scope `mock` and real elsewhere."""
        if self.service_mode is not None:
            return self.service_mode
        return "mock" if self.scheduler_scope == "mock" else "real"

    @property
    def amqp_urls(self) -> list[str]:
        """One URL per RabbitMQ node named by AMQP_URL."""
        return parse_amqp_urls(self.amqp_url.get_secret_value())

    @property
    def amqp_url_redacted(self) -> str:
        return redact_url(self.amqp_url.get_secret_value())

    @property
    def database_url_redacted(self) -> str:
        return redact_url(self.database_url.get_secret_value())

    @property
    def pool_size(self) -> int:
        return self.db_pool_max or self.worker_concurrency + 4


# SCHEDULER_* names read outside Settings (the CLI's audit actor): known, so not warned about.
OTHER_SCHEDULER_VARIABLES = frozenset({"SCHEDULER_ACTOR"})
_PREFIX = "SCHEDULER_"


def known_scheduler_variables() -> frozenset[str]:
    """Every SCHEDULER_* environment variable something here reads."""
    fields = {name.upper() for name in Settings.model_fields if name.upper().startswith(_PREFIX)}
    return frozenset(fields) | OTHER_SCHEDULER_VARIABLES


def unknown_scheduler_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """(name, closest known name or None) for each SCHEDULER_* variable of `environ` nothing reads: a typo such
    as SCHEDULER_RUN_IMEDIATELY would otherwise be ignored without a word."""
    known = {name.removeprefix(_PREFIX): name for name in known_scheduler_variables()}
    found = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(_PREFIX) or upper in known.values():
            continue
        # compared without the common prefix, which would make every name look close to every other
        close = difflib.get_close_matches(upper.removeprefix(_PREFIX), list(known), n=1, cutoff=0.6)
        found.append((name, known[close[0]] if close else None))
    return found


def unknown_variables_line(environ: Mapping[str, str]) -> str | None:
    """One line naming the unknown SCHEDULER_* variables (with the closest known name), or None if there are none."""
    unknown = unknown_scheduler_variables(environ)
    if not unknown:
        return None
    named = ", ".join(name if close is None else f"{name} (did you mean {close}?)" for name, close in unknown)
    return f"unknown environment variable{'s' if len(unknown) > 1 else ''} ignored: {named}"
