"""`python -m tests.chaos [--duration SEC] [--jobs N] [--out DIR]`: the soak (see tests.chaos.soak)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tests.chaos import faults
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
    p.add_argument("--kinds", default=",".join(faults.FAULTS), help="fault kinds, comma separated")
    p.add_argument("--no-controls", action="store_true", help="no reseed / pause / resume / set")
    p.add_argument("--out", type=Path, help="output directory (default /tmp/chaos-<time>)")
    args = p.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = set(kinds) - set(faults.FAULTS)
    if unknown:
        p.error(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(faults.FAULTS)}")
    out = args.out or Path(f"/tmp/chaos-{time.strftime('%Y%m%d-%H%M%S')}")
    extra = {} if args.seed is None else {"seed": args.seed}
    return SoakConfig(
        out_dir=out, duration_sec=args.duration, jobs=args.jobs, workers=args.workers, grace_sec=args.grace,
        settle_sec=args.settle, quiet_sec=args.quiet, pg_outage_sec=args.pg_outage, kinds=kinds,
        controls=not args.no_controls, **extra,
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
