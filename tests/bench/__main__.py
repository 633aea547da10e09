"""`python -m tests.bench [--quick] [--out DIR] [--only SECTION,...]`: run the benchmark, write the results.

Sections: lateness (framework, spread phases, every J x W), herd (RabbitMQ alone and the framework with 2 workers,
every job at one instant), peers (APScheduler, Celery beat), scale (registered jobs), recovery. Output in DIR
(default bench-results/<UTC timestamp>/): results.json, samples.json, results.md, lateness.png, and with --profile a
py-spy profile of one worker under the J=500 load (`--profile-jobs` another J). `--quick` is a small, short smoke
run whose scenarios run side by side: its numbers only show that everything works. The workers run on the event loop
SCHEDULER_EVENT_LOOP names (`SCHEDULER_EVENT_LOOP=asyncio python -m tests.bench ...`), recorded in the results'
meta.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from shared import event_loop
from shared.settings import Settings
from tests.bench import framework, history, plot, profile_summary, recovery, report, scale, scopes
from tests.bench.measure import Outcome
from tests.bench.peers import run as peers
from tests.bench.procs import ROOT

SECTIONS = ("lateness", "herd", "peers", "scale", "recovery", "history")


@dataclass
class Plan:
    jobs: list[int] = field(default_factory=lambda: [100, 500, 1000])
    workers: list[int] = field(default_factory=lambda: [1, 2])
    peer_jobs: list[int] = field(default_factory=lambda: [100, 1000])
    scale: list[int] = field(default_factory=lambda: [1000, 5000, 10000])
    history: list[int] = field(default_factory=lambda: [1_000_000, 5_000_000, 10_000_000])
    history_days: int = 10
    duration: float = 60.0
    warmup: float = 5.0
    drain: float = 3.0
    herd_workers: int = 2
    lost_after: float = 10.0
    watchdog_every: float = 1.0
    quick: bool = False


QUICK = Plan(jobs=[20], workers=[1], peer_jobs=[20], scale=[60], history=[2000], history_days=2, duration=4.0,
             warmup=2.0, drain=1.5,
             lost_after=2.0, watchdog_every=0.5, quick=True)  # fmt: skip


def ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small and short, scenarios side by side (smoke)")
    parser.add_argument("--out", type=Path, help="output directory (default bench-results/<timestamp>)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    parser.add_argument("--jobs", type=ints, help="job counts of the lateness section (default 100,500,1000)")
    parser.add_argument("--workers", type=ints, help="worker counts of the lateness section (default 1,2)")
    parser.add_argument("--peer-jobs", type=ints, help="job counts of the herd and peers sections (default 100,1000)")
    parser.add_argument("--scale", type=ints, help="registered job counts of the scale section")
    parser.add_argument("--history", type=ints, help="rows of the history section's steps (default 1M,5M,10M)")
    parser.add_argument("--duration", type=float, help="measured window per run, seconds (default 60)")
    parser.add_argument("--profile", action="store_true", help="py-spy profile of a worker under the J=500 load")
    parser.add_argument("--profile-jobs", type=int, default=500, help="the J of the profiled run (default 500)")
    parser.add_argument("--code-root", type=Path, default=ROOT, help="code the worker processes run")
    parser.add_argument("--label", default="", help="a word for the report (before, after, ...)")
    return parser.parse_args(argv)


def plan_from(args: argparse.Namespace) -> Plan:
    plan = Plan(**vars(QUICK)) if args.quick else Plan()
    for name in ("jobs", "workers", "peer_jobs", "scale", "history", "duration"):
        if getattr(args, name) is not None:
            setattr(plan, name, getattr(args, name))
    return plan


class Bench:
    """Runs the scenarios of a plan and keeps their results and lateness samples."""

    def __init__(
        self, settings: Settings, plan: Plan, out: Path, code_root: Path, profile: bool, profile_jobs: int = 500
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.out = out
        self.work = out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.code_root = code_root
        self.profile = profile
        self.profile_jobs = profile_jobs
        self.results: dict[str, list[dict[str, Any]]] = {name: [] for name in SECTIONS}
        self.samples: dict[str, list[float]] = {}
        self.errors: list[str] = []

    def keep(self, section: str, outcome: Outcome) -> None:
        row = outcome.summary()
        key = f"{section}:{row['system']}:{row['mode']}:j{row['jobs']}:w{row['workers']}"
        row["samples_key"] = key
        row["label"] = report._system(row)
        self.samples[key] = outcome.samples
        self.results[section].append(row)
        late = row["lateness_ms"]
        done = f"{row['done']}/{row['expected']} runs"
        print(f"{key}: p50 {late['p50']} ms, p99 {late['p99']} ms, {done}, CPU {row['cpu_sec_per_1000_runs']} s/1000")

    def tasks(self, sections: set[str]) -> list[Callable[[], None]]:
        p, todo = self.plan, []
        if "lateness" in sections:
            for jobs in p.jobs:
                for workers in p.workers:
                    todo.append(self._framework("lateness", jobs, workers, herd=False))
        if "herd" in sections:
            for jobs in p.peer_jobs:
                todo.append(self._broker(jobs, herd=True))
                todo.append(self._framework("herd", jobs, p.herd_workers, herd=True))
        if "peers" in sections:
            for jobs in p.peer_jobs:
                todo.append(self._peer("apscheduler", jobs))
                todo.append(self._peer("celery", jobs))
        if "scale" in sections:
            todo += [self._scale(total) for total in p.scale]
        todo += [task for name, task in (("recovery", self._recovery), ("history", self._history)) if name in sections]
        return todo

    def _framework(self, section: str, jobs: int, workers: int, herd: bool) -> Callable[[], None]:
        def task() -> None:
            p = self.plan
            load = framework.Load(jobs, workers, herd, p.duration, p.warmup, p.drain)
            profile = None
            if self.profile and section == "lateness" and jobs == self.profile_jobs and workers == 1:
                profile = self.out / f"profile-j{jobs}-w1.raw"
            self.keep(section, framework.run(self.settings, load, self.work, self.code_root, profile))
            if profile is not None and profile.exists():
                profile.with_suffix(".txt").write_text(profile_summary.summarize(profile) + "\n")

        task.__qualname__ = f"{section} framework j{jobs} w{workers}"
        return task

    def _broker(self, jobs: int, herd: bool) -> Callable[[], None]:
        def task() -> None:
            p = self.plan
            self.keep("herd", peers.broker(self.settings, jobs, herd, p.duration, p.warmup, self.work, self.code_root))

        task.__qualname__ = f"herd broker j{jobs}"
        return task

    def _peer(self, system: str, jobs: int) -> Callable[[], None]:
        def task() -> None:
            p = self.plan
            run = peers.apscheduler if system == "apscheduler" else peers.celery
            self.keep("peers", run(self.settings, jobs, p.duration, p.warmup, self.work, self.code_root))

        task.__qualname__ = f"peers {system} j{jobs}"
        return task

    def _scale(self, total: int) -> Callable[[], None]:
        def task() -> None:
            p = self.plan
            duration = min(p.duration, 30.0)
            self.keep("scale", scale.run(self.settings, total, duration, p.warmup, self.work, self.code_root))

        task.__qualname__ = f"scale {total} jobs"
        return task

    def _history(self) -> None:
        p = self.plan
        self.results["history"].append(history.run(self.settings, p.history, p.history_days))

    def _recovery(self) -> None:
        p = self.plan
        self.results["recovery"].append(recovery.kill_and_restart(self.settings, self.work, self.code_root, p.warmup))
        self.results["recovery"].append(
            recovery.lost_chain(self.settings, self.work, self.code_root, p.warmup, p.lost_after, p.watchdog_every)
        )

    def run(self, sections: set[str], checkpoint: Callable[[], None]) -> None:
        """Every task of `sections`. A full run goes on past a scenario that fails (its error is kept and
        reported) and calls `checkpoint` after each one, so a late failure never loses what was measured."""
        todo = self.tasks(sections)
        if self.plan.quick:  # side by side: a smoke run, not a measurement
            with ThreadPoolExecutor(max_workers=len(todo)) as pool:
                for future in [pool.submit(task) for task in todo]:
                    future.result()
            return
        for task in todo:
            try:
                task()
            except Exception as exc:
                name = getattr(task, "__qualname__", repr(task))
                print(f"error: {name}: {exc!r}", file=sys.stderr)
                self.errors.append(f"{name}: {exc!r}")
            checkpoint()


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout
    except OSError:
        return "?"
    return out.strip().splitlines()[-1] if out.strip() else "?"


def meta(settings: Settings, plan: Plan, args: argparse.Namespace, started: datetime) -> dict[str, Any]:
    rows = asyncio.run(
        scopes.fetch(
            settings,
            "SELECT current_setting('server_version') AS server_version, current_setting('autovacuum') AS autovacuum",
        )
    )
    return {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "event_loop": event_loop.choose(settings.scheduler_event_loop).name,  # the workers' (same environment)
        "rabbitmq": _version(["rabbitmqctl", "-q", "version"]),
        "postgres": rows[0]["server_version"].split()[0],
        "postgres_autovacuum": rows[0]["autovacuum"],  # off: the workers' watchdog vacuums (SCHEDULER_VACUUM)
        "commit": _version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "code_root": str(args.code_root),
        "label": args.label,
        "quick": plan.quick,
        "duration_sec": plan.duration,
        "warmup_sec": plan.warmup,
        "plan": vars(plan),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    plan = plan_from(args)
    started = datetime.now(UTC)
    out = args.out or ROOT / "bench-results" / started.strftime("%Y%m%dT%H%M%SZ")
    settings = Settings()
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = sections - set(SECTIONS)
    if unknown:
        print(f"error: unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    bench = Bench(settings, plan, out, args.code_root, args.profile, args.profile_jobs)

    def write() -> None:
        results: dict[str, Any] = {"meta": meta(settings, plan, args, started), **bench.results}
        results["errors"] = bench.errors
        report.write(out, results, bench.samples)
        rows = [*bench.results["herd"], *bench.results["peers"]]
        rows += [r for r in bench.results["lateness"] if r["jobs"] in plan.peer_jobs and r["workers"] == 1]
        if rows:
            plot.plot(out / "lateness.png", rows, bench.samples, f"Start lateness, {results['meta']['started']}")

    bench.run(sections, write)
    write()
    print(f"results in {out}")
    if bench.errors:
        print(f"{len(bench.errors)} scenario(s) failed: {'; '.join(bench.errors)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
