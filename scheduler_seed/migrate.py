"""`migrate-queues --to quorum|classic [--queue Q]`: move the scope's work queues to another queue type.

Each work queue and the delay and retry queues feeding it are drained, deleted and declared again with the new
type, and each chain goes on from its record (`shared.control.migrate`); workers consume again on their own. The
waiting messages go through a holding queue: a move interrupted at any point is finished by running it again.
"""

from __future__ import annotations

import argparse

from scheduler_seed.inputs import argtype, queue_name
from shared.control import Control


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "migrate-queues",
        parents=[common],
        help="move the scope's queues to another queue type (classic or quorum)",
        description="Move every work queue of the scope (or only --queue) and the delay and retry queues feeding "
        "it to the queue type --to, without losing a chain or running a slot twice. Workers may keep running. "
        "Interrupted (killed, disconnected), it is finished by running it again.",
    )
    p.add_argument("--to", required=True, choices=("classic", "quorum"), help="the queue type to move to")
    p.add_argument("--queue", type=argtype(queue_name), help="only this work queue (short name)")
    p.set_defaults(execute=execute)


async def execute(args: argparse.Namespace, control: Control) -> int:
    moved = await control.migrate_queues(args.to, args.queue)
    if not moved:
        print(f"nothing to move: the queues are {args.to} already")
        return 0
    for each in moved:
        slots = ", ".join(
            f"{job} next {slot.isoformat() if slot else 'none'}" for job, slot in sorted(each.next_slots.items())
        )
        finished = " (an interrupted move, finished now)" if each.resumed else ""
        print(
            f"work queue {each.queue!r}: {each.before} -> {each.after}{finished}; {len(each.jobs)} job(s), "
            f"{each.moved_messages} ready message(s) moved; {slots}"
        )
    return 0
