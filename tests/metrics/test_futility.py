"""Futility in a race: the conditional power against a hand case and against the seeds it
predicts, simulated; the variance at the cap against the two-level model's closed form; and the
rule inside decide_round (who stops, what it records, that it is final and never "out")."""

import math

import numpy as np
import pytest
from scipy import stats

from focalbench.metrics.futility import conditional_power, variance_at_cap
from focalbench.metrics.race import FUTILE, OUT, RACING, SeedVariance, decide_round, replay


def test_conditional_power_by_hand():
    # t = 0.5, Z_now = 1, one-sided 5%: 1 - Phi((1.6449 - 1 / sqrt(0.5)) / sqrt(0.5))
    z = stats.norm.ppf(0.95)
    want = 1 - stats.norm.cdf((z - 1 / math.sqrt(0.5)) / math.sqrt(0.5))
    assert conditional_power(0.01, 1e-4, 0.5e-4, 0.05) == pytest.approx(want)
    assert want == pytest.approx(0.3721, abs=1e-4)
    # no information left: the answer cannot change
    assert conditional_power(0.01, 1e-4, 1e-4, 0.05) == 0.0
    assert conditional_power(0.03, 1e-4, 1e-4, 0.05) == 1.0
    assert conditional_power(0.01, 0.0, 0.0, 0.05) == 1.0  # nothing to judge by: never stop


@pytest.mark.parametrize("n, mean", [(2, 0.004), (2, 0.012), (3, 0.008), (1, 0.02)])
def test_conditional_power_is_the_chance_the_last_seeds_resolve_it(n, mean):
    """Seed noise only: per-seed differences x_s ~ N(delta, sigma^2). Given the n seen (mean m),
    draw the cap - n left at the current trend (delta = m) and test the mean of all at the cap."""
    sigma, cap, level = 0.015, 5, 0.05
    rng = np.random.default_rng(n)
    future = rng.normal(mean, sigma, (200_000, cap - n)).sum(1)
    final = (n * mean + future) / cap
    simulated = np.mean(final / (sigma / math.sqrt(cap)) > stats.norm.ppf(1 - level))
    predicted = conditional_power(mean, sigma**2 / n, sigma**2 / cap, level)
    assert predicted == pytest.approx(simulated, abs=0.005)


def test_variance_at_cap_is_the_models_variance_with_every_seed():
    """Two-level model (scripts/bench_race.py): V(n) = 2 (c^2 + e^2 / n) / I + 2 u^2 / n for n
    seeds a side; the run x image part of one run is e^2 / I. From n = 2 parts, V(5)."""
    c, e, u, images = 0.022, 0.119, 0.0066, 80
    r = e**2 / images

    def v(n):  # (V_img, V_seed) with n seeds a side
        return 2 * (c**2 + e**2 / n) / images, 2 * u**2 / n

    v_img, v_seed = v(2)
    assert variance_at_cap(v_img, v_seed, r, 2, 2, 5) == pytest.approx(sum(v(5)))
    # best ahead by seeds (3 vs 2): k_now = 1/3 + 1/2
    k = 1 / 3 + 1 / 2
    v_img, v_seed = 2 * c**2 / images + r * k, u**2 * k
    assert variance_at_cap(v_img, v_seed, r, 3, 2, 5) == pytest.approx(sum(v(5)))
    # the run x image part unknown: all of V_img shrinks with the seeds (more than it does)
    v_img, v_seed = v(2)
    assert variance_at_cap(v_img, v_seed, 0.0, 2, 2, 5) == pytest.approx((v_img + v_seed) * 2 / 5)
    assert variance_at_cap(v_img, v_seed, 0.0, 2, 2, 5) < sum(v(5))


