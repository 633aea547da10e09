"""`python -m tests.support.probe_worker_without_uvloop`: the probe worker as on a machine without uvloop installed."""

from __future__ import annotations

import sys

sys.modules["uvloop"] = None  # type: ignore[assignment]  # `import uvloop` now raises ImportError

from tests.support.probe_worker import main  # noqa: E402

if __name__ == "__main__":
    main()
