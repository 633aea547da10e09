"""`emit TOPIC [--body JSON] [--id ID]`: publish an event to the scope's `S.events` exchange, as a service's
`ctx.emit` would, and say which jobs it triggers."""

from __future__ import annotations

import argparse
import json

from scheduler_seed.inputs import argtype, json_text
from shared.control import Control


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "emit",
        parents=[common],
        help="publish an event on a topic (jobs subscribed with triggers_on run)",
        description="The body is a JSON object (default {}), bound as `event` in the jobs' filters. The event's id "
        "is its AMQP message_id: --id makes a second emit of the same event run each job once only.",
    )
    p.add_argument("topic", metavar="TOPIC", help="dot-separated words, no wildcards (pipeline.collection.completed)")
    p.add_argument("--body", type=argtype(json_text), help="JSON object (default: {})")
    p.add_argument("--id", dest="event_id", help="the event id (default: a new one)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    p.set_defaults(execute=execute)


async def execute(args: argparse.Namespace, control: Control) -> int:
    payload = {} if args.body is None else json.loads(args.body)
    emitted = await control.emit(args.topic, payload, args.event_id)
    if args.json:
        print(json.dumps({"topic": emitted.topic, "event_id": emitted.event_id, "triggered": emitted.triggered}))
    else:
        jobs = ", ".join(emitted.triggered) or "none"
        print(f"emitted {emitted.topic} (id {emitted.event_id}): triggers {emitted.count} job(s): {jobs}")
    return 0
