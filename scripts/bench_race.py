"""Simulation (issue "answers per compute minute"): does racing a 20-config grid keep the truly best
config, and how many of the full grid's runs does it save? metrics/race.py's rule, unchanged, on
per-image scores drawn from a two-level model with known config means:

    score[c, s, i] = mu_c + u[c, s] + w[c, i] + e[c, s, i] + v[i]

u: a whole-run seed shift; e: run x image noise (a run's own hits and misses); w: config x image
(what a config is good at; seeds do not average it away); v: shared image difficulty (cancels in
differences). A run's metric is its mean over the I validation images. Each race draws a new
validation set (w, v) and new runs, so the target is mu (the population of images), as the image
bootstrap assumes. V_img of a pair is computed exactly: the plug-in variance of the mean over
images of the per-image difference of the two seed-means, which is what the one-level image
bootstrap with seeds held fixed estimates (n_boot -> inf).

Reported per max-seeds cap (3, 4, 5), --futility (0.2, 0.1, 0: off) and prior (none / one from 36
earlier runs, df 24): the share of races whose truly best config ends "out" (goal <= 5%) or stops
as futile (within noise, not out), the mean share of the full grid's runs (20 x cap) used (goal
<= 60% at cap 5), how often the race's best is the truly best and its true gap to it (what
futility costs), the share of configs >= FAR below the best that end out (the race's power) and
how many are left at the end. Two scenarios: `grid` (the means below) and `cluster`, the least
favourable one for keeping the best: a near-twin 0.0001 below it and 18 configs far below, which
leave early, so that Holm's later steps and every round test the two. s2 "net": the seed variance
less its run x image part (the runner's rule); "whole": s2 as it is (conservative). One row per
scenario with a deliberately wrong rule (seed variance 0: images only) shows the measure can fail.

    PYTHONPATH=. python scripts/bench_race.py [--races 1000] [--seed 0] [--images 80]
    PYTHONPATH=. python scripts/bench_race.py --from results/runs.csv   # fit the model to a grid
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from focalbench.metrics.race import DEFAULT_FUTILITY, FUTILE, OUT, SeedVariance, decide_round

# --- the model, as measured -------------------------------------------------------------------
# Fitted by `--from` to the full focal alpha x gamma grid at the demo_sweep budget (60 runs:
# `focalbench sweep hparams_search=focal_alpha_gamma experiment=demo_sweep seed=0,1,2`, 2026-12-07;
# results/reference/race/grid_runs.csv): 3-seed means, and the noise parts (see fit()).
ALPHAS = ("0.25", "0.5", "0.75", "off")
GAMMAS = ("0", "0.5", "1", "2", "5")
MEANS = np.array(
    [
        [0.2831, 0.3343, 0.3574, 0.3426, 0.2781],  # alpha 0.25
        [0.3073, 0.3538, 0.3518, 0.3272, 0.2861],  # alpha 0.5
        [0.3134, 0.3539, 0.3340, 0.3262, 0.2758],  # alpha 0.75
        [0.2985, 0.3428, 0.3509, 0.3377, 0.2866],  # alpha off
    ]
)
N_IMAGES = 80  # demo_sweep's validation set
# A run's seed sd of mAP on the fixed validation set is 0.0148 (pooled, df 40): a whole-run shift
# of sd 0.0066 and run x image noise of sd 0.119 per image (0.119 / sqrt(80) = 0.0133).
SEED_SD = 0.0066
RUN_IMAGE_SD = 0.119
CONFIG_IMAGE_SD = 0.022  # config x image effects (what a config is good at): do not average away
SHARED_IMAGE_SD = 0.15  # image difficulty shared by every config: cancels in differences
PRIOR_DF = 24  # a prior pooled from 12 earlier configs x 3 seeds of the same budget
FAR = 0.02  # configs at least this far below the best: what the race should resolve (power)
# ------------------------------------------------------------------------------------------------

NAMES = [f"a{a}_g{g}" for a in ALPHAS for g in GAMMAS]
SCENARIOS = {  # the true means
    "grid": MEANS.ravel(),
    "cluster": np.r_[MEANS.max(), MEANS.max() - 1e-4, np.full(18, MEANS.min())],
}


def fit(csv_path: str, metric: str = "mAP") -> tuple[list[str], np.ndarray, dict[str, float]]:
    """The model's parameters measured on a grid's runs (every config with the same seeds):
    config means; the pooled seed variance of a run s2 (df: sum of n - 1); and, from the image
    bootstrap of compare (metrics/race.image_variance, seeds held) of every config against the
    best, V_1 (seed 0 a side) and V_n (all n seeds a side). Under the model
    V_n = 2 (CONFIG_IMAGE_SD^2 + RUN_IMAGE_SD^2 / n) / I, so V_1 - V_n gives RUN_IMAGE_SD and
    V_n the config x image part; SEED_SD^2 = s2 - RUN_IMAGE_SD^2 / I (the whole-run shift)."""
    from focalbench.metrics.bootstrap import image_variance
    from focalbench.results.compare import Run, scorers
    from focalbench.results.run_files import folder_of
    from focalbench.results.store import latest_rows, read_rows

    rows = [r for r in latest_rows(read_rows(csv_path)).values() if r["status"] == "ok"]
    groups: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        groups.setdefault(r["config_id"], []).append(r)
    names = {c: f"a{g[0]['alpha'] or 'off'}_g{g[0]['gamma']}" for c, g in groups.items()}
    n = max(len(g) for g in groups.values())
    groups = {c: sorted(g, key=lambda r: int(r["seed"])) for c, g in groups.items() if len(g) == n}
    mu = {c: float(np.mean([float(r[metric]) for r in g[:n]])) for c, g in groups.items()}
    s2 = float(
        np.mean([np.var([float(r[metric]) for r in g[:n]], ddof=1) for g in groups.values()])
    )
    gts: dict = {}
    runs = {}
    for c, g in groups.items():
        folders = [Run(r["run_id"], folder_of(r, Path(csv_path)), int(r["seed"])) for r in g]
        runs[c] = scorers(folders, [metric], gts)
    n_images = runs[next(iter(runs))][0].n_images
    best = max(mu, key=mu.get)
    v1, vn = [], []
    for c in groups:
        if c != best:
            v1.append(image_variance(runs[best][:1], runs[c][:1], metric, 400))
            vn.append(image_variance(runs[best], runs[c], metric, 400))
    run_image2 = max(np.mean(v1) - np.mean(vn), 0.0) * n_images / 2 / (1 - 1 / n)
    config_image2 = max(np.mean(vn) * n_images / 2 - run_image2 / n, 0.0)
    params = {
        "SEED_SD": math.sqrt(max(s2 - run_image2 / n_images, 0.0)),
        "RUN_IMAGE_SD": math.sqrt(run_image2),
        "CONFIG_IMAGE_SD": math.sqrt(config_image2),
        "N_IMAGES": n_images,
        "seeds": n,
        "pooled seed sd": math.sqrt(s2),
    }
    order = sorted(groups, key=lambda c: names[c])
    return [names[c] for c in order], np.array([mu[c] for c in order]), params


def derived(mu: np.ndarray, n_images: int, noise: Noise) -> str:
    seed_sd = math.sqrt(noise.seed_sd**2 + noise.run_image_sd**2 / n_images)
    img3 = math.sqrt(2 * (noise.config_image_sd**2 + noise.run_image_sd**2 / 3) / n_images)
    half3 = 1.96 * math.sqrt(img3**2 + 2 * (2 / 3) * seed_sd**2 / 3)
    return (
        f"{len(mu)} configs, means {mu.min():.3f}-{mu.max():.3f} (best {mu.max():.4f}, next "
        f"{np.sort(mu)[-2]:.4f}); {n_images} images; seed sd of a run {seed_sd:.4f}; image sd "
        f"of a 3-seed difference {img3:.4f}; compare's 3-seed 95% half-width ~{half3:.3f}"
    )


@dataclass(frozen=True)
class Noise:
    seed_sd: float = SEED_SD
    run_image_sd: float = RUN_IMAGE_SD
    config_image_sd: float = CONFIG_IMAGE_SD


class World:
    """One race's validation set and runs: every seed up to the cap drawn up front."""

    def __init__(self, rng: np.random.Generator, mu: np.ndarray, n_images: int, seeds: int,
                 noise: Noise, names: list[str]) -> None:  # fmt: skip
        C, K, n = len(mu), seeds, n_images
        w = rng.normal(0, noise.config_image_sd, (C, n))
        v = rng.normal(0, SHARED_IMAGE_SD, n)
        u = rng.normal(0, noise.seed_sd, (C, K))
        e = rng.normal(0, noise.run_image_sd, (C, K, n))
        self.score = mu[:, None, None] + u[:, :, None] + w[:, None, :] + e + v  # [C, K, n]
        self.value = self.score.mean(2)  # [C, K] each run's metric
        self.index = {n: i for i, n in enumerate(names)}

    def run_noise(self, c: str) -> float:
        """The exact bootstrap variance of run_0 - run_1 of config c, halved."""
        i = self.index[c]
        d = self.score[i, 0] - self.score[i, 1]
        return float(d.var() / len(d)) / 2

    def image_var(self, a: str, b: str, n_a: int, n_b: int) -> float:
        """The exact one-level bootstrap variance of mean_a - mean_b, seeds held fixed."""
        ia, ib = self.index[a], self.index[b]
        d = self.score[ia, :n_a].mean(0) - self.score[ib, :n_b].mean(0)  # [I]
        return float(d.var() / len(d))


