"""`python -m tests.bench.broker`: the broker's own hop, with no framework around it.

J self-rescheduling chains through the same topology the framework uses (a delay queue per job, dead-lettered
into one work queue), each message carrying its slot. The consumer notes when its callback starts, posts the
next slot (persistent, publisher confirms; counted from now when late, as the framework does) and acks:
lateness here is what RabbitMQ's TTL -> dead-letter -> consumer hop costs by itself. Slots use the framework's
phases (a stable hash of the job id), or phase 0 for a herd.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from pathlib import Path

import aio_pika

from shared import schedule, topology
from shared.settings import Settings

QUEUE = "bench"


def first_slot(job_id: str, align: bool, after: float) -> float:
    phase = schedule.interval_phase_ms(job_id, 1, align) / 1000
    return float(int(after - phase) + 1) + phase


def next_slot(slot: float, now: float) -> float:
    """The first slot of the job's one-second grid strictly after max(slot, now)."""
    after = max(slot, now)
    return slot + float(int(after - slot) + 1)


async def serve(args: argparse.Namespace) -> list[tuple[str, float, float, int]]:
    settings = Settings()
    connection = await aio_pika.connect_robust(settings.amqp_url.get_secret_value())
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=args.prefetch)
    jobs = [f"j{i:04d}" for i in range(args.jobs)]
    for job_id in jobs:
        await topology.declare_job(channel, args.scope, job_id, QUEUE)
    exchange = await channel.get_exchange(topology.exchange_name(args.scope))
    runs: list[tuple[str, float, float, int]] = []

    async def post(job_id: str, slot: float) -> None:
        body = json.dumps({"job_id": job_id, "slot": slot}).encode()
        ttl_ms = max(0, round((slot - time.time()) * 1000))
        message = aio_pika.Message(body, expiration=ttl_ms / 1000, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await exchange.publish(message, routing_key=topology.delay_queue_name(args.scope, job_id))

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        started = time.time()
        data = json.loads(message.body)
        runs.append((data["job_id"], data["slot"], started, 1))
        # like the framework's chain: the next slot after the later of this slot and now (a late chain skips
        # the slots it missed rather than bursting through them)
        await post(data["job_id"], next_slot(data["slot"], time.time()))
        await message.ack()

    queue = await channel.get_queue(topology.work_queue_name(args.scope, QUEUE))
    await queue.consume(on_message)
    start = time.time() + 0.5
    for job_id in jobs:
        await post(job_id, first_slot(job_id, args.align, start))
    await asyncio.to_thread(Path(args.ready).write_text, str(start))
    await until_stopped(args.stop_at)
    await channel.close()
    await connection.close()
    return runs


async def until_stopped(stop_at: float) -> None:
    """Until `stop_at` (unix time) or SIGTERM, whichever comes first."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, stop_at - time.time()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scope", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--align", action="store_true", help="every job on phase 0: a herd")
    parser.add_argument("--stop-at", type=float, required=True, help="unix time to stop consuming")
    parser.add_argument("--prefetch", type=int, default=32)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--runs", required=True)
    args = parser.parse_args()
    runs = asyncio.run(serve(args))
    Path(args.runs).write_text("".join(json.dumps(run) + "\n" for run in runs))


if __name__ == "__main__":
    main()
