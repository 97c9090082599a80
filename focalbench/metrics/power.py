"""How many seeds (or validation images) would resolve a difference between two configs? From the
runs so far: each config's per-seed metric values and the image-level variance of the difference
of their seed-means on the I validation images (bootstrap.image_variance, or a one-level paired
image bootstrap of `focalbench compare` with the seeds held fixed).

Model (as in race.py): with n seeds a side and I' images,

    var(mean_a - mean_b) = V_img * I / I' + 2 * s2 / n

s2: the seed variance of one run's metric, pooled within the two configs (df n_a + n_b - 2), or a
SeedVariance given (the grid's, a prior). V_img: the image part, measured at I images.
Assumptions: seeds are independent draws; s2 is the same for both configs; V_img does not shrink
with seeds (the config x image part stays; a run's own per-image noise, which would shrink, is
also inside s2, so the model errs wide) and scales as 1/I (images are independent draws); the
difference is normal (a percentile interval is then mean +- z sd). s2 from 2 + 2 seeds has only
2 df: a prediction from so few seeds is rough (a 95% range of about 0.16x-3.7x for s2).

Interval width at n seeds a side, two kinds:
  * "compare" (default): what `focalbench compare` prints, its two-level percentile bootstrap.
    It draws each side's n seeds with replacement, so its seed part has the plug-in variance
    (n-1)/n * s2 / n a side: width = 2 z_(1-a/2) sqrt(V_img + 2 (n-1)/n s2 / n), narrower than
    the model variance (half the seed part at n = 2). With one seed a side it is image-only.
  * "t": the t-interval on the model variance, 2 t_(1-a/2, df) sqrt(V_img + 2 s2 / n), df the
    Welch-Satterthwaite one of race.py (V_img known).

Power: a two-sided test at `level` resolves a true difference D with probability `power` when
(z_(1-a/2) + z_power) * sd <= D, sd from the model variance (not compare's narrower one, which
would promise resolution it cannot deliver). Seeds alone cannot when V_img alone exceeds
(D / (z + z))^2; then images_needed() says how many validation images would, at a given n.
numpy/scipy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .race import SeedVariance

KINDS = ("compare", "t")


@dataclass(frozen=True)
class VarianceParts:
    diff: float  # mean_a - mean_b over the seeds so far
    seed_var: float  # s2: one run's seed variance
    seed_df: float  # its degrees of freedom
    image_var: float  # V_img of the difference of seed-means, at n_images images
    n_images: int
    n_a: int  # seeds run so far
    n_b: int

    def variance(self, n_seeds: int, n_images: int | None = None, kind: str = "t") -> float:
        """var(mean_a - mean_b) at n_seeds a side and n_images images (default: as now); "compare":
        the two-level bootstrap's, whose seed part is (n-1)/n of the model's."""
        _check_kind(kind)
        if n_seeds < 1:
            raise ValueError(f"n_seeds: got {n_seeds}; need >= 1")
        shrink = (n_seeds - 1) / n_seeds if kind == "compare" else 1.0
        return self.image_part(n_images) + 2 * shrink * self.seed_var / n_seeds

    def image_part(self, n_images: int | None = None) -> float:
        """V_img at n_images (default: as now): it scales as 1 / images."""
        images = self.n_images if n_images is None else n_images
        if images < 1:
            raise ValueError(f"n_images: got {images}; need >= 1")
        return self.image_var * self.n_images / images

    def width(
        self, n_seeds: int, n_images: int | None = None, kind: str = "compare", level: float = 0.95
    ) -> float:
        """Predicted width (hi - lo) of the level interval at n_seeds a side (module docstring)."""
        _check_level(level)
        var = self.variance(n_seeds, n_images, kind)
        seed_part = var - self.image_part(n_images)
        p = 0.5 + level / 2
        if kind == "compare" or math.isinf(self.seed_df) or seed_part <= 0:
            return float(2 * stats.norm.ppf(p) * math.sqrt(var))
        df = self.seed_df * (var / seed_part) ** 2  # Welch-Satterthwaite, V_img known (race.py)
        return float(2 * stats.t.ppf(p, df) * math.sqrt(var))

    def seeds_needed(
        self, target: float, power: float = 0.8, level: float = 0.95, n_images: int | None = None
    ) -> int | None:
        """The fewest seeds a side that resolve a true difference target with this power at this
        level; None when the image part alone does not allow it (see images_needed)."""
        room = _room(target, power, level) - self.image_part(n_images)
        if room <= 0:
            return None
        return max(1, math.ceil(2 * self.seed_var / room - 1e-9))

    def images_needed(
        self, target: float, n_seeds: int, power: float = 0.8, level: float = 0.95
    ) -> int | None:
        """The fewest validation images that, with n_seeds a side, resolve target; None when the
        seed part alone does not allow it (more seeds needed)."""
        room = _room(target, power, level) - 2 * self.seed_var / n_seeds
        if room <= 0:
            return None
        return max(1, math.ceil(self.image_var * self.n_images / room - 1e-9))

    def advice(
        self,
        target: float | None = None,
        power: float = 0.8,
        level: float = 0.95,
        max_seeds: int = 5,
    ) -> str:
        """One line, e.g. "to resolve +0.010: about 7 seeds a side (9 runs more)". target:
        default the observed difference's size."""
        d = abs(self.diff) if target is None else target
        n = self.seeds_needed(d, power, level)
        head = f"to resolve {d:+.3f} ({power:.0%} power, {level:.0%} level)"
        if n is not None:
            more = max(0, n - self.n_a) + max(0, n - self.n_b)
            return f"{head}: about {n} seeds a side ({more} runs more)"
        allowed = math.sqrt(_room(d, power, level))
        why = (
            f"{head}: seeds alone cannot (the image part alone, sd {math.sqrt(self.image_var):.4f}"
            f" at {self.n_images} images, exceeds the {allowed:.4f} it allows)"
        )
        images = self.images_needed(d, max_seeds, power, level)
        if images is None:
            least = math.floor(2 * self.seed_var / _room(d, power, level)) + 1
            return (
                f"{why}; nor can {max_seeds} seeds a side with any images (it takes {least}+ "
                "seeds a side)"
            )
        return f"{why}; with {max_seeds} seeds a side about {images} validation images"


