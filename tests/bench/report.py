"""Writing a bench run: results.json (everything), samples.json (lateness samples, ms), results.md (tables)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _late(row: dict[str, Any]) -> list[str]:
    late = row["lateness_ms"]
    return [_num(late["p50"]), _num(late["p99"]), _num(late["max"])]


def _system(row: dict[str, Any]) -> str:
    names = {"framework": "this framework", "broker": "RabbitMQ alone", "apscheduler": "APScheduler 3.11",
             "celery": "Celery beat + worker"}  # fmt: skip
    name = names.get(row["system"], row["system"])
    if row["system"] == "framework":
        name += f", {row['workers']} worker{'s' if row['workers'] > 1 else ''}"
    return f"{name} ({row['mode']})"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def lateness_table(rows: list[dict[str, Any]]) -> str:
    header = ["jobs", "workers", "runs/s", "done / expected", "dup", "p50 ms", "p99 ms", "max ms",
              "worker CPU s / 1000 runs", "PG round trips / run", "PG statements / run",
              "AMQP publish + deliver + ack / run", "peak RSS / worker MiB", "RabbitMQ CPU s / 1000",
              "PG backends CPU s / 1000"]  # fmt: skip
    body = []
    for r in rows:
        amqp = "-"
        if "amqp_publishes_per_run" in r:
            keys = ("amqp_publishes_per_run", "amqp_deliveries_per_run", "amqp_acks_per_run")
            amqp = " + ".join(_num(r.get(k), 2) for k in keys)
        body.append([
            str(r["jobs"]), str(r["workers"]), _num(r["runs_per_sec"]), f"{r['done']} / {r['expected']}",
            str(r["duplicates"]), *_late(r), _num(r["cpu_sec_per_1000_runs"], 2),
            _num(r.get("pg_round_trips_per_run"), 1), _num(r.get("pg_statements_per_run"), 1), amqp,
            " / ".join(_num(p) for p in r.get("peak_rss_mb", [])),
            _num(r.get("rabbitmq_cpu_sec_per_1000_runs"), 2), _num(r.get("postgres_cpu_sec_per_1000_runs"), 2),
        ])  # fmt: skip
    return table(header, body)


def peers_table(rows: list[dict[str, Any]]) -> str:
    header = ["jobs", "system", "done / expected", "dup", "p50 ms", "p99 ms", "max ms", "CPU s / 1000 runs",
              "RabbitMQ CPU s / 1000", "peak RSS MiB"]  # fmt: skip
    body = [
        [str(r["jobs"]), _system(r), f"{r['done']} / {r['expected']}", str(r["duplicates"]), *_late(r),
         _num(r["cpu_sec_per_1000_runs"], 2), _num(r.get("rabbitmq_cpu_sec_per_1000_runs"), 2),
         " / ".join(_num(p) for p in r.get("peak_rss_mb", []))]
        for r in sorted(rows, key=lambda r: (r["jobs"], _system(r)))
    ]  # fmt: skip
    return table(header, body)


def scale_table(rows: list[dict[str, Any]]) -> str:
    header = ["registered jobs", "seed s (CLI)", "worker ready s", "RabbitMQ RSS +MiB", "queues", "PG row bytes",
              "worker RSS MiB", "worker CPU s/s", "fast jobs done / expected", "fast jobs p50 ms",
              "p99 ms"]  # fmt: skip
    body = [
        [str(r["registered_jobs"]), _num(r["seed_sec"]), _num(r["worker_ready_sec"]), _num(r["rabbitmq_rss_delta_mb"]),
         str(r["rabbitmq_queues"]), str(r["postgres_row_bytes"]), _num(r["worker_rss_mb"]),
         _num(r["cpu_sec"] / r["window_sec"], 2), f"{r['done']} / {r['expected']}", *_late(r)[:2]]
        for r in rows
    ]  # fmt: skip
    return table(header, body)


def recovery_table(rows: list[dict[str, Any]]) -> str:
    body = []
    for r in rows:
        measures = {k: v for k, v in r.items() if k != "scenario"}
        body.append([r["scenario"], ", ".join(f"{k} = {v}" for k, v in measures.items())])
    return table(["scenario", "measured"], body)


def history_table(rows: list[dict[str, Any]]) -> str:
    body = []
    for r in rows:
        inserts = ", ".join(
            f"{i['rows']:,} rows: {i['insert_us']} µs ({i['insert_cpu_us']} µs CPU)" for i in r["inserts"]
        )
        body.append([f"{r['rows']:,} over {r['days']} days", inserts, _num(r["prune_day_sec"], 3),
                     f"{r['dead_tuples_before']} -> {r['dead_tuples_after']}"])  # fmt: skip
    return table(
        [
            "history",
            "insert per run (claim): wall (PostgreSQL CPU)",
            "one day pruned, s",
            "dead tuples before -> after",
        ],
        body,
    )


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    parts = [
        f"# Benchmark {meta['started']}",
        "",
        f"Machine: {meta['cores']} cores, {meta['memory_gib']} GiB; RabbitMQ {meta['rabbitmq']}, PostgreSQL "
        f"{meta['postgres']}, Python {meta['python']}, workers on {meta.get('event_loop', 'asyncio')}. "
        f"Window {meta['duration_sec']} s per run after {meta['warmup_sec']} s of warm-up"
        f"{'; quick mode' if meta['quick'] else ''}. Code under test: "
        f"{meta['code_root']}{(' (' + meta['label'] + ')') if meta.get('label') else ''}.",
        "",
    ]
    if results.get("lateness"):
        title = "Lateness and throughput: one-second interval jobs, phases from the job id (spread)"
        parts += [f"## {title}", "", lateness_table(results["lateness"]), ""]
    side = [*results.get("herd", []), *results.get("peers", [])]
    if side:
        counts = {r["jobs"] for r in side}
        side += [r for r in results.get("lateness", []) if r["jobs"] in counts]
        title = "Side by side: herds (every job at one instant), the broker's own hop, APScheduler, Celery beat"
        parts += [f"## {title}", "", peers_table(side), ""]
    if results.get("scale"):
        parts += ["## Scale of the job table", "", scale_table(results["scale"]), ""]
    if results.get("recovery"):
        parts += ["## Recovery", "", recovery_table(results["recovery"]), ""]
    if results.get("history"):
        parts += ["## History (scheduler.job_runs by day)", "", history_table(results["history"]), ""]
    if results.get("errors"):
        parts += ["## Scenarios that failed", "", *(f"- {error}" for error in results["errors"]), ""]
    return "\n".join(parts)


def write(out: Path, results: dict[str, Any], samples: dict[str, list[float]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "samples.json").write_text(json.dumps({k: [round(v, 3) for v in vs] for k, vs in samples.items()}) + "\n")
    (out / "results.md").write_text(markdown(results))
