"""The soak's jobs: a deterministic mix of the cases the invariants are about, written as a jobs file.

Any prefix of the recipe has one job of each kind, so a short soak (12 jobs) still covers all of them:

* plain interval jobs (1-3 s) with short runs;
* cron jobs (`* * * * *`);
* `max_parallel = 1` jobs whose runs last longer than their interval (slots are skipped, or buffered);
* a job with `max_parallel = 2` and long runs (at most two at once);
* lock groups: three jobs on one queue sharing one lock (never two of them at once);
* flaky jobs failing at random with retries, a job that sometimes times out, jittered and misfire-prone jobs;
* an `overlap = "allow_all"` job whose lock-free runs overlap (each slot still runs once);
* in the full soak, long jobs with `overlap = "cancel_other"` and `"buffer_all"` (never two runs at once either);
* an event-triggered job (13th): its own chain, and a run for every success of the first job (`triggers_on` its
  outcome topic `job.plain-00.succeeded`, holding events while paused); the checker proves each (job, event) ran
  once and none was lost outside fault windows;
* catch-up policies (14th, 15th): a short grace with `catchup = "latest"`, and with `catchup = "all"` bounded in
  number and rate: after an outage or a pause their missed slots are run after all (each once, never two at once),
  and the slot ledger records the rest.

The handler (tests.chaos.worker) reads `sleep_sec`, `sleep_spread_sec` and `fail_rate` from the params.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.definitions import JobDefinition, load_definition

Table = dict[str, Any]
EVENT_SOURCE = "plain-00"  # the recipe's first job: its successes are the events of the event-triggered job


def _plain(rng: random.Random) -> Table:
    return {"interval_seconds": rng.choice([1, 2, 3]), "default_params": _params(rng.uniform(0.02, 0.3))}


def _cron(rng: random.Random) -> Table:
    return {"cron_expr": "* * * * *", "default_params": _params(rng.uniform(0.05, 0.5))}


def _long(rng: random.Random) -> Table:
    interval = rng.choice([1, 2])
    return {
        "interval_seconds": interval,
        "default_params": _params(interval * rng.uniform(1.5, 2.5)),
        "timeout_sec": 30,
    }


def _long_buffered(rng: random.Random) -> Table:
    return {**_long(rng), "overlap": "buffer_one", "misfire_grace_sec": 10}


def _long_cancel_other(rng: random.Random) -> Table:
    """Each slot cancels the run in its way (killed, recorded cancelled) and runs once it has stopped."""
    return {**_long(rng), "overlap": "cancel_other", "misfire_grace_sec": 10}


def _long_buffer_all(rng: random.Random) -> Table:
    """Slots queue behind the run in progress (at most three), run in slot order; beyond that they are skipped."""
    return {**_long(rng), "overlap": "buffer_all", "buffer_max": 3, "misfire_grace_sec": 10}


def _parallel_two(rng: random.Random) -> Table:
    return {"interval_seconds": 1, "max_parallel": 2, "default_params": _params(rng.uniform(1.5, 2.8))}


def _group(name: str) -> Callable[[random.Random], Table]:
    def make(rng: random.Random) -> Table:
        return {
            "interval_seconds": rng.choice([2, 3]),
            "queue": f"grp-{name}",
            "lock_group": f"grp-{name}",
            "default_params": _params(rng.uniform(0.1, 0.4)),
        }

    return make


def _flaky(rng: random.Random) -> Table:
    return {
        "interval_seconds": rng.choice([2, 3]),
        "default_params": _params(rng.uniform(0.05, 0.3), fail_rate=0.3),
        "max_attempts": 3,
        "retry_backoff_sec": 0.5,
        "retry_backoff_max_sec": 2,
    }


def _timeouts(rng: random.Random) -> Table:
    return {
        "interval_seconds": 3,
        "default_params": _params(0.4, spread=0.8),
        "timeout_sec": 0.8,
        "max_attempts": 2,
        "retry_backoff_sec": 0.5,
    }


def _allow_all(rng: random.Random) -> Table:
    """Runs longer than the interval with no lock: they overlap by design, and each slot still runs once."""
    return {"interval_seconds": 1, "overlap": "allow_all", "default_params": _params(rng.uniform(1.2, 2.0))}


def _jittered(rng: random.Random) -> Table:
    return {**_plain(rng), "jitter_sec": 0.5}


def _misfire(rng: random.Random) -> Table:
    return {**_plain(rng), "misfire_grace_sec": 5}


def _event_follower(rng: random.Random) -> Table:
    """Runs on every success of the recipe's first job (and on its own schedule)."""
    return {**_plain(rng), "triggers_on": [f"job.{EVENT_SOURCE}.succeeded"], "on_paused_event": "hold"}


def _catchup_latest(rng: random.Random) -> Table:
    return {**_plain(rng), "misfire_grace_sec": 2, "catchup": "latest"}


def _catchup_all(rng: random.Random) -> Table:
    return {
        "interval_seconds": 1, "misfire_grace_sec": 2, "catchup": "all", "catchup_max": 4, "catchup_rate_per_sec": 2,
        "default_params": _params(rng.uniform(0.02, 0.2)),
    }  # fmt: skip


def _params(sleep: float, *, spread: float = 0.0, fail_rate: float = 0.0) -> Table:
    return {"sleep_sec": round(sleep, 3), "sleep_spread_sec": spread, "fail_rate": fail_rate}


# (job id prefix, maker): the first 12 cover every kind once (a lock group with two members)
RECIPE: list[tuple[str, Callable[[random.Random], Table]]] = [
    ("plain", _plain),
    ("cron", _cron),
    ("long", _long),
    ("grpa", _group("a")),
    ("flaky", _flaky),
    ("grpa", _group("a")),
    ("par2", _parallel_two),
    ("jitter", _jittered),
    ("misfire", _misfire),
    ("longbuf", _long_buffered),
    ("timeout", _timeouts),
    ("free", _allow_all),
    ("evt", _event_follower),
    ("catchl", _catchup_latest),
    ("catcha", _catchup_all),
    # the full soak (30) adds the other overlap policies and more of each
    ("longcx", _long_cancel_other),
    ("longball", _long_buffer_all),
    ("grpa", _group("a")),
    ("grpb", _group("b")),
    ("grpb", _group("b")),
    ("grpb", _group("b")),
    ("cron", _cron),
    ("cron", _cron),
    ("long", _long),
    ("long", _long),
    ("flaky", _flaky),
    ("flaky", _flaky),
    ("flaky", _flaky),
    ("jitter", _jittered),
    ("misfire", _misfire),
    ("plain", _plain),
    ("plain", _plain),
    ("plain", _plain),
    ("plain", _plain),
    ("plain", _plain),
]


def make_jobs(count: int, seed: int) -> list[JobDefinition]:
    """`count` job definitions; the same (count, seed) always gives the same jobs."""
    rng = random.Random(seed)
    jobs = []
    for index in range(count):
        prefix, maker = RECIPE[index] if index < len(RECIPE) else ("plain", _plain)
        table = {"job_id": f"{prefix}-{index:02d}", "description": f"soak job ({prefix})", **maker(rng)}
        jobs.append(load_definition(table, source="soak recipe"))
    return jobs


def write_jobs_file(path: Path, jobs: list[JobDefinition]) -> Path:
    """A jobs file `python -m scheduler_seed seed --file` and `load_jobs_file` read back to the same jobs."""
    lines: list[str] = []
    for job in jobs:
        data = job.model_dump(mode="json", exclude_defaults=True, exclude={"job_id"})
        lines.append(f"[jobs.{job.job_id}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in data.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")
