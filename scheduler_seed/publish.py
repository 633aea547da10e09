"""`publish --job JOB [--body JSON]`: a raw body to the job's work queue, exactly as a person would publish it
from the RabbitMQ management UI (exchange `S.jobs`, routing key `S.jobs.<queue>`). The default body is
`{"job_id": JOB}`: one manual run with the job's default params."""

from __future__ import annotations

import argparse

import aio_pika
from aio_pika.abc import AbstractChannel

from scheduler_seed.inputs import argtype, json_text
from scheduler_seed.jobref import existing_job
from scheduler_seed.session import Session
from shared import topology
from shared.publisher import PUBLISH_TIMEOUT_SEC
from shared.seeding import declare_for


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


async def publish_raw(channel: AbstractChannel, scope: str, queue: str, body: bytes) -> str:
    """Through the scope's exchange with the work queue as routing key; returns the routing key. Publisher
    confirms and `mandatory` make an unroutable message an error instead of a silent loss."""
    exchange = await channel.get_exchange(topology.exchange_name(scope), ensure=False)
    routing_key = topology.work_queue_name(scope, queue)
    message = aio_pika.Message(body, content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
    await exchange.publish(message, routing_key=routing_key, mandatory=True, timeout=PUBLISH_TIMEOUT_SEC)
    return routing_key


async def execute(args: argparse.Namespace, session: Session) -> int:
    conn = await session.db()
    job = await existing_job(conn, session.scope, args.job)
    data = (f'{{"job_id": "{job.job_id}"}}' if args.body is None else args.body).encode()
    channel = await session.channel()
    await declare_for(channel, job)
    routing_key = await publish_raw(channel, session.scope, job.queue, data)
    exchange = topology.exchange_name(session.scope)
    print(f"published {len(data)} bytes to exchange {exchange} with routing key {routing_key}")
    return 0
