"""Structured logs: structlog JSON lines on stdout, each run's lines bound with scope, job_id, run_id,
trigger_source and attempt. Events go through stdlib logging so further handlers see the same events: with a
Loki URL the same lines are also pushed to Loki (shared.loki), without ever blocking the caller.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

import structlog

from shared.metrics import LOG_DROP_REASONS, Metrics

if TYPE_CHECKING:
    from shared.loki import LokiQueueHandler, ShipStats

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    structlog.processors.format_exc_info,
]
_MARK = "_scheduler_handler"  # handlers this module installed, replaced by the next configure()
_LINE = "_scheduler_line"  # the rendered line, cached on the record


class JsonFormatter(structlog.stdlib.ProcessorFormatter):
    """Renders a record to its JSON line once; a second handler (Loki) gets the very same line."""

    def format(self, record: logging.LogRecord) -> str:
        line = record.__dict__.get(_LINE)
        if line is None:
            line = super().format(record)
            record.__dict__[_LINE] = line
        return str(line)


def configure(
    level: str = "INFO", *, loki_url: str | None = None, metrics: Metrics | None = None, **static: str
) -> LokiQueueHandler | None:
    """Route structlog through stdlib logging and render one JSON object per line on stdout.

    `static` key-values (service, scope, worker) are added to every line. With `loki_url`, lines are also pushed
    to Loki (labels: service and scope from `static`, job_id and trigger_source of the run, level); `metrics`
    then counts lines pushed and dropped. Returns the Loki handler, if any. Calling it again replaces the
    handlers installed before (a Loki handler is flushed and stopped).
    """
    structlog.configure(
        # filter_by_level first: an event below the level costs one level check, not the whole chain
        processors=[structlog.stdlib.filter_by_level, *_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = JsonFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            _add_static(static),
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(),
        ],
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _MARK, False):
            root.removeHandler(old)
            old.close()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    loki = _loki_handler(loki_url, static, metrics) if loki_url else None
    if loki is not None:
        handlers.append(loki)
    for handler in handlers:
        handler.setFormatter(formatter)
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    root.setLevel(level)
    quiet = max(logging.WARNING, logging.getLevelName(level))
    for noisy in ("aio_pika", "aiormq", "asyncio", "urllib3"):
        logging.getLogger(noisy).setLevel(quiet)
    if loki_url and loki is None:
        structlog.get_logger("shared.logs").warning(
            "loki.unavailable", reason="python-logging-loki is not installed (pip install '.[loki]')"
        )
    return loki


def _loki_handler(url: str, static: dict[str, str], metrics: Metrics | None) -> LokiQueueHandler | None:
    """The Loki handler, or None when the optional dependency is missing: logs then stay on stdout only."""
    try:
        from shared.loki import LokiQueueHandler
    except ImportError:
        return None
    return LokiQueueHandler(url, static, stats=_stats(metrics))


def _stats(metrics: Metrics | None) -> ShipStats:
    from shared.loki import ShipStats

    if metrics is None:
        return ShipStats()
    for reason in LOG_DROP_REASONS:
        metrics.log_lines_dropped.labels(reason)
    return ShipStats(
        on_pushed=metrics.log_lines_pushed.inc,
        on_dropped=lambda reason, n: metrics.log_lines_dropped.labels(reason).inc(n),
    )


def _add_static(static: dict[str, str]) -> Any:
    def processor(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        for key, value in static.items():
            event.setdefault(key, value)
        return event

    return processor
