"""The lateness distribution of each system as a PNG: one panel per job count, cumulative share of runs
started within x ms of their slot (log scale), one line per system."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot(path: Path, rows: list[dict[str, Any]], samples: dict[str, list[float]], title: str) -> None:
    """`rows` are result summaries carrying a `samples_key` into `samples` (sorted lateness in ms)."""
    counts = sorted({r["jobs"] for r in rows if samples.get(r.get("samples_key", ""))})
    if not counts:
        return
    fig, axes = plt.subplots(1, len(counts), figsize=(6.5 * len(counts), 4.8), squeeze=False)
    for ax, jobs in zip(axes[0], counts, strict=True):
        for row in (r for r in rows if r["jobs"] == jobs):
            values = samples.get(row.get("samples_key", ""), [])
            if not values:
                continue
            clipped = [max(v, 0.1) for v in values]  # log axis: a start a hair before the slot shows at 0.1 ms
            share = [(i + 1) / len(clipped) for i in range(len(clipped))]
            ax.step(clipped, share, where="post", label=row["label"])
        ax.set_xscale("log")
        ax.set_xlabel("start minus intended slot (ms, log)")
        ax.set_ylabel("share of runs")
        ax.set_title(f"{jobs} jobs, 1 s interval")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
