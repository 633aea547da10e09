"""`python -m services.mock_worker [JOBS_FILE]`: the mock executor on every queue of the scope's jobs file."""

from __future__ import annotations

import os
import sys

from services.mock_executor import MockParams, mock_run
from shared.errors import ConfigError
from shared.jobsfile import load_jobs_file
from shared.settings import Settings
from shared.worker import Worker


def build(settings: Settings, jobs_file: str) -> Worker:
    worker = Worker("mock_worker", settings)
    for queue in sorted({d.queue_name for d in load_jobs_file(jobs_file)}):
        worker.register(queue, mock_run, MockParams)
    return worker


def main() -> None:
    settings = Settings()
    jobs_file = (
        sys.argv[1]
        if len(sys.argv) > 1
        else os.environ.get("JOBS_FILE", f"deploy/jobs/{settings.scheduler_scope}.toml")
    )
    try:
        worker = build(settings, jobs_file)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    worker.run()


if __name__ == "__main__":
    main()
