"""`python -m tests.support.probe_worker`: a worker process serving PROBE_QUEUES (comma list) with the probe."""

from __future__ import annotations

import os

from shared.settings import Settings
from shared.worker import Worker
from tests.support.probe import ProbeParams, probe


def main() -> None:
    worker = Worker("probe", Settings())
    for queue in os.environ["PROBE_QUEUES"].split(","):
        worker.register(queue, probe, ProbeParams)
    worker.run()


if __name__ == "__main__":
    main()
