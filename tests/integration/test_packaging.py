"""The wheel carries everything the services need at run time: installed the way deploy/Dockerfile installs it
(`pip install ".[loki,fast]"` from a copy of what it copies), in a fresh venv outside the checkout, it migrates an
empty database, seeds a jobs file and runs a worker that runs the job, on uvloop (the `fast` extra).

The image folder is shared with the compose rehearsal (tests/support/image.py caches it per source hash)."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from shared import topology
from shared.settings import Settings
from shared.store.migrate import available_migrations
from tests.support.image import ROOT, Image, app_image
from tests.support.ports import free_port
from tests.support.runtime import FAST, stop_process, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def image() -> Image:
    return app_image()


def in_image(image: Image, argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=image.host(image.workdir),
        env=image.process_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_installed_code_comes_from_the_venv_and_no_checkout_is_on_the_path(image: Image) -> None:
    probe = (
        "import json, sys, shared, services, scheduler_seed;"
        "print(json.dumps({'path': sys.path, 'files': [m.__file__ for m in (shared, services, scheduler_seed)]}))"
    )
    result = in_image(image, ["python", "-c", probe])
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    site = str(image.venv)
    assert all(f.startswith(site) for f in found["files"]), found["files"]
    assert not [p for p in found["path"] if p.startswith(str(ROOT))], found["path"]
    assert not image.host(image.workdir).joinpath("shared").exists(), "the sources must not be beside the package"


def test_the_wheel_carries_every_migration(image: Image) -> None:
    probe = (
        "import json; from importlib.metadata import files;"
        "print(json.dumps(sorted(str(f) for f in files('rabbit-chain-scheduler') if str(f).endswith('.sql'))))"
    )
    result = in_image(image, ["python", "-c", probe])
    assert result.returncode == 0, result.stderr
    shipped = {Path(p).name for p in json.loads(result.stdout)}
    expected = {f"{m.version:04d}_{m.name}.sql" for m in available_migrations()}
    assert shipped == expected


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    """A database of its own on the machine's PostgreSQL, so the migration starts from nothing."""
    name = f"pkg_{secrets.token_hex(4)}"
    admin = ["psql", database_url, "-qc"]
    subprocess.run([*admin, f"CREATE DATABASE {name}"], check=True, capture_output=True, timeout=60)
    try:
        yield database_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        subprocess.run([*admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True, timeout=60)


@pytest.fixture
async def queues_removed(scope: str, amqp_url: str) -> AsyncIterator[str]:
    yield scope
    connection = await aio_pika.connect(amqp_url)
    try:
        await topology.delete_scope(await connection.channel(), scope, ["packaged"], ["packaged"])
    finally:
        await connection.close()


async def test_from_the_installed_wheel_migrate_seed_and_run_a_job(
    image: Image, settings: Settings, empty_database: str, queues_removed: str, tmp_path: Path
) -> None:
    scope = queues_removed
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(
        '[jobs.packaged]\nqueue = "packaged"\ninterval_seconds = 1\n'
        "default_params = { sleep_sec = 0.1, fail_rate = 0.0 }\n"
    )
    port = free_port()
    env = {
        **{k.upper(): v for k, v in FAST.items()},
        "AMQP_URL": settings.amqp_url.get_secret_value(),
        "DATABASE_URL": empty_database,
        "SCHEDULER_SCOPE": scope,
        "SERVICE_MODE": "mock",
        "METRICS_PORT": str(port),
        "SCHEDULER_EVENT_LOOP": "auto",
    }
    seeded = in_image(image, ["python", "-m", "scheduler_seed", "seed", "--scope", scope, "--file", str(jobs)], env)
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    log_path = tmp_path / "worker.log"
    worker = start(image, ["python", "-m", "services.mock_worker", str(jobs)], env, log_path)
    conn = await asyncpg.connect(empty_database)
    try:
        head = max(m.version for m in available_migrations())
        assert await conn.fetchval("SELECT max(version) FROM scheduler.schema_migrations") == head

        async def ran() -> bool:
            return bool(
                await conn.fetchval(
                    "SELECT count(*) FROM scheduler.job_runs WHERE scope = $1 AND status = 'succeeded'", scope
                )
            )

        try:
            await wait_until(ran, 30, "a succeeded run of the packaged worker")
            assert await asyncio.to_thread(ready, port), "the packaged worker is not ready"
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker output:\n{log_path.read_text()[-3000:]}") from None
    finally:
        await conn.close()
        stop_process(worker)
    assert worker.returncode == 0, log_path.read_text()[-3000:]
    assert loops_logged(log_path) == ["uvloop"], log_path.read_text()[-3000:]


def loops_logged(log_path: Path) -> list[str]:
    """The loops the worker's `worker.event_loop` lines name."""
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    return [line["loop"] for line in lines if line.get("event") == "worker.event_loop"]


def start(image: Image, argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(argv, cwd=image.host(image.workdir), env=image.process_env(env), stdout=log, stderr=log)


def ready(port: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as answer:
                return answer.status == 200
        except OSError:
            time.sleep(0.3)
    return False
