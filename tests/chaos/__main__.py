"""`python -m tests.chaos [--duration SEC] [--jobs N] [--out DIR]`: the soak (see tests.chaos.soak).
`--ha`: on a three-node RabbitMQ cluster (quorum queues) and a PostgreSQL primary/standby, with the faults of
tests.chaos.ha_faults and two workers whose clocks are 2 s ahead and 2 s behind."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tests.chaos import faults, ha_faults
from tests.chaos.soak import SoakConfig, run


def parse_args(argv: list[str] | None = None) -> SoakConfig:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description="fault-injection soak on private servers")
    p.add_argument("--duration", type=float, default=300.0, help="seconds of fault injection (default 300)")
    p.add_argument("--jobs", type=int, default=30, help="number of jobs (default 30)")
    p.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    p.add_argument("--seed", type=int, help="random seed (jobs and fault times); default random")
    p.add_argument("--grace", type=float, default=20.0, help="seconds after a fault within which losses are excused")
    p.add_argument("--settle", type=float, default=30.0, help="quiet seconds at the end, before the check")
    p.add_argument("--quiet", type=span, default=(8.0, 20.0), metavar="MIN,MAX", help="seconds between faults")
    p.add_argument("--pg-outage", type=span, default=(10.0, 30.0), metavar="MIN,MAX", help="database down seconds")
    p.add_argument("--kinds", help="fault kinds, comma separated (default: every kind of the soak chosen)")
    p.add_argument("--ha", action="store_true", help="RabbitMQ cluster + PostgreSQL standby, HA faults, skewed clocks")
    p.add_argument("--freeze", type=float, default=20.0, help="seconds a node stays SIGSTOPped (--ha)")
    p.add_argument("--skews", default="2,-2", help="clock skews in seconds of the last workers (--ha; '' for none)")
    p.add_argument("--no-controls", action="store_true", help="no reseed / pause / resume / set")
    p.add_argument("--once", action="store_true", help="every fault kind once, back to back, then settle")
    p.add_argument("--down-scale", type=float, default=1.0, help="multiply the times servers are kept down")
    p.add_argument("--watch-queues", action="store_true", help="sample the work queues every 3 s (queues.jsonl)")
    p.add_argument("--out", type=Path, help="output directory (default /tmp/chaos-<time>)")
    args = p.parse_args(argv)
    known = {**ha_faults.HA_FAULTS, "pg_outage": None} if args.ha else faults.FAULTS
    default = ha_faults.HA_FAULTS if args.ha else faults.DEFAULT_KINDS
    kinds = tuple(k for k in (args.kinds or ",".join(default)).split(",") if k)
    unknown = set(kinds) - set(known)
    if unknown:
        p.error(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(known)}")
    try:
        skews = tuple(float(s) for s in args.skews.split(",") if s.strip()) if args.ha else ()
    except ValueError:
        p.error(f"--skews takes seconds separated by commas, got {args.skews!r}")
    if len(skews) > args.workers:
        p.error(f"{len(skews)} skewed clocks need at least {len(skews)} workers")
    out = args.out or Path(f"/tmp/chaos-{time.strftime('%Y%m%d-%H%M%S')}")
    extra = {} if args.seed is None else {"seed": args.seed}
    return SoakConfig(
        out_dir=out, duration_sec=args.duration, jobs=args.jobs, workers=args.workers, grace_sec=args.grace,
        settle_sec=args.settle, quiet_sec=args.quiet, pg_outage_sec=args.pg_outage, kinds=kinds,
        controls=not args.no_controls, ha=args.ha, freeze_sec=args.freeze, clock_skews_sec=skews, once=args.once,
        down_scale=args.down_scale, watch_queues=args.watch_queues, **extra,
    )  # fmt: skip


def span(text: str) -> tuple[float, float]:
    """`MIN,MAX` seconds."""
    low, _, high = text.partition(",")
    try:
        bounds = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX seconds, got {text!r}") from None
    if not 0 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"expected 0 <= MIN <= MAX, got {text!r}")
    return bounds


if __name__ == "__main__":
    sys.exit(run(parse_args()))
