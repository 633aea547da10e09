"""SCHEDULER_EVENT_LOOP: which loop each setting gives, with uvloop installed and without it, and the one line a
process asked for uvloop without it prints instead of a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from shared import event_loop
from shared.errors import ConfigError
from shared.settings import Settings, known_scheduler_variables
from tests.support.runtime import ROOT

WITHOUT_UVLOOP = "import sys; sys.modules['uvloop'] = None; "  # `import uvloop` then raises ImportError


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine where uvloop is not installed."""
    monkeypatch.setitem(sys.modules, "uvloop", None)


async def loop_name() -> str:
    return event_loop.running_loop_name()


def test_auto_runs_on_uvloop_when_it_is_installed() -> None:
    choice = event_loop.choose("auto")
    assert choice.name == "uvloop"
    assert event_loop.run(loop_name(), choice) == "uvloop"


def test_uvloop_asked_and_installed_runs_on_uvloop() -> None:
    assert event_loop.run(loop_name(), event_loop.choose("uvloop")) == "uvloop"


def test_asyncio_never_loads_uvloop(no_uvloop: None) -> None:
    choice = event_loop.choose("asyncio")  # would raise if it tried the import
    assert (choice.name, choice.factory) == ("asyncio", None)
    assert event_loop.run(loop_name(), choice) == "asyncio"


def test_asyncio_asked_with_uvloop_installed_runs_on_asyncio() -> None:
    assert event_loop.run(loop_name(), event_loop.choose("asyncio")) == "asyncio"


def test_auto_without_uvloop_falls_back_to_asyncio(no_uvloop: None) -> None:
    choice = event_loop.choose("auto")
    assert choice.name == "asyncio"
    assert event_loop.run(loop_name(), choice) == "asyncio"


def test_uvloop_asked_but_not_installed_is_a_config_error_naming_the_fix(no_uvloop: None) -> None:
    with pytest.raises(event_loop.EventLoopUnavailable) as caught:
        event_loop.choose("uvloop")
    assert isinstance(caught.value, ConfigError)
    text = str(caught.value)
    assert "SCHEDULER_EVENT_LOOP=uvloop" in text and "[fast]" in text and "SCHEDULER_EVENT_LOOP=auto" in text


def test_the_setting_is_read_from_the_environment_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().scheduler_event_loop == "auto"
    monkeypatch.setenv("SCHEDULER_EVENT_LOOP", "asyncio")
    assert Settings().scheduler_event_loop == "asyncio"
    monkeypatch.setenv("SCHEDULER_EVENT_LOOP", "trio")
    with pytest.raises(ValidationError):
        Settings()
    assert "SCHEDULER_EVENT_LOOP" in known_scheduler_variables()  # not warned about as a typo


def run_without_uvloop(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": "/usr/bin:/bin", "SCHEDULER_EVENT_LOOP": "uvloop", "AMQP_URL": "amqp://u:p@127.0.0.1:1/", **env}
    argv = [sys.executable, "-c", WITHOUT_UVLOOP + code]
    return subprocess.run(argv, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60, check=False)


def test_a_worker_asked_for_uvloop_without_it_stops_with_one_line() -> None:
    code = "from shared.worker import Worker\nw = Worker('probe')\nw.register('q', lambda ctx, params: None)\nw.run()\n"
    done = run_without_uvloop(code)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "SCHEDULER_EVENT_LOOP=uvloop" in lines[0], done.stderr
    assert '"event": "worker.event_loop_unavailable"' in done.stdout


def test_the_cli_asked_for_uvloop_without_it_stops_with_one_line() -> None:
    done = run_without_uvloop("import sys; from scheduler_seed.cli import main; sys.exit(main(['status']))")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: SCHEDULER_EVENT_LOOP=uvloop") and done.stderr.count("\n") == 1, done.stderr
