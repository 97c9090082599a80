"""Futility in a race: can the seeds left up to the cap still separate a config from the best?

A config that the race can no longer tell apart from the best by --max-seeds ends "within noise"
at the cap whatever its last seeds score; those seeds buy nothing. Stochastic curtailment (Lan,
Simon & Halperin 1982, Commun. Stat. C 1(3)) stops it early: its conditional power, the chance
that its interval at the cap excludes 0 given the seeds so far, under the current trend (the true
difference is the one observed; Lan & Wittes 1988, Biometrics 44(2)), is below a floor.

With the B-value of Lan & Wittes: at information fraction t = V_cap / V_now (V: the variance of
mean_best - mean_config now and with both sides at the cap; information is 1 / V), Z_now the
observed difference over sqrt(V_now), and z the one-sided critical value at the cap,

    CP = 1 - Phi((z - Z_now / sqrt(t)) / sqrt(1 - t))

V_cap follows metrics/race.py's model, V = V_img + V_seed. With n_b, n_c seeds, k = 1/n_b + 1/n_c:
the seed part shrinks with k, and so does the run x image part of V_img (a run's own hits and
misses, r per run: r * k of V_img); the rest of V_img (config x image effects: what each config
is good at on these images) does not. So

    V_cap = (V_img - r k_now) + (r k_now + V_seed) * k_cap / k_now,    k_cap = 2 / max_seeds.

With no estimate of r the whole of V_img is taken to shrink with seeds: that overstates what
more seeds can do, so fewer configs stop. Normal quantiles throughout (the Welch df of the
interval are left out: the rule is a stopping heuristic, it never makes a config "out"), and z
at the round's level before Holm's split (the most lenient test the config could get), both of
which again overstate CP. scipy, imported when called: the sweep command imports the default.
"""

from __future__ import annotations

import math

DEFAULT_FUTILITY = 0.0  # off: the race's best among near-ties keeps every seed (README, racing)


def variance_at_cap(
    v_img: float, v_seed: float, run_image: float, n_best: int, n_config: int, max_seeds: int
) -> float:
    """V_cap: the variance of mean_best - mean_config once both sides have max_seeds seeds.
    run_image: the run x image part of one run's variance (0: unknown, all of V_img shrinks)."""
    k_now, k_cap = 1.0 / n_best + 1.0 / n_config, 2.0 / max_seeds
    shrinking = min(run_image * k_now, v_img) if run_image > 0 else v_img
    return (v_img - shrinking) + (shrinking + v_seed) * k_cap / k_now


def conditional_power(diff: float, v_now: float, v_cap: float, level: float) -> float:
    """The chance, under the current trend, that the one-sided test at `level` rejects at the cap.
    diff: the observed difference in the direction of the best (>= 0 when the best leads);
    v_now, v_cap: its variance now and at the cap. 1.0 when the seeds left add no information
    and the difference is already resolved, 0.0 when they add none and it is not."""
    from scipy import stats

    if not (v_now > 0 and math.isfinite(diff)):
        return 1.0  # nothing to judge by: never stop on it
    z = float(stats.norm.ppf(1 - level))
    z_now = diff / math.sqrt(v_now)
    t = min(max(v_cap / v_now, 0.0), 1.0)
    if t >= 1.0:
        return 1.0 if z_now >= z else 0.0
    if t == 0.0:  # the cap would know the difference exactly
        return 1.0 if diff > 0 else 0.0
    return float(stats.norm.sf((z - z_now / math.sqrt(t)) / math.sqrt(1 - t)))