def race(
    rng: np.random.Generator,
    mu: np.ndarray,
    n_images: int,
    max_seeds: int,
    prior: str,
    level: float,
    noise: Noise,
    names: list[str],
    net: bool = True,
    futility: float = DEFAULT_FUTILITY,
) -> tuple[float, ...]:
    """(truly best out, truly best stopped as futile, share of the full grid's runs used, best
    picked, configs not out, share of the configs >= FAR below the best that end out, the true
    gap of the config picked)."""
    world = World(rng, mu, n_images, max_seeds, noise, names)
    s2_true = noise.seed_sd**2 + noise.run_image_sd**2 / n_images
    if prior == "earlier runs":
        p = SeedVariance(s2_true * rng.chisquare(PRIOR_DF) / PRIOR_DF, PRIOR_DF, "earlier runs")
    elif prior == "WRONG: images only":
        p = SeedVariance(0.0, math.inf, "seed variance 0")
    else:
        p = None
    prev, runs = None, 0
    for r in range(1, max_seeds + 1):
        alive = names if prev is None else prev.to_train()
        runs += len(alive)
        kept = {} if prev is None else {d.config: d.n_seeds for d in prev.decisions}
        values = {
            n: world.value[world.index[n], : r if n in alive else kept[n]].tolist() for n in names
        }
        prev = decide_round(values, world.image_var, prev, max_seeds=max_seeds, level=level,
                            futility=futility, prior=p,
                            run_noise=world.run_noise if net else None)  # fmt: skip
        if prev.finished:
            break
    assert prev is not None
    top = names[int(mu.argmax())]
    status = {d.config: d.status for d in prev.decisions}
    far = [c for c, m in zip(names, mu) if mu.max() - m >= FAR]
    return (
        status[top] == OUT,
        status[top] == FUTILE,
        runs / (len(names) * max_seeds),
        prev.best == top,
        sum(s != OUT for s in status.values()),
        np.mean([status[c] == OUT for c in far]) if far else math.nan,
        mu.max() - mu[names.index(prev.best)],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--races", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--level", type=float, default=0.05)
    ap.add_argument("--images", type=int, default=None, help="validation images")
    ap.add_argument("--from", dest="csv", help="fit means and noise to this grid's runs.csv")
    args = ap.parse_args()
    names, scenarios, noise, n_images = NAMES, SCENARIOS, Noise(), N_IMAGES
    if args.csv:
        names, mu, params = fit(args.csv)
        print(f"fitted to {args.csv}: " + ", ".join(f"{k} {v:.4g}" for k, v in params.items()))
        for name, m in zip(names, mu):
            print(f"  {name}: {m:.4f}")
        noise = Noise(params["SEED_SD"], params["RUN_IMAGE_SD"], params["CONFIG_IMAGE_SD"])
        n_images = int(params["N_IMAGES"])
        cluster = np.r_[mu.max(), mu.max() - 1e-4, np.full(len(mu) - 2, mu.min())]
        scenarios = {"grid": mu, "cluster": cluster}
    n_images = args.images or n_images
    print(f"{args.races} races per row, level {args.level}")
    priors = ("none", "earlier runs")
    wrong = (5, "WRONG: images only", True, 0.0)
    rows = {  # (max seeds, prior, s2 net of its run x image part, futility)
        "grid": [(k, p, True, f) for f in (0.2, 0.1, 0.0) for p in priors
                 for k in (3, 4, 5)] + [(5, p, False, 0.0) for p in priors] + [wrong],
        "cluster": [(5, p, True, f) for f in (0.2, 0.0) for p in priors]
        + [(5, p, False, 0.0) for p in priors] + [wrong],
    }  # fmt: skip
    for scenario, mu in scenarios.items():
        print(f"\n{scenario}: {derived(mu, n_images, noise)}\n")
        head = (f"{'max seeds':>9} | {'futility':>8} | {'seed-variance prior':<20} | {'s2':<5} | "
                f"{'best out':>11} | {'best futile':>11} | {'runs used':>9} | ")  # fmt: skip
        print(head + f"{'best picked':>11} | {'far out':>7} | {'regret':>6} | {'left':>4} | s")
        print("-" * (len(head) + 51))
        for k, prior, net, futility in rows[scenario]:
            t0 = time.perf_counter()
            rng = np.random.default_rng([args.seed, k, len(prior), len(scenario)])
            res = [race(rng, mu, n_images, k, prior, args.level, noise, names, net, futility)
                   for _ in range(args.races)]  # fmt: skip
            out, futile, used, picked, left, far, regret = np.nanmean(np.array(res), axis=0)
            se = math.sqrt(max(out * (1 - out), 1e-12) / args.races)
            print(
                f"{k:>9} | {futility:>8.2g} | {prior:<20} | {'net' if net else 'whole':<5} | "
                f"{out:>5.1%} ±{se:.1%} | {futile:>11.1%} | {used:>9.1%} | {picked:>11.1%} | "
                f"{far:>7.1%} | {regret:>6.4f} | {left:>4.1f} | {time.perf_counter() - t0:.0f}"
            )
    print("\nbest out: the truly best config ends 'out' (± its standard error); best futile: it")
    print("stops early within noise of the race's best (futility; not out); runs used: of the full")
    print("grid's configs x max-seeds runs; best picked: the race's best is the truly best; far")
    print(f"out: the configs >= {FAR} below the best that end out (the race's power); regret: the")
    print("true gap of the race's best to the truly best; left: configs not out at the end")


if __name__ == "__main__":
    main()
