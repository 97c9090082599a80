"""Racing a sweep grid (issue "answers per compute minute"): after each round of seeds, drop the
configs that are beyond noise worse than the current best. A pure rule: the sweep runner calls
decide_round() after round r (seed r of every config still racing), or replay() to resume.

Model. A config's value is the mean of its n seeds' full-set metrics. For the best b and config c

    var(mean_b - mean_c) = V_img + s2 * (1/n_b + 1/n_c)

V_img: the image-level variance of the difference of the two seed-means (the validation images are
a sample; bootstrap.image_variance() estimates it with a paired image bootstrap, each side's seeds
held fixed). Its config x image part does not shrink with seeds (the run x image part does). s2: one
run's seed variance, assumed equal for every config of the grid (same data, schedule, budget), so
pooled: within-config sample variances of the configs with >= 2 seeds, df-weighted, pooled with
a prior (SeedVariance from earlier ok runs of the same budget; df = inf: known, used alone). The
image bootstrap alone understates the noise, so with no s2 (round 1, no prior) nothing is decided.
V_img and s2 overlap: a run's own hits and misses (run x image noise, e) are in both, since the
bootstrap holds the seeds fixed but resamples the images each run scored, and on the fixed
validation set s2 = var(whole-run shift) + var(e) / I. That part is measured where a config has
two seeds: half the image-bootstrap variance of seed 0 - seed 1 of one config (config x image
effects cancel in it) is var(e) / I; averaged over those configs (RunNoise) it is taken off s2,
V_seed = max(s2 - var(e) / I, 0) * (1/n_b + 1/n_c). Without it (run_noise None) s2 is used whole:
conservative. scripts/bench_race.py fits the parts to a grid's runs: on the focal alpha x gamma
grid at the demo budget nearly all of s2 was run x image noise.
se = sqrt(V_img + V_seed); t quantiles at the Welch-Satterthwaite df with V_img taken as known and
the estimation error s2's (var 2 s2^2 / df_s2): df = df_s2 * ((V_img + V_seed) / (k s2))^2 with
k = 1/n_b + 1/n_c (normal when s2 is known).

The rule. level is the chance, under the model, that the truly best config c* leaves the race.
  * Rounds: a_r = level / R, R = the rounds that can eliminate (max_seeds; max_seeds - 1 with no
    prior): a union bound over rounds, valid however correlated the rounds are. Testing each
    round at the full level is not (repeated significance tests, Armitage, McPherson & Rowe
    1969): with a near-twin of c* it loses c* in 15% of the races of tests/metrics/test_race.py.
  * Within a round, over the k configs racing besides the best: Holm, step down. Order them by
    one-sided p-value; the j-th (j = 0..k-1) leaves when its one-sided bound at a_r / (k - j)
    excludes 0; the steps stop at the first that does not. One-sided because only one direction
    can eliminate (the best has the highest mean). Why it protects c*: c* leaves only if some
    config's mean beats c*'s by more than its bound, and the first step is Bonferroni over the k
    configs that could (the screening of Nelson, Swann, Goldsman & Song 2001, Oper. Res. 49(6));
    configs Holm removes before c* have smaller p-values, so lie below c*, and do not add
    competitors. The simulation checks it.
  * Each interval [lo, hi] is two-sided at confidence 1 - 2 a (a: its step's one-sided level;
    after the first kept config, that step's): lo > 0 (hi < 0 when lower is better) <=> out.
  * margin D: a racing config with [lo, hi] inside [-D, +D] is tied and stops (two one-sided
    tests at a, Schuirmann 1987).
  * The best is the racing config with the highest mean (lowest when lower is better; equal
    means: the first in input order), never compared with itself, so never eliminated. When
    another config takes the lead, every racing config is compared with the new best. Configs
    that left (out, tied) stay out even if the new best falls below them: as in any race (Maron &
    Moore's Hoeffding races, F-race) a decision is final; that keeps the per-round error bound and
    makes a race replayable from its rows.
  * futility P (0: off, the default; 0.2 suggested): from its second seed on, a racing config
    whose chance to leave by the cap (metrics/futility.py's conditional power) is below P stops
    as futile, within noise of the best. It never makes a config out, but it stops near-ties of
    the best early, so the race's best among them rests on fewer seeds (bench_race.py).
  * The race ends when no config is racing besides the best (one left, or the rest
    tied/futile/out) or round max_seeds is done; those still racing then are noise_at_cap
    (within noise at the cap).

Deterministic: the same values (seed order) and V_img give the same decisions, so replay()
resumes a race exactly. numpy/scipy only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from .futility import DEFAULT_FUTILITY, conditional_power, variance_at_cap

RACING, BEST, OUT, TIED, FUTILE = "racing", "best", "out", "tied", "futile"
NOISE_AT_CAP = "noise_at_cap"
STATUSES = (RACING, BEST, OUT, TIED, FUTILE, NOISE_AT_CAP)
LEFT = (OUT, TIED, FUTILE)  # final: a config that left keeps its decision

# (best, config, n_best, n_config) -> V_img: the image-level variance of mean_best - mean_config,
# each side's mean over its first n seeds (seed order)
ImageVariance = Callable[[str, str, int, int], float]
# config -> half the image-level variance of run_seed0 - run_seed1 of that config: the run x image
# part of one run's variance (config x image effects cancel in the difference)
RunNoise = Callable[[str], float]


@dataclass(frozen=True)
class SeedVariance:
    value: float  # s2: variance of one run's full-set metric around its config's mean
    df: float  # degrees of freedom; math.inf: known
    source: str  # where it comes from, for the decision record

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and self.value >= 0):
            raise ValueError(f"seed variance: got {self.value}; need a finite value >= 0")
        if not self.df > 0:
            raise ValueError(f"seed variance df: got {self.df}; need > 0 (math.inf: known)")


@dataclass(frozen=True)
class Decision:
    config: str
    status: str  # one of STATUSES
    round: int  # the round of this decision (out, tied: the round the config left)
    n_seeds: int
    mean: float  # over its seeds
    diff: float  # mean_best - mean_config (0 for the best)
    lo: float  # its interval of best - config (NaN: not compared)
    hi: float
    v_img: float  # V_img of the pair (NaN: not compared)
    v_seed: float  # s2 * (1/n_best + 1/n_config)
    df: float  # of the t quantile (inf: normal)
    level: float  # one-sided level a of each end (round and Holm splits); [lo, hi] is 1 - 2a
    seed_source: str  # which seed variance the interval used
    cp: float = math.nan  # conditional power to leave by the cap (NaN: not judged)


@dataclass(frozen=True)
class RaceRound:
    round: int
    best: str
    decisions: tuple[Decision, ...]  # one per config, in input order
    seed_variance: SeedVariance | None  # None: no estimate yet, nothing decided
    round_level: float  # a_r (one-sided), split by Holm over the comparisons
    finished: bool
    why: str  # why the race ended ("" while it goes on)

    def decision(self, config: str) -> Decision:
        for d in self.decisions:
            if d.config == config:
                return d
        raise ValueError(
            f"unknown config {config!r}; choose from {[d.config for d in self.decisions]}"
        )

    def to_train(self) -> list[str]:
        """The configs that get the next seed (best first, then input order); [] once finished."""
        if self.finished:
            return []
        return [self.best] + [d.config for d in self.decisions if d.status == RACING]


def pooled_seed_variance(
    values: Mapping[str, Sequence[float]], prior: SeedVariance | None = None
) -> SeedVariance | None:
    """s2 pooled within configs: sum over configs with >= 2 seeds of sum (x - mean)^2, over
    sum (n - 1); pooled with the prior (df-weighted) when one is given; a prior with df = inf
    alone. None when there is neither."""
    ss, df, k = 0.0, 0, 0
    for x in values.values():
        if len(x) >= 2:
            a = np.asarray(x, dtype=np.float64)
            ss += float(((a - a.mean()) ** 2).sum())
            df, k = df + len(a) - 1, k + 1
    if prior is not None and (df == 0 or math.isinf(prior.df)):
        return prior
    if df == 0:
        return None
    grid = f"pooled over {k} configs of the grid (df {df})"
    if prior is None:
        return SeedVariance(ss / df, df, grid)
    total = df + prior.df
    return SeedVariance(
        (ss + prior.value * prior.df) / total,
        total,
        f"{grid} + prior {prior.source} (df {prior.df:g})",
    )


def round_level(level: float, max_seeds: int, has_prior: bool) -> float:
    """a_r: the level split evenly over the rounds that can eliminate (union bound over rounds)."""
    rounds = max_seeds if has_prior else max_seeds - 1
    return level / max(rounds, 1)


def decide_round(
    values: Mapping[str, Sequence[float]],
    image_var: ImageVariance,
    previous: RaceRound | None = None,
    *,
    max_seeds: int = 5,
    level: float = 0.05,
    margin: float | None = None,
    futility: float = DEFAULT_FUTILITY,
    lower_is_better: bool = False,
    prior: SeedVariance | None = None,
    run_noise: RunNoise | None = None,
) -> RaceRound:
    """The decisions after round previous.round + 1 (1 without previous).

    values: {config: its full-set metric per seed run so far, in seed order}; a config that left
    keeps the values it left with. image_var: see ImageVariance (called only for the pairs
    compared). run_noise: see RunNoise (None: nothing is taken off s2, conservative). ValueError
    for a config without values, non-finite values, a finished previous race, configs unlike the
    previous round's, or a level/margin/futility/max_seeds out of range.
    """
    _check(values, previous, max_seeds, level, margin, futility)
    r = 1 if previous is None else previous.round + 1
    old = {} if previous is None else {d.config: d for d in previous.decisions}
    means = {c: float(np.mean(x)) for c, x in values.items()}
    racing = [c for c in values if c not in old or old[c].status in (RACING, BEST)]
    sign = -1.0 if lower_is_better else 1.0
    best = max(racing, key=lambda c: sign * means[c])  # max keeps the first of equal means
    s2 = pooled_seed_variance(values, prior)
    shared = run_image_part(values, run_noise) if s2 else 0.0
    a_r = round_level(level, max_seeds, prior is not None)
    others = [c for c in racing if c != best]
    # no estimate of s2: nothing is compared (an interval on images alone would be too narrow)
    parts = {c: _parts(values, best, c, s2, shared, image_var) for c in others} if s2 else {}
    levels = _holm(parts, {c: means[best] - means[c] for c in parts}, a_r)
    source = s2.source if s2 else "none yet (round 1, no prior): nothing decided"
    if s2 and shared > 0:
        source += f"; less its run x image part {shared:.3g} (in the image bootstrap already)"
    out: list[Decision] = []
    for c in values:
        if c in old and old[c].status in LEFT:
            out.append(old[c])  # decisions are final
            continue
        diff = means[best] - means[c]
        lo = hi = v_img = v_seed = df = a = cp = math.nan
        status = BEST if c == best else RACING
        n = len(values[c])
        if c in parts:
            (v_img, v_seed, df), a = parts[c], levels[c]
            half = _quantile(a, df) * math.sqrt(v_img + v_seed)  # as in _excludes_zero
            lo, hi = diff - half, diff + half
            if lo > 0 or hi < 0:
                status = OUT
            elif margin is not None and lo >= -margin and hi <= margin:
                status = TIED
            elif futility > 0 and 2 <= n < max_seeds:
                v_cap = variance_at_cap(v_img, v_seed, shared, len(values[best]), n, max_seeds)
                cp = conditional_power(sign * diff, v_img + v_seed, v_cap, a_r)
                status = FUTILE if cp < futility else RACING
        out.append(
            Decision(c, status, r, n, means[c], diff, lo, hi, v_img, v_seed, df, a, source, cp)
        )
    why = ""
    if not any(d.status == RACING for d in out):
        why = _why_no_one_races(out)
    elif r >= max_seeds:
        why = f"max seeds ({max_seeds}) reached"
        out = [replace(d, status=NOISE_AT_CAP) if d.status == RACING else d for d in out]
    return RaceRound(r, best, tuple(out), s2, a_r, bool(why), why)


def replay(
    history: Mapping[str, Sequence[float]],
    image_var: ImageVariance,
    *,
    max_seeds: int = 5,
    level: float = 0.05,
    margin: float | None = None,
    futility: float = DEFAULT_FUTILITY,
    lower_is_better: bool = False,
    prior: SeedVariance | None = None,
    run_noise: RunNoise | None = None,
) -> list[RaceRound]:
    """Every round's decisions from the stored per-seed values (seed order), as decide_round made
    them one round at a time. A round is replayed only when every config racing in it has its
    value for that seed: the last RaceRound is where a resumed race goes on (its to_train()).
    Values of a config past the round it left are ignored."""
    rounds: list[RaceRound] = []
    prev: RaceRound | None = None
    for r in range(1, max_seeds + 1):
        in_race = set(history) if prev is None else set(prev.to_train())
        if any(len(history[c]) < r for c in in_race):
            break
        kept = {} if prev is None else {d.config: d.n_seeds for d in prev.decisions}
        values = {c: list(history[c][: r if c in in_race else kept[c]]) for c in history}
        prev = decide_round(
            values,
            image_var,
            prev,
            max_seeds=max_seeds,
            level=level,
            margin=margin,
            futility=futility,
            lower_is_better=lower_is_better,
            prior=prior,
            run_noise=run_noise,
        )
        rounds.append(prev)
        if prev.finished:
            break
    return rounds


def _check(
    values: Mapping[str, Sequence[float]],
    previous: RaceRound | None,
    max_seeds: int,
    level: float,
    margin: float | None,
    futility: float,
) -> None:
    if not values:
        raise ValueError("decide_round: no configs")
    for c, x in values.items():
        if len(x) == 0 or not np.isfinite(np.asarray(x, dtype=np.float64)).all():
            raise ValueError(f"config {c!r}: values {list(x)}; need >= 1 finite value per config")
    if not 0 < level < 1:
        raise ValueError(f"level: got {level}; need 0 < level < 1")
    if margin is not None and not margin >= 0:
        raise ValueError(f"margin: got {margin}; need >= 0 (or None: no ties)")
    if not 0 <= futility < 1:
        raise ValueError(f"futility: got {futility}; need 0 <= futility < 1 (0: off)")
    if max_seeds < 1:
        raise ValueError(f"max_seeds: got {max_seeds}; need >= 1")
    if previous is not None:
        if previous.finished:
            raise ValueError(f"the race ended at round {previous.round} ({previous.why})")
        known = [d.config for d in previous.decisions]
        if sorted(known) != sorted(values):
            raise ValueError(
                f"configs {sorted(values)} differ from the previous round's {sorted(known)}"
            )


def _why_no_one_races(decisions: Sequence[Decision]) -> str:
    words = {OUT: "out", TIED: "tied with the best", FUTILE: "inseparable from the best by the cap"}
    how = [w for s, w in words.items() if any(d.status == s for d in decisions)]
    return "one config left" if how == ["out"] else f"the others are {' or '.join(how)}"


def run_image_part(values: Mapping[str, Sequence[float]], run_noise: RunNoise | None) -> float:
    """The run x image part of one run's variance, averaged over the configs with >= 2 seeds (0
    without run_noise or such configs): what the image bootstrap of a pair already counts."""
    if run_noise is None:
        return 0.0
    parts = [float(run_noise(c)) for c, x in values.items() if len(x) >= 2]
    for c, p in zip([c for c, x in values.items() if len(x) >= 2], parts):
        if not (math.isfinite(p) and p >= 0):
            raise ValueError(f"run noise of {c!r}: got {p}; need finite >= 0")
    return float(np.mean(parts)) if parts else 0.0


def _parts(
    values: Mapping[str, Sequence[float]],
    best: str,
    c: str,
    s2: SeedVariance,
    shared: float,
    image_var: ImageVariance,
) -> tuple[float, float, float]:
    """(V_img, V_seed, df) of best - c. V_seed is the whole-run part s2 - shared (floored at 0):
    the run x image part of s2 is in V_img already, which holds each side's seeds fixed."""
    nb, nc = len(values[best]), len(values[c])
    v_img = float(image_var(best, c, nb, nc))
    if not (math.isfinite(v_img) and v_img >= 0):
        raise ValueError(f"image variance of {best!r} - {c!r}: got {v_img}; need finite >= 0")
    k = 1.0 / nb + 1.0 / nc
    v_seed = max(s2.value - shared, 0.0) * k
    if math.isinf(s2.df) or s2.value == 0:
        return v_img, v_seed, math.inf
    # Welch-Satterthwaite with V_img known: the estimation error is s2's (var 2 s2^2 / df),
    # whatever part of it is taken off
    return v_img, v_seed, s2.df * ((v_img + v_seed) / (k * s2.value)) ** 2


