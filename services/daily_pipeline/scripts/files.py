"""Where the steps keep their files: `<data dir>/<date>/market.json`, `cases.json`, and `latest.json`, which
step 1 writes last, so step 2 only ever reads a complete day."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    """Write atomically (temp file + rename): a reader never sees half a file, even if the step is killed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, ensure_ascii=False, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def day_dir(data_dir: str | Path, day: str) -> Path:
    return Path(data_dir) / day


def latest_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / "latest.json"
