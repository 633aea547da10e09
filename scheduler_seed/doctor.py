"""`doctor`: one line per finding about what the scope's safety rests on; exit 0 when all is well, 1 otherwise."""

from __future__ import annotations

import argparse

from shared import diagnosis
from shared.control import Control


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "doctor",
        parents=[common],
        help="check the broker, queues, clocks and schema the scope relies on",
        description="Check the broker version and feature flags, every job's work, delay and retry queue and "
        "their arguments, quorum delivery limits, the number of queues, a TTL canary per queue type in use, "
        "clock skew against the broker and PostgreSQL, and the schema migrations. One line per finding; exit "
        "code 0 when every check passed, 1 otherwise. Set RABBITMQ_MANAGEMENT_URL when the management API is "
        "not on the AMQP host's port 15672.",
    )
    p.set_defaults(execute=execute)


async def execute(args: argparse.Namespace, control: Control) -> int:
    findings = await control.doctor()
    for finding in findings:
        print(finding.line)
    return 0 if diagnosis.clean(findings) else 1
