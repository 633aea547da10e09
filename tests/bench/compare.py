"""`python -m tests.bench.compare --before REV [--repeat 3] [bench options]`: before and after, several runs each.

The benchmark (`python -m tests.bench`) measures one tree once. A claim about speed needs the old and the new tree
measured on the same machine in the same hour, several times, since a two-core machine's noise moves every
wall-clock figure. This runs the chosen sections for the `before` tree (a git revision, exported to a directory of
its own, whose own benchmark code runs it, on a database of its own so its migrations never meet the current
ones) and for this tree, alternating
`before, after, before, after, ...` so that a change in the machine's load hits both alike, each run from a
vacuumed database (no run inherits the garbage of the runs before it), then writes:

- `compare.md`: per scenario, the median and the range (min-max) of each figure over the repeats, before -> after;
- `compare.json`: the same, and every run's summary row;
- `knee.png`: p50 and p99 lateness against the number of jobs (median, range as error bars), before and after.

Each run's own results stay in `OUT/<label>-<n>/` as the benchmark writes them. Both trees' workers run on the
event loop SCHEDULER_EVENT_LOOP names (default: uvloop when installed), and a tree older than that setting on
asyncio's: `SCHEDULER_EVENT_LOOP=asyncio make bench-compare ...` compares the code, not the loops.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shared.settings import DEFAULT_DATABASE_URL
from tests.bench.procs import ROOT

FIGURES = (  # (key in a summary row, header, digits)
    ("p50", "p50 ms", 1),
    ("p99", "p99 ms", 1),
    ("done_share", "done / expected", 3),
    ("duplicates", "dup", 0),
    ("cpu_sec_per_1000_runs", "worker CPU s / 1000", 2),
    ("total_cpu_ms_per_run", "total CPU ms / run", 2),
    ("pg_round_trips_per_run", "PG round trips / run", 2),
)
SECTIONS = ("lateness", "herd", "peers")


def figures(row: dict[str, Any]) -> dict[str, float | None]:
    """The compared figures of one summary row (None where the row lacks one)."""
    late = row.get("lateness_ms") or {}
    cpu = [row.get(k) for k in ("cpu_sec_per_1000_runs", "rabbitmq_cpu_sec_per_1000_runs",
                                "postgres_cpu_sec_per_1000_runs")]  # fmt: skip
    total = sum(c for c in cpu if c is not None) if all(c is not None for c in cpu) else None
    return {
        "p50": late.get("p50"),
        "p99": late.get("p99"),
        "done_share": row["done"] / row["expected"] if row.get("expected") else None,
        "duplicates": row.get("duplicates"),
        "cpu_sec_per_1000_runs": row.get("cpu_sec_per_1000_runs"),
        "total_cpu_ms_per_run": total,  # seconds per 1,000 runs is milliseconds per run
        "pg_round_trips_per_run": row.get("pg_round_trips_per_run"),
    }


def scenario(section: str, row: dict[str, Any]) -> str:
    return f"{section}: {row['system']} {row['mode']}, {row['jobs']} jobs, {row['workers']} worker(s)"


def spread(values: Iterable[float | None]) -> tuple[float, float, float] | None:
    """Median, min and max of the values present; None when there are none."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return statistics.median(present), min(present), max(present)


