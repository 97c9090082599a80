"""`focalbench power A B --diff D`: from the runs so far of two configs (selectors, run ids or
folders, as `compare`), the seed-level and image-level parts of the variance of their difference,
and the seeds (and validation images) that would resolve a difference of D with 80% power at the
95% level (the model and its assumptions: metrics/power.py). `compare` prints the same one-line
estimate for a metric whose interval holds 0 (`resolution_hint`). Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from focalbench.errors import InputError
from focalbench.metrics.bootstrap import image_variance
from focalbench.metrics.power import VarianceParts, variance_parts
from focalbench.metrics.resample import METRICS
from focalbench.results.compare import Run, check_same_validation_set, resolve, scorers

POWER, LEVEL = 0.8, 0.95


@dataclass(frozen=True)
class PowerResult:
    spec_a: str
    spec_b: str
    metric: str
    diff: float  # the difference to resolve (--diff)
    parts: VarianceParts


def parts_of(runs_a: list[Run], runs_b: list[Run], metric: str, n_boot: int = 1000,
             seed: int = 0) -> VarianceParts:  # fmt: skip
    """The variance parts of A - B on `metric` from their run folders."""
    gts: dict[Path, Any] = {}
    sa, sb = scorers(runs_a, [metric], gts), scorers(runs_b, [metric], gts)
    check_same_validation_set(gts)
    values_a = [s.full()[metric] for s in sa]
    values_b = [s.full()[metric] for s in sb]
    if not all(math.isfinite(v) for v in values_a + values_b):
        raise InputError(f"--metric {metric}: undefined (NaN) for some run; choose another")
    v_img = image_variance(sa, sb, metric, n_boot, seed)
    return variance_parts(values_a, values_b, v_img, sa[0].n_images)


def power(
    a: str,
    b: str,
    diff: float,
    metric: str = "mAP",
    n_boot: int = 1000,
    seed: int = 0,
    csv_path: str | Path = "results/runs.csv",
) -> PowerResult:
    if not diff > 0:
        raise InputError(f"--diff {diff}: give the difference to resolve, > 0 (e.g. 0.01 mAP)")
    if metric not in METRICS:
        raise InputError(f"--metric {metric!r}: choose from {list(METRICS)}")
    runs_a, runs_b = resolve(a, Path(csv_path), "A"), resolve(b, Path(csv_path), "B")
    for side, runs in (("A", runs_a), ("B", runs_b)):
        if len(runs) < 2:
            raise InputError(
                f"{side} has {len(runs)} seed; power needs at least two seeds on each side to "
                "estimate the seed variance (run another seed of it)"
            )
    return PowerResult(a, b, metric, diff, parts_of(runs_a, runs_b, metric, n_boot, seed))


def to_lines(result: PowerResult) -> list[str]:
    p, d = result.parts, result.diff
    seed_sd, img_sd = math.sqrt(p.seed_var), math.sqrt(p.image_var)
    n_now = min(p.n_a, p.n_b)
    lines = [
        f"A = {result.spec_a} ({p.n_a} seeds), B = {result.spec_b} ({p.n_b} seeds), "
        f"{result.metric}: A - B = {p.diff:+.4f} on {p.n_images} validation images",
        f"  seed level: sd of one run {seed_sd:.4f} (pooled over both configs, df {p.seed_df:g})",
        f"  image level: sd of the difference {img_sd:.4f} at {p.n_images} images "
        "(paired bootstrap, seeds held)",
        "  expected width of compare's 95% interval at n seeds a side: "
        + ", ".join(f"{n}: {p.width(n):.4f}" for n in range(max(n_now, 2), max(n_now, 2) + 4)),
        "  " + p.advice(d, POWER, LEVEL),
    ]
    return lines


def resolution_hint(runs_a: list[Run], runs_b: list[Run], metric: str, n_boot: int = 1000,
                    seed: int = 0) -> str | None:  # fmt: skip
    """compare's line for a metric whose interval holds 0: the seeds that would resolve the
    observed difference; None with fewer than two seeds on a side."""
    if min(len(runs_a), len(runs_b)) < 2:
        return None
    parts = parts_of(runs_a, runs_b, metric, n_boot, seed)
    if parts.diff == 0:
        return None
    return f"{metric}: {parts.advice(None, POWER, LEVEL)}"