def test_a_near_tie_stops_as_futile_a_larger_gap_races_on():
    prior = SeedVariance(1e-4, math.inf, "known")  # V_seed = 1e-4 with 2 seeds a side
    values = {"a": [0.360, 0.362], "b": [0.359, 0.361], "c": [0.340, 0.344]}
    r = decide_round(values, lambda *_: 1e-4, max_seeds=5, prior=prior, futility=0.2)
    b, c = r.decision("b"), r.decision("c")
    a_r = 0.05 / 5  # 5 rounds can eliminate with a prior
    for d in (b, c):  # V_now = 2e-4; nothing known of the run x image part: all shrinks
        assert d.cp == pytest.approx(conditional_power(d.diff, 2e-4, 2e-4 * 2 / 5, a_r))
    assert b.cp < 0.2 and b.status == FUTILE and b.lo <= 0 <= b.hi  # within noise, not out
    assert c.cp >= 0.2 and c.status == RACING
    assert r.to_train() == ["a", "c"] and not r.finished
    off = decide_round(values, lambda *_: 1e-4, max_seeds=5, prior=prior)  # the default: off
    assert off.decision("b").status == RACING and math.isnan(off.decision("b").cp)
    # final: b stays futile when c takes the lead, and is never made out
    later = decide_round(
        {"a": [0.360, 0.362, 0.30], "b": values["b"], "c": [0.340, 0.344, 0.40]},
        lambda *_: 1e-4,
        r,
        max_seeds=5,
        prior=prior,
        futility=0.2,
    )
    assert later.best == "c" and later.decision("b") == b
    assert later.decision("a").status in (RACING, FUTILE, OUT)
    # one seed (no own trend yet) or no seed left to give: not judged
    first = decide_round(
        {k: v[:1] for k, v in values.items()}, lambda *_: 1e-4, prior=prior, futility=0.2
    )
    assert first.decision("b").status == RACING and math.isnan(first.decision("b").cp)
    last = decide_round(values, lambda *_: 1e-4, max_seeds=2, prior=prior, futility=0.2)
    assert last.decision("b").status == RACING and math.isnan(last.decision("b").cp)


def test_bad_futility_raises():
    for bad in (-0.1, 1.0, math.nan):
        with pytest.raises(ValueError, match="futility"):
            decide_round({"a": [0.3], "b": [0.2]}, lambda *_: 0.0, futility=bad)


def _races(futility, n_races=150, seed=0):
    """Races of 6 configs, 5 seeds at most (tests/metrics/test_race.py's model: a near-twin of
    the best, seed sd 0.0127, V_img 0.004^2 a pair). (share of races where the best ends out,
    where it is stopped as futile, mean share of the 30 runs used)."""
    mu = np.array([0.333, 0.3329, 0.31, 0.30, 0.28, 0.27])
    rng = np.random.default_rng(seed)
    out = futile = runs = 0
    for _ in range(n_races):
        w = rng.normal(0, 0.004 / math.sqrt(2), 6)
        value = mu[:, None] + w[:, None] + rng.normal(0, 0.0127, (6, 5))
        history = {f"c{i}": list(value[i]) for i in range(6)}
        end = replay(history, lambda *_: 0.004**2, futility=futility)[-1]
        out += end.decision("c0").status == OUT
        futile += end.decision("c0").status == FUTILE
        runs += sum(d.n_seeds for d in end.decisions) / 30
    return out / n_races, futile / n_races, runs / n_races


def test_simulation_futility_saves_runs_and_never_puts_the_best_out():
    out_off, futile_off, runs_off = _races(0.0)
    out_on, futile_on, runs_on = _races(0.2)
    assert futile_off == 0 and futile_on > 0.2  # the near-twin ties: one stops the other
    assert out_on <= out_off + 0.02 and out_on <= 0.10  # futility never makes a config out
    assert runs_on < runs_off - 0.08  # measured: 0.70 -> 0.56 of the 30 runs


def test_the_command_line_default_is_the_rules():
    import inspect

    from focalbench.cli.sweep import sweep
    from focalbench.metrics.futility import DEFAULT_FUTILITY
    from focalbench.metrics.race import decide_round as rule
    from focalbench.sweep.race import run_race

    for fn in (sweep, rule, run_race):
        assert inspect.signature(fn).parameters["futility"].default == DEFAULT_FUTILITY
