"""Power and interval-width predictions: a hand computation, monotone seed counts, the image
fallback, bad inputs, and the 3-seed width predicted from 2 seeds against compare's real two-level
bootstrap on simulated populations and on the reference study's own numbers."""

import math

import numpy as np
import pytest
from scipy import stats

from focalbench.metrics.bootstrap import image_variance, paired_bootstrap
from focalbench.metrics.power import variance_parts
from focalbench.metrics.race import SeedVariance
from tests.metrics.test_bootstrap import MeanScorer

Z975, Z80 = stats.norm.ppf(0.975), stats.norm.ppf(0.8)


def test_prediction_matches_a_hand_computation():
    p = variance_parts([0.34, 0.36], [0.30, 0.31], 1e-4, 80)
    s2 = (2 * 0.01**2 + 2 * 0.005**2) / 2  # pooled, df 2
    assert (p.diff, p.seed_var, p.seed_df, p.n_a, p.n_b) == pytest.approx((0.045, s2, 2, 2, 2))
    # compare's percentile interval: the seed part shrinks by (n-1)/n
    assert p.width(3) == pytest.approx(2 * Z975 * math.sqrt(1e-4 + 2 * (2 / 3) * s2 / 3))
    assert p.width(1) == pytest.approx(2 * Z975 * 0.01)  # one seed a side: images only
    v = 1e-4 + 2 * s2 / 3
    df = 2 * (v / (2 * s2 / 3)) ** 2
    assert p.width(3, kind="t") == pytest.approx(2 * stats.t.ppf(0.975, df) * math.sqrt(v))
    assert p.width(3, n_images=160) == pytest.approx(
        2 * Z975 * math.sqrt(0.5e-4 + 2 * (2 / 3) * s2 / 3)
    )
    room = (0.05 / (Z975 + Z80)) ** 2  # the variance that resolves 0.05
    assert p.seeds_needed(0.05) == math.ceil(2 * s2 / (room - 1e-4)) == 2
    room = (0.03 / (Z975 + Z80)) ** 2
    assert p.seeds_needed(0.03) == math.ceil(2 * s2 / (room - 1e-4)) == 18
    assert (
        p.advice(0.03)
        == "to resolve +0.030 (80% power, 95% level): about 18 seeds a side (32 runs more)"
    )


def test_seeds_needed_is_monotone_in_the_difference():
    p = variance_parts([0.34, 0.36, 0.35], [0.30, 0.31], 4e-5, 80)
    targets = np.linspace(0.02, 0.2, 40)
    needed = [p.seeds_needed(d) for d in targets]
    assert all(n is not None for n in needed)
    assert all(a >= b for a, b in zip(needed, needed[1:])) and needed[0] > needed[-1] == 1
    assert [p.seeds_needed(0.03, power=q) for q in (0.5, 0.8, 0.95)] == sorted(
        p.seeds_needed(0.03, power=q) for q in (0.5, 0.8, 0.95)
    )


def test_when_seeds_cannot_it_says_how_many_images():
    p = variance_parts([0.34, 0.36], [0.30, 0.31], 1.69e-4, 80)  # image sd 0.013
    assert p.seeds_needed(0.03) is None
    room = (0.03 / (Z975 + Z80)) ** 2
    images = math.ceil(1.69e-4 * 80 / (room - 2 * p.seed_var / 5))
    assert p.images_needed(0.03, n_seeds=5) == images
    assert p.seeds_needed(0.03, n_images=images) <= 5 < p.seeds_needed(0.03, n_images=images - 1)
    text = p.advice(0.03, max_seeds=5)
    assert "seeds alone cannot" in text and f"about {images} validation images" in text
    assert "nor can 5 seeds a side" in p.advice(0.005)  # the seed part alone is too much


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="need >= 2 seeds a side"):
        variance_parts([0.3], [0.2, 0.25], 1e-4, 80)
    p = variance_parts([0.3], [0.2], 1e-4, 80, SeedVariance(1e-4, 20, "grid"))  # a pooled s2
    assert p.seed_var == 1e-4 and p.seed_df == 20
    with pytest.raises(ValueError, match="target difference: got 0"):
        p.seeds_needed(0.0)
    with pytest.raises(ValueError, match="target difference: got -0.01"):
        p.advice(-0.01)
    with pytest.raises(ValueError, match="choose from"):
        p.width(3, kind="percentile")
    with pytest.raises(ValueError, match="image_var"):
        variance_parts([0.3, 0.4], [0.2, 0.25], -1.0, 80)


@pytest.mark.parametrize(
    "seed_sd, config_image_sd", [(0.009, 0.068), (0.02, 0.02)], ids=["images", "seeds"]
)
def test_the_width_at_3_seeds_predicted_from_2_is_compares(seed_sd, config_image_sd):
    """Populations of two configs, 80 images, from bench_race.py's model (images: the study's
    noise, where the image part dominates; seeds: where the seed part does). From seeds 0 and 1:
    V_img by the image bootstrap, the prediction at 3 seeds; then compare's real two-level
    interval on seeds 0, 1, 2."""
    rng = np.random.default_rng(0)
    n_img, pred, real = 80, [], []
    for _ in range(150):
        w = rng.normal(0, config_image_sd, (2, 1, n_img))
        u = rng.normal(0, seed_sd, (2, 3, 1))
        x = np.array([0.35, 0.33])[:, None, None] + u + w + rng.normal(0, 0.08, (2, 3, n_img))
        a, b = [MeanScorer(s) for s in x[0]], [MeanScorer(s) for s in x[1]]
        v_img = image_variance(a[:2], b[:2], "m", n_boot=200, seed=1)
        pred.append(variance_parts(x[0, :2].mean(1), x[1, :2].mean(1), v_img, n_img).width(3))
        (m,) = paired_bootstrap(a, b, ["m"], 500, 2, [0, 1, 2], [0, 1, 2]).metrics
        real.append(m.hi - m.lo)
    ratio = np.array(pred) / np.array(real)
    # measured: ratio of means 1.00 (images) and 1.01 (seeds); mean |error| 12% and 26%
    assert np.mean(pred) / np.mean(real) == pytest.approx(1, abs=0.3)
    assert np.mean(np.abs(ratio - 1)) < 0.3


def test_the_reference_studys_focal_vs_bce():
    """focal (0.25, 2) vs bce, 80 images: compare printed [+0.0052, +0.1055] on seeds 0, 1
    (results/reference/demo_compare.txt) and [+0.0091, +0.0897] on seeds 0, 1, 2
    (compare_focal_vs_bce.txt). V_img from the 2-seed width; the 3-seed width it predicts."""
    a, b = [0.346144, 0.335951], [0.287552, 0.303046]  # mAP per seed, study_runs.csv
    seeds_only = variance_parts(a, b, 0.0, 80).variance(2, kind="compare")
    v_img = ((0.1055 - 0.0052) / (2 * Z975)) ** 2 - seeds_only
    predicted = variance_parts(a, b, v_img, 80).width(3)
    assert predicted == pytest.approx(0.0897 - 0.0091, rel=0.3)  # 0.0999 vs 0.0806