def aggregate(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{scenario: {label: {figure: (median, min, max) | None, "n": runs}}} from {label: [results.json, ...]}."""
    rows: dict[str, dict[str, list[dict[str, float | None]]]] = {}
    for label, results in runs.items():
        for result in results:
            for section in SECTIONS:
                for row in result.get(section, []):
                    rows.setdefault(scenario(section, row), {}).setdefault(label, []).append(figures(row))
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, by_label in rows.items():
        out[name] = {}
        for label, values in by_label.items():
            cell: dict[str, Any] = {key: spread(v[key] for v in values) for key, _, _ in FIGURES}
            cell["n"] = len(values)
            out[name][label] = cell
    return out


def _cell(value: tuple[float, float, float] | None, digits: int) -> str:
    if value is None:
        return "-"
    median, low, high = value
    if low == high:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def markdown(table: dict[str, dict[str, dict[str, Any]]], labels: list[str]) -> str:
    header = ["scenario", "runs", *(title for _, title, _ in FIGURES)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for name in sorted(table, key=_order):
        for label in labels:
            cell = table[name].get(label)
            if cell is None:
                continue
            values = [_cell(cell[key], digits) for key, _, digits in FIGURES]
            lines.append("| " + " | ".join([f"{name} [{label}]", str(cell["n"]), *values]) + " |")
    return "\n".join(lines) + "\n\nEach cell: median (min-max) over the runs.\n"


def _order(name: str) -> tuple[str, int, str]:
    section, _, rest = name.partition(": ")
    jobs = next((int(word) for word in rest.replace(",", " ").split() if word.isdigit()), 0)
    return section, jobs, rest


def knee(path: Path, table: dict[str, dict[str, dict[str, Any]]], labels: list[str]) -> None:
    """p50 and p99 lateness of the framework's spread lateness scenario against the number of jobs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for label in labels:
        for key, style in (("p50", "o-"), ("p99", "s--")):
            points = []
            for name, by_label in table.items():
                if not name.startswith("lateness: framework") or ", 1 worker(s)" not in name:
                    continue
                cell = by_label.get(label)
                if cell is None or cell[key] is None:
                    continue
                points.append((_order(name)[1], *cell[key]))
            if not points:
                continue
            points.sort()
            xs = [p[0] for p in points]
            mids = [max(p[1], 0.1) for p in points]
            errs = [[m - max(p[2], 0.1) for p, m in zip(points, mids, strict=True)],
                    [p[3] - m for p, m in zip(points, mids, strict=True)]]  # fmt: skip
            ax.errorbar(xs, mids, yerr=errs, fmt=style, capsize=3, label=f"{label} {key}")
    ax.set_yscale("log")
    ax.set_xlabel("jobs (1 s interval, spread over the second), 1 worker")
    ax.set_ylabel("start lateness, ms (log)")
    ax.set_title("Lateness against load: median of the runs, range as bars")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def export(rev: str, into: Path) -> Path:
    """The tree of git revision `rev` in a directory of its own (the benchmark's `--code-root`)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    with tempfile.TemporaryFile() as tmp:
        tmp.write(archive)
        tmp.seek(0)
        with tarfile.open(fileobj=tmp) as tar:
            tar.extractall(into, filter="data")
    return into


_ADMIN = (
    "import asyncio, asyncpg, sys\n"
    "async def main(url, name, drop):\n"
    "    conn = await asyncpg.connect(url)\n"
    "    try:\n"
    "        found = await conn.fetchval('SELECT 1 FROM pg_database WHERE datname = $1', name)\n"
    "        if drop == 'drop' and found:\n"
    "            await conn.execute(f'DROP DATABASE \"{name}\" WITH (FORCE)')\n"
    "        elif drop != 'drop' and not found:\n"
    "            await conn.execute(f'CREATE DATABASE \"{name}\"')\n"
    "            print('created')\n"
    "    finally:\n"
    "        await conn.close()\n"
    "asyncio.run(main(*sys.argv[1:4]))\n"
)


def _admin(url: str, name: str, action: str) -> str:
    """Create (if missing) or drop the database `name`, from a fresh interpreter (this one has no event loop)."""
    done = subprocess.run(
        [sys.executable, "-c", _ADMIN, url, name, action], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"error: cannot {action} database {name!r}: {done.stderr.strip()[-300:]}")
    return done.stdout.strip()


def own_database(url: str, name: str) -> tuple[str, bool]:
    """`url` with its database replaced by `name`, created if it does not exist (the before tree's migrations), and
    whether it was created here (then `drop_database` removes it when the comparison ends)."""
    base, _, rest = url.rpartition("/")
    query = rest.partition("?")[2]
    created = _admin(url, name, "create") == "created"
    return f"{base}/{name}" + (f"?{query}" if query else ""), created


def drop_database(url: str, name: str) -> None:
    _admin(url, name, "drop")


def vacuum(url: str) -> None:
    """VACUUM ANALYZE the scheduler tables of the database at `url` before a run: each tree starts from a database
    without the garbage of the runs before it (on a server whose autovacuum is off, garbage slows every statement,
    and a tree whose own benchmark does not vacuum would inherit it)."""
    import asyncio

    import asyncpg

    from shared.store.vacuum import vacuum_all

    async def _vacuum() -> None:
        conn = await asyncpg.connect(url)
        try:
            await vacuum_all(conn)
        finally:
            await conn.close()

    asyncio.run(_vacuum())


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--before", required=True, help="git revision of the tree to compare against")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tree (default 3)")
    parser.add_argument("--out", type=Path, help="output directory (default bench-results/compare-<time>)")
    parser.add_argument(
        "--before-database",
        default="bench_before",
        help="database of the before tree (made and dropped by the comparison unless it exists already)",
    )
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, bench_args = parse(sys.argv[1:] if argv is None else argv)
    if args.repeat < 1:
        print("error: --repeat must be at least 1", file=sys.stderr)
        return 2
    stamp = subprocess.run(["date", "-u", "+%Y%m%dT%H%M%SZ"], capture_output=True, text=True, check=True).stdout
    out = args.out or ROOT / "bench-results" / f"compare-{stamp.strip()}"
    out.mkdir(parents=True, exist_ok=True)
    before_root = export(args.before, out / "before-tree")
    url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    before_url, created = own_database(url, args.before_database)
    try:
        return _compare(args, bench_args, out, before_root, before_url)
    finally:
        if created:
            drop_database(url, args.before_database)


def _compare(args: argparse.Namespace, bench_args: list[str], out: Path, before_root: Path, before_url: str) -> int:
    before_env = {**os.environ, "DATABASE_URL": before_url, "PYTHONPATH": str(before_root)}
    trees = {"before": (before_root, before_env), "after": (ROOT, dict(os.environ))}  # each tree runs its own bench
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    failed = 0
    for n in range(1, args.repeat + 1):
        for label, (root, env) in trees.items():
            run_out = out / f"{label}-{n}"
            cmd = [sys.executable, "-m", "tests.bench", "--out", str(run_out), "--label", label,
                   "--code-root", str(root), *bench_args]  # fmt: skip
            print(f"== {label} {n}/{args.repeat}: {' '.join(cmd[1:])}", flush=True)
            vacuum(env.get("DATABASE_URL", DEFAULT_DATABASE_URL))
            done = subprocess.run(cmd, cwd=root, env=env, check=False)
            failed += done.returncode != 0
            result = run_out / "results.json"
            if result.exists():
                runs[label].append(json.loads(result.read_text()))
            write(out, runs)
    print(f"results in {out}")
    return 1 if failed else 0


def write(out: Path, runs: dict[str, list[dict[str, Any]]]) -> None:
    labels = [label for label in ("before", "after") if runs.get(label)]
    table = aggregate(runs)
    (out / "compare.json").write_text(json.dumps({"table": table, "runs": runs}, indent=1, default=str))
    (out / "compare.md").write_text(markdown(table, labels))
    if table:
        knee(out / "knee.png", table, labels)


if __name__ == "__main__":
    sys.exit(main())
