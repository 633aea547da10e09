"""`python -m scheduler_seed <verb>`: argument parsing, dispatch, and the one place errors become exit codes.

Every verb module has `register(subparsers, common)` and an `execute(args, control) -> int` it sets as the
parser's default; the verbs parse and print, `shared.control` acts. Whatever goes wrong, the operator gets one
readable line on stderr, never a traceback (set LOG_LEVEL=DEBUG to see one for an unexpected error).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NoReturn

import aio_pika
import aiormq
import asyncpg
from pydantic import ValidationError

from scheduler_seed import (
    audit,
    backfill,
    changes,
    dead,
    doctor,
    emit,
    inputs,
    migrate,
    publish,
    render,
    run_now,
    runs,
    seed,
    status,
)
from scheduler_seed.errors import EXIT_FAILED, EXIT_USAGE, exit_code
from scheduler_seed.server import serve
from shared import event_loop
from shared.control import Control, RunningNow, kind_of
from shared.errors import SchedulerError
from shared.messages import describe_validation_error
from shared.settings import Settings, unknown_variables_line

PROG = "python -m scheduler_seed"
VERBS = (seed, status, runs, run_now, changes, backfill, dead, publish, emit, audit, migrate, doctor, serve)


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and exit code 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(default_scope: str | None) -> Parser:
    common = Parser(add_help=False)
    common.add_argument(
        "--scope",
        type=inputs.argtype(inputs.scope),
        default=default_scope,
        help=f"mock, real or any slug (default: SCHEDULER_SCOPE, now {default_scope!r})",
    )
    parser = Parser(prog=PROG, description="Seed and control the self-rescheduling jobs of one scope.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=Parser)
    for verb in VERBS:
        verb.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """Run one command on the loop SCHEDULER_EVENT_LOOP names (`serve` is long-lived); returns the exit code
    (0 done, 1 failed, 2 usage or config error, 3 running now)."""
    try:
        settings = settings or Settings()
        loop = event_loop.choose(settings.scheduler_event_loop)
    except ValidationError as exc:
        return fail(EXIT_USAGE, configuration_line(exc))
    except event_loop.EventLoopUnavailable as exc:
        return fail(EXIT_USAGE, str(exc))
    try:
        return event_loop.run(amain(argv, settings), loop)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


async def amain(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """`main` for callers that already run an event loop."""
    try:
        settings = settings or Settings()
    except ValidationError as exc:
        return fail(EXIT_USAGE, configuration_line(exc))
    unknown = unknown_variables_line(os.environ)
    if unknown is not None:  # a typo in a variable name is otherwise silently ignored
        print(f"warning: {unknown}", file=sys.stderr)
    try:
        args = build_parser(settings.scheduler_scope).parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed as one line
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        async with Control(settings, args.scope, actor=actor()) as control:
            code: int = await args.execute(args, control)
            return code
    except Exception as exc:
        return fail(*explain(exc))


def configuration_line(exc: ValidationError) -> str:
    return "configuration: " + describe_validation_error(exc).replace("Value error, ", "")


def actor() -> str:
    """Who the audit names for a CLI change: SCHEDULER_ACTOR if set (a deploy pipeline, a wrapper), else the
    operating-system user."""
    named = os.environ.get("SCHEDULER_ACTOR", "").strip()
    if named:
        return named[:200]
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (a container with an arbitrary uid)
        return f"cli:uid{os.getuid()}"


def explain(exc: Exception) -> tuple[int, str]:
    """The exit code and the line an operator reads for what went wrong."""
    code = exit_code(kind_of(exc))
    if isinstance(exc, RunningNow):
        took = render.span((datetime.now(UTC) - exc.since).total_seconds())
        return code, (
            f"job {exc.job_id!r} is running now (run {exc.run_id}, {exc.status} on {exc.worker} for {took}); "
            "nothing queued: add --queue to queue a run anyway"
        )
    if isinstance(exc, ValidationError):  # a value a model refuses, e.g. run-now --params over the size limit
        return code, describe_validation_error(exc).replace("Value error, ", "")
    if isinstance(exc, SchedulerError):  # the message says what to do
        return code, str(exc)
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return EXIT_FAILED, f"PostgreSQL error: {type(exc).__name__}: {exc}"
    if isinstance(exc, aio_pika.exceptions.AMQPException | aiormq.exceptions.AMQPError):
        return EXIT_FAILED, f"RabbitMQ error: {type(exc).__name__}: {exc}"
    if isinstance(exc, OSError | TimeoutError):
        return EXIT_FAILED, f"connection lost: {type(exc).__name__}: {exc}"
    if os.environ.get("LOG_LEVEL", "").upper() == "DEBUG":
        traceback.print_exception(exc)
    return EXIT_FAILED, f"unexpected error: {type(exc).__name__}: {exc} (LOG_LEVEL=DEBUG shows where)"


def fail(code: int, message: str) -> int:
    """Print the error (one line per problem; a jobs file may have several) and return the exit code."""
    for line in message.strip().splitlines() or ["failed"]:
        print(f"error: {line}", file=sys.stderr)
    return code
