"""`make demo`: seed the fast mock jobs, start two mock workers and the control plane (API and Admin UI, its URL
printed), show a live status table until Ctrl-C.

Everything it starts, it stops: the worker and server processes get SIGTERM (and SIGKILL if they linger) on the way
out.
`--seconds N` ends the demo by itself after N seconds (used by the tests and by CI-like smoke runs).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLEAR = "\x1b[H\x1b[2J"


def _cli(*args: str, scope: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler_seed", *args, "--scope", scope],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def _start_workers(count: int, scope: str, jobs_file: str, log_dir: Path) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "SCHEDULER_SCOPE": scope, "JOBS_FILE": jobs_file}
    procs = []
    for i in range(count):
        with (log_dir / f"mock-worker-{i + 1}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "services.mock_worker", jobs_file],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches the demo only; it stops the workers itself
                )
            )
    return procs


def _start_server(scope: str, port: int, log_dir: Path) -> subprocess.Popen[bytes]:
    """The control plane on loopback (no tokens needed there), its log beside the workers'."""
    with (log_dir / "control-plane.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "scheduler_seed", "serve", "--scope", scope, "--host", "127.0.0.1", "--port",
             str(port)],
            cwd=ROOT,
            env={**os.environ, "CONTROL_API_TOKENS": ""},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def _wait_until_serving(url: str, server: subprocess.Popen[bytes], log_dir: Path, timeout: float = 90.0) -> bool:
    """Until the control plane answers `/healthz` (a loaded machine takes seconds to start it), it stops, or
    `timeout` passes; whether it answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2) as answer:
                if answer.status == 200:
                    return True
        except (OSError, ValueError):
            time.sleep(0.3)
    print(f"the control plane did not answer at {url} (see {log_dir / 'control-plane.log'})", flush=True)
    return False


def _stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _screen(scope: str, procs: list[subprocess.Popen[bytes]], log_dir: Path, interactive: bool, url: str) -> str:
    status = _cli("status", scope=scope)
    alive = sum(1 for p in procs if p.poll() is None)
    head = (
        f"scheduler demo · scope {scope} · {alive}/{len(procs)} mock workers alive · "
        f"{time.strftime('%H:%M:%S')} · logs in {log_dir}/\nAdmin UI and API: {url} (API docs: {url}docs)"
    )
    body = status.stdout if status.returncode == 0 else status.stderr
    hint = "Ctrl-C stops the demo and the workers it started." if interactive else ""
    return f"{CLEAR if interactive else ''}{head}\n\n{body}\n{hint}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scheduler_seed.demo", description=__doc__)
    parser.add_argument("--scope", default="mock")
    parser.add_argument("--file", default=str(ROOT / "deploy" / "jobs" / "mock.toml"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until Ctrl-C)")
    parser.add_argument("--refresh", type=float, default=2.0)
    parser.add_argument("--port", type=int, default=0, help="control plane port (0: 9095 for mock, 8095 otherwise)")
    args = parser.parse_args(argv)

    seeded = _cli("seed", "--file", args.file, scope=args.scope)
    sys.stdout.write(seeded.stdout)
    if seeded.returncode != 0:
        sys.stderr.write(seeded.stderr)
        return seeded.returncode
    log_dir = ROOT / ".demo"
    log_dir.mkdir(exist_ok=True)
    procs = _start_workers(args.workers, args.scope, args.file, log_dir)
    port = args.port or (9095 if args.scope == "mock" else 8095)
    url = f"http://127.0.0.1:{port}/"
    server = _start_server(args.scope, port, log_dir)
    if _wait_until_serving(url, server, log_dir):
        print(f"control plane (Admin UI and API): {url}", flush=True)
    interactive = sys.stdout.isatty() and not args.seconds
    end = time.monotonic() + args.seconds if args.seconds else None
    try:
        while end is None or time.monotonic() < end:
            time.sleep(args.refresh)
            sys.stdout.write(_screen(args.scope, procs, log_dir, interactive, url))
            sys.stdout.flush()
    except KeyboardInterrupt:
        print("\nstopping the mock workers and the control plane ...")
    finally:
        _stop_workers([*procs, server])
    print("demo stopped; the jobs stay seeded (`python -m scheduler_seed pause JOB` or run `make demo` again).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
