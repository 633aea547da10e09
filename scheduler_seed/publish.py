"""`publish --job JOB [--body JSON]`: a raw body to the job's work queue, exactly as a person would publish it
from the RabbitMQ management UI (exchange `S.jobs`, routing key `S.jobs.<queue>`). The default body is
`{"job_id": JOB}`: one manual run with the job's default params."""

from __future__ import annotations

import argparse

from scheduler_seed.inputs import argtype, json_text
from shared.control import Control


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "publish",
        parents=[common],
        help="publish a raw message body to a job's work queue",
        description='The body is any JSON (default {"job_id": JOB}); the worker parks what it cannot use '
        "in S.jobs.dead, where `dead` shows it.",
    )
    p.add_argument("--job", required=True, metavar="JOB", help="whose work queue gets the message")
    p.add_argument("--body", type=argtype(json_text), help='JSON body (default: {"job_id": JOB})')
    p.set_defaults(execute=execute)


async def execute(args: argparse.Namespace, control: Control) -> int:
    body = None if args.body is None else args.body.encode()
    published = await control.publish(args.job, body)
    print(f"published {published.size} bytes to exchange {published.exchange} with routing key {published.routing_key}")
    return 0
