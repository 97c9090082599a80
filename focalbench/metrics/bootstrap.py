"""Paired bootstrap over validation images: does run A beat run B beyond noise? (issue 15)

Both runs predicted the same validation images. Each of n_boot resamples draws I image ids with
replacement; A and B are scored on the same resample (the pairing: an image that is hard for one
run is usually hard for the other, and that shared part cancels in the difference). Reported per
metric: A and B on the full set, their difference A - B, its 95% percentile interval over the
resamples and P(A wins), the fraction of resamples where A is better. Ties count half: a run
compared with itself gets an interval of exactly [0, 0] and P(A wins) = 0.5, not 0.

With several seeds per side (one config trained with several seeds) it is a two-level bootstrap:
each resample also draws each side's seeds with replacement, and a side's value is the mean over
its drawn seeds on that image resample (seed noise and image noise both enter the interval). When
both sides have the same seed values, one draw of seeds serves both (seed s of A is paired with
seed s of B, which share the data order; it is also what makes A vs A exactly 0).

Any scorer with `metrics`, `n_images`, `__call__(counts[B, I]) -> {metric: values[B]}` and
`full() -> {metric: value}` can be compared: resample.ResampledMetrics for detections; tests use a
plain mean to check the interval's coverage. Deterministic for a given `seed`. numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from .match import Floats, Ints
from .resample import LOWER_IS_BETTER

LEVEL = 0.95
TIES = "a tie counts half a win"


class Scorer(Protocol):
    metrics: tuple[str, ...]
    n_images: int

    def __call__(self, counts: Ints) -> dict[str, Floats]: ...

    def full(self) -> dict[str, float]: ...


@dataclass(frozen=True)
class MetricDiff:
    metric: str
    a: float  # on the full validation set (the mean over the side's seeds)
    b: float
    diff: float  # a - b
    lo: float  # the 2.5th percentile of the resampled differences
    hi: float  # the 97.5th
    p_a_wins: float  # resamples where A is better (lower for lower_is_better; ties half)
    n_valid: int  # resamples where both sides are defined (a NaN metric is left out)
    lower_is_better: bool


@dataclass(frozen=True)
class Comparison:
    metrics: tuple[MetricDiff, ...]
    n_boot: int
    seed: int
    n_images: int
    n_seeds_a: int
    n_seeds_b: int
    two_level: bool  # seeds resampled too (several seeds on a side)
    seeds_paired: bool  # both sides drew the same seed values
    level: float = LEVEL

    def describe(self) -> str:
        """One line on what was resampled, for the table caption and the JSON."""
        how = f"paired bootstrap over {self.n_images} validation images, {self.n_boot} resamples"
        if self.two_level:
            pairing = "paired by seed value" if self.seeds_paired else "drawn per side"
            how += f"; two-level: seeds resampled too ({pairing})"
        return f"{how}; {self.level:.0%} percentile interval; {TIES}; seed {self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready (NaN as None)."""
        out = asdict(self)
        out["metrics"] = [{k: _plain(v) for k, v in asdict(m).items()} for m in self.metrics]
        out["method"] = self.describe()
        return out


