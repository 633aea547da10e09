"""Capturing the framework's log lines in a test, whatever an earlier test configured.

structlog's own `capture_logs` swaps the processors only: under a level filter an earlier test configured (the
CLI's `quiet_logs` keeps WARNING and up), info lines would vanish before reaching it, and a module logger cached
under `cache_logger_on_first_use` keeps its old processors. So whether a line is captured would depend on which
tests ran before. Here the whole configuration is replaced for the block, and each `shared` module's `log` is
swapped for a fresh logger.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import structlog
from structlog.testing import LogCapture


@contextlib.contextmanager
def capture_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    capture = LogCapture()
    saved_config = structlog.get_config()
    structlog.configure(
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    swapped: list[tuple[Any, Any]] = []
    for name, module in list(sys.modules.items()):
        logger = getattr(module, "log", None)
        if name.startswith("shared") and logger is not None and hasattr(logger, "bind"):
            swapped.append((module, logger))
            module.log = structlog.get_logger(name)
    try:
        yield capture.entries
    finally:
        for module, original in swapped:
            module.log = original
        structlog.configure(**saved_config)
