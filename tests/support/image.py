"""The app image without a Docker engine: `deploy/Dockerfile` followed step by step into a folder.

Each instruction is carried out the way the engine would, with the image's root mapped to a folder outside the
checkout: COPY (sources relative to the build context, the repository root, minus the .dockerignore patterns
that matter here), WORKDIR, ENV, and the `pip install` of RUN, which runs with the pip of a fresh venv (no
`--system-site-packages`: the machine's Python would not put the checkout on the path, but nothing else may
either) in the folder the Dockerfile's WORKDIR names. What only an engine does (the base image, `useradd`,
`chown`, USER, EXPOSE) is listed in `Image.not_rehearsed`.

The result is cached under /tmp/rcs-image/<hash of every input> so that the tests of a session, and later
sessions with the same sources, share one build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
CACHE = Path("/tmp/rcs-image")
IGNORED = ("__pycache__", "*.pyc", "*.egg-info", ".mypy_cache", ".ruff_cache", ".pytest_cache")
STALE_AFTER_SEC = 86400


class ImageError(AssertionError):
    """The Dockerfile cannot be followed: a source it copies is missing, or a step failed (with its output)."""


@dataclass
class Image:
    """A followed Dockerfile: the image's root folder, its venv, final WORKDIR, ENV and CMD."""

    root: Path
    venv: Path
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    cmd: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    not_rehearsed: list[str] = field(default_factory=list)

    def host(self, container_path: str) -> Path:
        """Where a path of the image lives in the rehearsal folder."""
        return self.root / "fs" / container_path.lstrip("/")

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def process_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment a container of this image starts with: PATH to the venv first, the image's ENV,
        then `extra` (the compose service's). Nothing of the test process leaks in (no PYTHONPATH)."""
        return {
            "PATH": f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.host(self.workdir)),
            "LANG": "C.UTF-8",
            **self.env,
            **(extra or {}),
        }


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    joined: list[str] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        joined.append(buffer + line)
        buffer = ""
    result = []
    for line in joined:
        instruction, _, args = line.partition(" ")
        result.append((instruction.upper(), args.strip()))
    return result


def _inputs_digest() -> str:
    """A hash over the Dockerfile and every file a COPY of it could take (the repository minus ignored)."""
    digest = hashlib.sha256(DOCKERFILE.read_bytes())
    for instruction, args in _instructions(DOCKERFILE.read_text()):
        if instruction != "COPY":
            continue
        for source in shlex.split(args)[:-1]:
            path = ROOT / source
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                if any(part == "__pycache__" or part.endswith(".egg-info") for part in file.parts):
                    continue
                digest.update(str(file.relative_to(ROOT)).encode())
                digest.update(file.read_bytes() if file.exists() else b"<missing>")
    digest.update(sys.version.encode())
    return digest.hexdigest()[:20]


class _Builder:
    def __init__(self, image: Image) -> None:
        self.image = image

    def run(self, instruction: str, args: str) -> None:
        handler = getattr(self, f"do_{instruction.lower()}", None)
        if handler is None:
            self.image.not_rehearsed.append(f"{instruction} {args}")
        else:
            handler(args)

    def do_from(self, args: str) -> None:
        self.image.not_rehearsed.append(f"FROM {args} (the machine's Python {sys.version.split()[0]} in a venv)")

    def do_env(self, args: str) -> None:
        words = shlex.split(args)
        if words and "=" not in words[0]:  # legacy form: ENV KEY value
            self.image.env[words[0]] = " ".join(words[1:])
            return
        for word in words:
            key, _, value = word.partition("=")
            self.image.env[key] = value

    def do_workdir(self, args: str) -> None:
        self.image.workdir = os.path.join(self.image.workdir, args)
        self.image.host(self.image.workdir).mkdir(parents=True, exist_ok=True)

    def do_copy(self, args: str) -> None:
        *sources, target = shlex.split(args)
        destination = self.image.host(os.path.join(self.image.workdir, target))
        for source in sources:
            path = ROOT / source
            if not path.exists():
                raise ImageError(f"deploy/Dockerfile: COPY {source}: no such file in the build context")
            if path.is_dir():  # as the engine does: the directory's contents, into the destination
                shutil.copytree(path, destination, ignore=shutil.ignore_patterns(*IGNORED), dirs_exist_ok=True)
            else:
                into = destination / path.name if target.endswith("/") or len(sources) > 1 else destination
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into)

    def do_run(self, args: str) -> None:
        for step in (s.strip() for s in args.split("&&")):
            words = shlex.split(step)
            if words[:2] == ["pip", "install"]:
                self._pip(words[2:])
            elif words[:2] == ["rm", "-rf"]:
                for target in words[2:]:
                    shutil.rmtree(self.image.host(target), ignore_errors=True)
            else:
                self.image.not_rehearsed.append(f"RUN {step}")

    def _pip(self, args: list[str]) -> None:
        cwd = self.image.host(self.image.workdir)
        env = {**os.environ, **self.image.env}
        env.pop("PYTHONPATH", None)
        result = subprocess.run(
            [str(self.image.venv / "bin" / "pip"), "install", "--quiet", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            raise ImageError(
                f"RUN pip install {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )

    def do_cmd(self, args: str) -> None:
        self.image.cmd = _exec_form(args)

    def do_entrypoint(self, args: str) -> None:
        self.image.entrypoint = _exec_form(args)


def _exec_form(args: str) -> list[str]:
    if args.startswith("["):
        return list(json.loads(args))
    return ["/bin/sh", "-c", args]


def _build(root: Path) -> Image:
    image = Image(root=root, venv=root / "venv")
    subprocess.run([sys.executable, "-m", "venv", str(image.venv)], check=True, capture_output=True, timeout=300)
    builder = _Builder(image)
    for instruction, args in _instructions(DOCKERFILE.read_text()):
        builder.run(instruction, args)
    return image


def _sweep_stale() -> None:
    for old in CACHE.glob("*") if CACHE.exists() else []:
        with contextlib.suppress(OSError):
            if old.is_dir() and time.time() - old.stat().st_mtime > STALE_AFTER_SEC:
                shutil.rmtree(old, ignore_errors=True)


def app_image() -> Image:
    """The image of deploy/Dockerfile for the current sources, built once (concurrent callers wait)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    key = _inputs_digest()
    final = CACHE / key
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        saved = final / "image.json"
        if not saved.exists():
            _sweep_stale()
            shutil.rmtree(final, ignore_errors=True)
            image = _build(final)
            saved.write_text(_dump(image))
        return _load(saved)


def _dump(image: Image) -> str:
    return json.dumps(
        {
            "root": str(image.root),
            "venv": str(image.venv),
            "workdir": image.workdir,
            "env": image.env,
            "cmd": image.cmd,
            "entrypoint": image.entrypoint,
            "not_rehearsed": image.not_rehearsed,
        }
    )


def _load(path: Path) -> Image:
    data = json.loads(path.read_text())
    data["root"], data["venv"] = Path(data["root"]), Path(data["venv"])
    return Image(**data)
