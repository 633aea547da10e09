"""A real Prometheus for tests: find the binaries, start one on a free port with a temporary config and storage,
query it over its HTTP API, stop it. Debian's `prometheus` package provides `prometheus` and `promtool`."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.ports import free_port

INSTALL_HINT = "install Debian's prometheus package: apt-get install -y prometheus"


@dataclass(frozen=True, slots=True)
class Tools:
    prometheus: Path
    promtool: Path


def ensure_prometheus() -> Tools:
    """The `prometheus` and `promtool` binaries; RuntimeError with the install command when they are missing."""
    found = {}
    for name in ("prometheus", "promtool"):
        candidates = (shutil.which(name), f"/usr/bin/{name}", f"/usr/local/bin/{name}")
        path = next((p for p in candidates if p and Path(p).is_file()), None)
        if path is None:
            raise RuntimeError(f"{name} not found; {INSTALL_HINT}")
        found[name] = Path(path)
    return Tools(found["prometheus"], found["promtool"])


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run promtool (e.g. `promtool("check", "rules", path)`); the caller checks returncode and output."""
    tool = ensure_prometheus().promtool
    return subprocess.run([str(tool), *map(str, args)], capture_output=True, text=True, timeout=60)


class PromQLError(Exception):
    """Prometheus refused an expression (bad syntax, bad types)."""


class Prometheus:
    """A running Prometheus at `url`; `query` evaluates an instant expression now."""

    def __init__(self, url: str, log_path: Path) -> None:
        self.url = url
        self.log_path = log_path

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422: the API explains in its JSON body
            body = json.load(exc)
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant query as a list of series ({"metric": {...}, "value": [t, "v"]});
        a scalar or string result becomes one series without labels."""
        data = self.get("/api/v1/query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/targets")["activeTargets"])

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def running_prometheus(
    config_yaml: str, files: dict[str, str] | None = None, timeout: float = 60
) -> Iterator[Prometheus]:
    """Start Prometheus with `config_yaml` (plus `files`, written next to it, e.g. rule files) on a free port and
    temporary storage; stop it and remove everything when the block ends."""
    tools = ensure_prometheus()
    with tempfile.TemporaryDirectory(prefix="prometheus-") as tmp:
        root = Path(tmp)
        for name, text in (files or {}).items():
            (root / name).write_text(text)
        config = root / "prometheus.yml"
        config.write_text(config_yaml)
        port = free_port()
        log_path = root / "prometheus.log"
        argv = [
            str(tools.prometheus),
            f"--config.file={config}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        server = Prometheus(f"http://127.0.0.1:{port}", log_path)
        try:
            _wait_ready(server, proc, timeout)
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _wait_ready(server: Prometheus, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"prometheus not ready after {timeout} s:\n{server.log_tail()}")


# -- the expressions deploy/ asks Prometheus to evaluate ---------------------------------------------------------

GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL expression of the dashboard or the alert rules; `label` is set for a variable's
    `label_values(selector, label)`: its series must carry that label."""

    where: str
    expr: str
    label: str | None = None


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's interpolation for our dashboards: macros, then `${name}` and `$name` (longest names first)."""
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    if "$" in expr:
        raise ValueError(f"uninterpolated variable left in {expr!r}")
    return expr


def dashboard_queries(dashboard: dict[str, Any], variables: dict[str, str]) -> list[Query]:
    """Every Prometheus target of every panel, and every query variable, interpolated with `variables`."""
    queries = []
    panels = [p for top in dashboard["panels"] for p in (top, *top.get("panels", []))]
    for panel in panels:
        for target in panel.get("targets", []):
            source = target.get("datasource") or panel.get("datasource") or {}
            if source.get("type") == "prometheus":
                where = f"panel {panel['title']!r} target {target['refId']}"
                queries.append(Query(where, substitute(target["expr"], variables)))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\)\s*", variable["definition"])
            if match is None:
                raise ValueError(f"variable {variable['name']}: not label_values(selector, label)")
            where = f"variable {variable['name']}"
            queries.append(Query(where, substitute(match[1], variables), label=match[2]))
    return queries


def alert_queries(rules: dict[str, Any]) -> list[Query]:
    """The expression of every alerting and recording rule of a parsed rule file."""
    return [
        Query(f"rule {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]