def _plain(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def draw_image_counts(rng: np.random.Generator, n_images: int, n_boot: int) -> Ints:
    """counts[n_boot, n_images]: how many times each image is drawn in each resample of n_images
    ids with replacement."""
    ids = rng.integers(0, n_images, (n_boot, n_images))  # [B, I] the drawn ids
    flat = (ids + np.arange(n_boot)[:, None] * n_images).ravel()
    counts: Ints = np.bincount(flat, minlength=n_boot * n_images).reshape(n_boot, n_images)
    return counts


def paired_bootstrap(
    runs_a: Sequence[Scorer],
    runs_b: Sequence[Scorer],
    metrics: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    seeds_a: Sequence[int] | None = None,
    seeds_b: Sequence[int] | None = None,
) -> Comparison:
    """Compare side A (one scorer per seed) with side B on the same image resamples.

    seeds_a/seeds_b: the training seed of each run; when both sides have the same set, the seed
    draws are paired by value. ValueError for n_boot < 1, an empty side, runs on different
    numbers of images, or a metric a run does not score.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot: got {n_boot}; need at least 1 resample")
    if not runs_a or not runs_b:
        raise ValueError("paired_bootstrap: each side needs at least one run")
    n_images = {r.n_images for r in (*runs_a, *runs_b)}
    if len(n_images) != 1:
        raise ValueError(f"runs scored on different numbers of images: {sorted(n_images)}")
    for m in metrics:
        if any(m not in r.metrics for r in (*runs_a, *runs_b)):
            raise ValueError(f"metric {m!r} is not scored by every run")
    (n,) = n_images
    rng = np.random.default_rng(seed)
    counts = draw_image_counts(rng, n, n_boot)
    two_level = len(runs_a) > 1 or len(runs_b) > 1
    paired = (
        two_level
        and seeds_a is not None
        and seeds_b is not None
        and sorted(seeds_a) == sorted(seeds_b)
        and len(set(seeds_a)) == len(seeds_a)
    )
    if paired:  # the same draw of seed values for both sides
        assert seeds_a is not None and seeds_b is not None
        order_a, order_b = np.argsort(seeds_a), np.argsort(seeds_b)
        runs_a, runs_b = [runs_a[i] for i in order_a], [runs_b[i] for i in order_b]
    pick_a = rng.integers(0, len(runs_a), (n_boot, len(runs_a))) if two_level else None
    pick_b = pick_a if paired else rng.integers(0, len(runs_b), (n_boot, len(runs_b)))
    boot_a = _side(runs_a, counts, pick_a, metrics)
    boot_b = _side(runs_b, counts, pick_b if two_level else None, metrics)
    full_a = {m: float(np.mean([r.full()[m] for r in runs_a])) for m in metrics}
    full_b = {m: float(np.mean([r.full()[m] for r in runs_b])) for m in metrics}
    return Comparison(
        metrics=tuple(_summary(m, full_a[m], full_b[m], boot_a[m] - boot_b[m]) for m in metrics),
        n_boot=n_boot,
        seed=seed,
        n_images=n,
        n_seeds_a=len(runs_a),
        n_seeds_b=len(runs_b),
        two_level=two_level,
        seeds_paired=paired,
    )


def _side(
    runs: Sequence[Scorer], counts: Ints, pick: Ints | None, metrics: Sequence[str]
) -> dict[str, Floats]:
    """{metric: values[B]}: each run on every resample, then the mean over the drawn seeds."""
    per_run = [run(counts) for run in runs]
    out = {}
    for m in metrics:
        values = np.stack([v[m] for v in per_run])  # [S, B]
        if pick is None:
            out[m] = values[0]
        else:  # pick[B, S]: the seeds drawn for each resample
            out[m] = values[pick, np.arange(len(counts))[:, None]].mean(axis=1)
    return out


def _summary(metric: str, a: float, b: float, diffs: Floats) -> MetricDiff:
    ok = diffs[np.isfinite(diffs)]
    lower = metric in LOWER_IS_BETTER
    if len(ok):
        lo, hi = (float(x) for x in np.percentile(ok, [50 * (1 - LEVEL), 50 * (1 + LEVEL)]))
        better = (ok < 0) if lower else (ok > 0)
        p_win = float((better.sum() + 0.5 * (ok == 0).sum()) / len(ok))
    else:
        lo = hi = p_win = math.nan
    return MetricDiff(metric, a, b, a - b, lo, hi, p_win, len(ok), lower)


def image_variance(
    scorers_a: Sequence[Scorer],
    scorers_b: Sequence[Scorer],
    metric: str,
    n_boot: int = 1000,
    seed: int = 0,
) -> float:
    """V_img of mean_a - mean_b (each the mean over that side's runs, one per seed): the variance
    over n_boot paired image resamples with each side's seeds held fixed (the one-level bootstrap
    of metrics/bootstrap.py; resamples where the metric is NaN are left out). ValueError for an
    empty side, different image counts, or fewer than 2 valid resamples."""
    if not scorers_a or not scorers_b:
        raise ValueError("image_variance: each side needs at least one run")
    sizes = {s.n_images for s in (*scorers_a, *scorers_b)}
    if len(sizes) != 1:
        raise ValueError(f"runs scored on different numbers of images: {sorted(sizes)}")
    counts = draw_image_counts(np.random.default_rng(seed), sizes.pop(), n_boot)  # [B, I]
    side_a = np.mean([s(counts)[metric] for s in scorers_a], axis=0)  # [B]
    side_b = np.mean([s(counts)[metric] for s in scorers_b], axis=0)
    d = side_a - side_b
    d = d[np.isfinite(d)]
    if len(d) < 2:
        raise ValueError(f"image_variance: {len(d)} valid resamples of {n_boot}; need >= 2")
    return float(d.var(ddof=1))
