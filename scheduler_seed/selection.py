"""`--selector`: the label selector `pause`, `resume`, `run-now` and `status` take instead of one JOB, and how a
bulk action's per-job results print."""

from __future__ import annotations

import argparse

from scheduler_seed.errors import EXIT_FAILED, UsageError
from shared.control.bulk import BulkResult

SELECTOR_HELP = "act on every job whose labels match: team=billing, team!=web, team (exists), !team; comma = AND"


def add_target(parser: argparse.ArgumentParser) -> None:
    """JOB, or --selector instead of it."""
    parser.add_argument("job", metavar="JOB", nargs="?")
    parser.add_argument("--selector", "-l", metavar="SELECTOR", help=SELECTOR_HELP)


def selector_of(args: argparse.Namespace, verb: str) -> str | None:
    """The selector if given (then no JOB); UsageError for both or neither."""
    if args.job is not None and args.selector is not None:
        raise UsageError(f"{verb}: give JOB or --selector, not both", "selector")
    if args.job is None and args.selector is None:
        raise UsageError(f"{verb}: give JOB or --selector SELECTOR", "job")
    return str(args.selector) if args.selector is not None else None


def report(result: BulkResult) -> int:
    """One line per job, then a summary; exit code 1 if any job failed."""
    if not result.items:
        print(f"{result.action}: no job matches selector {result.selector!r}; nothing done")
        return 0
    for item in result.items:
        mark = "ok    " if item.ok else f"FAILED ({item.error_kind})"
        print(f"{mark} {item.job_id}: {item.detail}")
    failed = len(result.failed)
    print(f"{result.action} on {len(result.items)} jobs matching {result.selector!r}: {failed} failed")
    return EXIT_FAILED if failed else 0
