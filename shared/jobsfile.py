"""Jobs files (`deploy/jobs/<scope>.toml`): one `[jobs.<job_id>]` table per job, keys = `scheduler.jobs` columns."""

from __future__ import annotations

import tomllib
from pathlib import Path

from shared.definitions import JobDefinition, load_definition
from shared.errors import ConfigError


def load_jobs_file(path: str | Path) -> list[JobDefinition]:
    """Parse and validate every job of a file; raises ConfigError naming the file (and line, for TOML errors)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such jobs file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
    tables = data.get("jobs")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{path}: no [jobs.<job_id>] tables found")
    definitions, problems = [], []
    for job_id, table in tables.items():
        if not isinstance(table, dict):
            problems.append(f"{path}: jobs.{job_id} must be a table")
            continue
        if "job_id" in table and table["job_id"] != job_id:
            problems.append(f"{path}: jobs.{job_id} has job_id = {table['job_id']!r}; leave it out or make them equal")
            continue
        try:
            definitions.append(load_definition({**table, "job_id": job_id}, source=str(path)))
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    return definitions
