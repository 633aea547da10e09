"""Entry point: `python -m scheduler_seed <verb> --help`."""

from __future__ import annotations

import logging
import os
import sys

import structlog

from scheduler_seed.cli import main


def quiet_logs() -> None:
    """The CLI speaks in its own lines: library logs only from WARNING (DEBUG on request), on stderr."""
    debug = os.environ.get("LOG_LEVEL", "").upper() == "DEBUG"
    level = logging.DEBUG if debug else logging.WARNING
    logging.basicConfig(level=level if debug else logging.ERROR, stream=sys.stderr, format="%(levelname)s %(message)s")
    for noisy in ("aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.KeyValueRenderer(sort_keys=False)],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


if __name__ == "__main__":
    quiet_logs()
    sys.exit(main())
