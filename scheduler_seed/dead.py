"""`dead`: the parked messages of `S.jobs.dead` (listed without consuming them), `--replay ID` to send one
back to its work queue after a fix, `--purge` to empty parking."""

from __future__ import annotations

import argparse

from scheduler_seed import render
from scheduler_seed.inputs import argtype, positive_int
from shared.control import Control
from shared.control.results import ParkedMessage


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "dead",
        parents=[common],
        help="list, replay or purge parked messages",
        description="Without options: list parked messages (they stay parked). --replay ID republishes one to "
        "its original work queue and removes it from parking; --purge deletes them all.",
    )
    action = p.add_mutually_exclusive_group()
    action.add_argument("--replay", metavar="ID", help="the message id shown by `dead`")
    action.add_argument("--purge", action="store_true", help="delete every parked message")
    p.add_argument("--limit", type=argtype(positive_int), default=50, help="list at most this many (default 50)")
    p.set_defaults(execute=execute)


def preview(body: bytes, limit: int = 60) -> str:
    try:
        return render.shorten(body.decode("utf-8"), limit) if body else "(empty)"
    except UnicodeDecodeError:
        return render.shorten(repr(body), limit)


def as_table(parked: list[ParkedMessage]) -> str:
    rows = [[p.message_id, p.reason, p.original_queue, render.shorten(p.detail, 60), preview(p.body)] for p in parked]
    return render.table(["ID", "REASON", "QUEUE", "DETAIL", "BODY"], rows)


async def execute(args: argparse.Namespace, control: Control) -> int:
    if args.purge:
        purged = await control.purge_dead()
        print(f"purged {purged.count} parked messages from {purged.queue}")
        return 0
    if args.replay:
        replayed = await control.replay(args.replay)
        print(f"replayed {replayed.message_id} ({replayed.reason}) to {replayed.routing_key}")
        return 0
    listed = await control.dead_letters(args.limit)
    if not listed.messages:
        print(f"no parked messages in {listed.queue}")
        return 0
    print(as_table(listed.messages))
    print(
        f"{listed.total} parked in {listed.queue} (showing {len(listed.messages)}); `dead --replay ID` sends one back"
    )
    return 0