def _excludes_zero(diff: float, v: float, level: float, df: float) -> bool:
    half = _quantile(level, df) * math.sqrt(v)  # as in decide_round
    return diff - half > 0 or diff + half < 0


def _holm(
    parts: Mapping[str, tuple[float, float, float]], diffs: Mapping[str, float], a_r: float
) -> dict[str, float]:
    """{config: the one-sided level of its bounds}: Holm's step-down over the comparisons, ordered
    by one-sided p-value (equal ones in input order); after the first step that keeps its config,
    every later one gets that step's level (so its interval holds 0 too)."""
    k = len(parts)
    pvals = {}
    for c, (v_img, v_seed, df) in parts.items():
        se = math.sqrt(v_img + v_seed)
        t = abs(diffs[c]) / se if se > 0 else (0.0 if diffs[c] == 0 else math.inf)
        pvals[c] = float(stats.norm.sf(t) if math.isinf(df) else stats.t.sf(t, df))
    levels: dict[str, float] = {}
    stopped: float | None = None
    for j, c in enumerate(sorted(parts, key=lambda c: pvals[c])):
        v_img, v_seed, df = parts[c]
        if stopped is None:
            step = a_r / (k - j)
            levels[c] = step
            if not _excludes_zero(diffs[c], v_img + v_seed, step, df):
                stopped = step
        else:
            levels[c] = stopped
    return levels


def _quantile(level: float, df: float) -> float:
    """The one-sided (1 - level) quantile."""
    p = 1 - level
    return float(stats.norm.ppf(p) if math.isinf(df) else stats.t.ppf(p, df))
