"""Reliability diagram PNG from an evaluate() result. matplotlib is imported inside the function
(Agg, no pyplot state), so importing focalbench.metrics stays fast."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def plot_reliability(result: dict[str, Any], path: str | Path, per_class: bool = False) -> Path:
    """Write a reliability diagram of `result["reliability"]` to `path` (PNG) and return the path.

    Each panel: per score bin, the mean target (IoU for a TP, 0 for a FP: LaECE0's accuracy, Oksuz
    et al. CVPR 2023) as bars, the mean score as dots, the diagonal of perfect calibration, and
    below it the detection count per bin. per_class=False draws the pooled diagram (all classes with
    ground truth); True draws one panel per class.
    """
    from matplotlib.figure import Figure

    rel = result["reliability"]
    edges = rel["edges"]
    if per_class:
        panels = [
            (name, bins, result["per_class"][name]["laece0"])
            for name, bins in rel["per_class"].items()
        ]
    else:
        panels = [("all classes", rel["pooled"], result.get("laece0", math.nan))]
    ncols = math.ceil(math.sqrt(len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(3.2 * ncols, 3.6 * nrows), layout="constrained")
    grid = fig.add_gridspec(2 * nrows, ncols, height_ratios=[3, 1] * nrows)
    left = edges[:-1]
    width = [b - a for a, b in zip(edges[:-1], edges[1:])]
    for i, (name, bins, laece0) in enumerate(panels):
        row, col = divmod(i, ncols)
        ax = fig.add_subplot(grid[2 * row, col])
        count_ax = fig.add_subplot(grid[2 * row + 1, col], sharex=ax)
        target = [0.0 if math.isnan(v) else v for v in bins["mean_target"]]
        ax.bar(
            left,
            target,
            width=width,
            align="edge",
            color="tab:blue",
            edgecolor="k",
            lw=0.3,
            label="mean IoU",
        )
        centers = [a + w / 2 for a, w in zip(left, width)]
        ax.plot(centers, bins["mean_score"], "o", color="tab:red", ms=3, label="mean score")
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=f"{name}  LaECE0={_pct(laece0)}")
        ax.title.set_fontsize(9)
        count_ax.bar(left, bins["count"], width=width, align="edge", color="tab:gray")
        count_ax.set_xlabel("score", fontsize=8)
        count_ax.set_ylabel("count", fontsize=8)
        if i == 0:
            ax.legend(loc="upper left", fontsize=7)
    path = Path(path)
    fig.savefig(path, format="png", dpi=100)
    return path


def _pct(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"