def variance_parts(
    values_a: Sequence[float],
    values_b: Sequence[float],
    image_var: float,
    n_images: int,
    seed_var: SeedVariance | None = None,
) -> VarianceParts:
    """The parts from two configs' per-seed values and V_img at n_images. seed_var: use this s2
    (the grid's pooled one, a prior) instead of the two configs' own. ValueError for fewer than two
    seeds on a side (without seed_var), non-finite values, or V_img < 0."""
    a, b = np.asarray(values_a, np.float64), np.asarray(values_b, np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or not len(a) or not len(b):
        raise ValueError(f"values: need finite values on each side; got {list(a)}, {list(b)}")
    if seed_var is None and min(len(a), len(b)) < 2:
        raise ValueError(
            f"need >= 2 seeds a side to estimate the seed variance; got {len(a)} and {len(b)} "
            "(or pass seed_var: a pooled or prior one)"
        )
    if not (math.isfinite(image_var) and image_var >= 0):
        raise ValueError(f"image_var: got {image_var}; need a finite value >= 0")
    if n_images < 1:
        raise ValueError(f"n_images: got {n_images}; need >= 1")
    if seed_var is None:
        df = len(a) + len(b) - 2
        s2 = (((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()) / df
        seed_var = SeedVariance(float(s2), df, "the two configs")
    diff = float(a.mean() - b.mean())
    return VarianceParts(diff, seed_var.value, seed_var.df, image_var, n_images, len(a), len(b))


def _room(target: float, power: float, level: float) -> float:
    """(D / (z_(1-a/2) + z_power))^2: the largest variance that resolves D."""
    if not (math.isfinite(target) and target > 0):
        raise ValueError(f"target difference: got {target}; need > 0 (in metric units)")
    _check_level(level)
    if not 0 < power < 1:
        raise ValueError(f"power: got {power}; need 0 < power < 1")
    z = stats.norm.ppf(0.5 + level / 2) + stats.norm.ppf(power)
    return float((target / z) ** 2)


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level: got {level}; need 0 < level < 1 (e.g. 0.95)")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown interval kind {kind!r}; choose from {list(KINDS)}")
