"""The paired bootstrap: coverage of its interval where the true difference is known, exact zeros
for a run against itself, the two-level (seeds) variant, determinism."""

import numpy as np
import pytest

from focalbench.metrics.bootstrap import draw_image_counts, paired_bootstrap
from focalbench.metrics.evaluate import detection_set
from focalbench.metrics.match import DetectionSet
from focalbench.metrics.resample import ResampledMetrics
from tests.metrics.synthetic_runs import detections, ground_truth


class MeanScorer:
    """A metric whose population value is known: the mean of a per-image score."""

    def __init__(self, x, name="m"):
        self.x, self.metrics, self.n_images = np.asarray(x, float), (name,), len(x)

    def __call__(self, counts):
        return {self.metrics[0]: counts @ self.x / counts.sum(1)}

    def full(self):
        return {self.metrics[0]: float(self.x.mean())}


def test_draw_image_counts_are_draws_with_replacement():
    counts = draw_image_counts(np.random.default_rng(0), 50, 2000)
    assert counts.shape == (2000, 50) and (counts.sum(1) == 50).all()
    # each image is drawn Binomial(50, 1/50) times: mean 1, share of resamples missing it ~ 0.364
    assert counts.mean() == pytest.approx(1.0)
    assert (counts == 0).mean() == pytest.approx(0.364, abs=0.01)


def test_interval_covers_a_known_mean_difference_at_the_nominal_rate():
    # Per image, A and B share a difficulty (sd 0.1) and differ by 0.02 plus noise (sd 0.05).
    # The paired interval must cover the population difference ~95% of the time, and be as wide
    # as the paired standard error says (an unpaired one would be ~3x wider).
    rng = np.random.default_rng(0)
    N, n, reps = 100_000, 100, 1000
    shared = rng.normal(0, 0.1, N)
    a, b = 0.6 + shared + rng.normal(0, 0.05, N), 0.58 + shared + rng.normal(0, 0.05, N)
    true = (a - b).mean()
    covered, widths = 0, []
    for r in range(reps):
        idx = rng.choice(N, n, replace=False)
        (d,) = paired_bootstrap([MeanScorer(a[idx])], [MeanScorer(b[idx])], ["m"], 400, r).metrics
        covered += d.lo <= true <= d.hi
        widths.append(d.hi - d.lo)
    assert 0.93 <= covered / reps <= 0.97
    se = (a - b).std() / np.sqrt(n)
    assert np.mean(widths) == pytest.approx(2 * 1.96 * se, rel=0.1)


def _subset(ds, keep):
    """The DetectionSet of the images `keep` (a validation set drawn from the population)."""
    keep = np.sort(keep)
    new = np.full(len(ds.img_ids), -1)
    new[keep] = np.arange(len(keep))
    g, d = new[ds.gt_img] >= 0, new[ds.dt_img] >= 0
    return DetectionSet(
        ds.img_ids[keep],
        ds.cat_ids,
        ds.cat_names,
        new[ds.gt_img[g]],
        ds.gt_cat[g],
        ds.gt_box[g],
        ds.gt_area[g],
        ds.gt_crowd[g],
        ds.gt_id[g],
        new[ds.dt_img[d]],
        ds.dt_cat[d],
        ds.dt_box[d],
        ds.dt_score[d],
    )


def test_interval_covers_the_population_difference_in_map_and_laece0():
    # Two detectors of different quality on a population of 1500 images; validation sets of 100
    # drawn from it. mAP and LaECE0 are not means over images (and small sets bias them a
    # little), so this asserts only "about nominal": at least 80% of 40 intervals cover.
    rng = np.random.default_rng(0)
    gt = ground_truth(rng, 1500, 3)
    A = detection_set(gt, detections(rng, gt, jitter=0.10, miss=0.2))
    B = detection_set(gt, detections(rng, gt, jitter=0.14, miss=0.25))
    ms = ("mAP", "laece0")
    pa, pb = ResampledMetrics(A, ms).full(), ResampledMetrics(B, ms).full()
    true = {m: pa[m] - pb[m] for m in ms}
    assert true["mAP"] > 0.05 and true["laece0"] < -0.03  # A is better at both
    covered = dict.fromkeys(ms, 0)
    for r in range(40):
        keep = rng.choice(1500, 100, replace=False)
        runs = [ResampledMetrics(_subset(A, keep), ms)], [ResampledMetrics(_subset(B, keep), ms)]
        for d in paired_bootstrap(*runs, ms, 200, r).metrics:
            covered[d.metric] += d.lo <= true[d.metric] <= d.hi
            assert d.p_a_wins > 0.5  # lower laece0 counts as a win
    assert covered["mAP"] >= 32 and covered["laece0"] >= 32, covered


def test_a_run_against_itself_gives_exactly_zero():
    rng = np.random.default_rng(1)
    gt = ground_truth(rng, 50)
    dets = detections(rng, gt)
    one, same = (ResampledMetrics(detection_set(gt, dets)) for _ in range(2))
    c = paired_bootstrap([one], [same], ["mAP", "laece0", "lrp", "dece"], 300, 7)
    assert not c.two_level
    for d in c.metrics:
        assert (d.diff, d.lo, d.hi) == (0.0, 0.0, 0.0) and d.p_a_wins == 0.5, d
        assert d.a == d.b and d.n_valid == 300
    # two seeds a side, the same seeds: paired by seed value, still exactly zero
    other = ResampledMetrics(detection_set(gt, detections(rng, gt)))
    c = paired_bootstrap([one, other], [other, same], ["mAP"], 200, 7, [0, 1], [1, 0])
    assert c.two_level and c.seeds_paired and "two-level" in c.describe()
    (d,) = c.metrics
    assert (d.diff, d.lo, d.hi, d.p_a_wins) == (0.0, 0.0, 0.0, 0.5)


def test_two_level_adds_the_seed_noise():
    # Three "seeds" per side whose values differ by a constant: image resampling alone cannot see
    # that spread, the seed level must (the interval widens to roughly the seed spread).
    x = np.random.default_rng(2).random(200)
    a = [MeanScorer(x + s) for s in (0.0, 0.1, 0.2)]
    b = [MeanScorer(x + 0.1)]
    one = paired_bootstrap(a[:1], b, ["m"], 500, 0).metrics[0]
    two = paired_bootstrap(a, b, ["m"], 500, 0, [0, 1, 2], [0]).metrics[0]
    assert one.hi - one.lo == pytest.approx(0.0, abs=1e-12)  # A - B is -0.1 on every resample
    assert two.diff == pytest.approx(0.0) and two.lo <= -0.05 and two.hi >= 0.05
    c = paired_bootstrap(a, b, ["m"], 50, 0, [0, 1, 2], [0])
    assert c.two_level and not c.seeds_paired and "drawn per side" in c.describe()


def test_lower_is_better_wins_and_determinism():
    x = np.random.default_rng(3).random(80)
    a, b = MeanScorer(x, "laece0"), MeanScorer(x + 0.05, "laece0")
    d = paired_bootstrap([a], [b], ["laece0"], 100, 0).metrics[0]
    assert d.lower_is_better and d.p_a_wins == 1.0 and d.diff == pytest.approx(-0.05)
    a2 = MeanScorer(x + np.random.default_rng(4).normal(0, 0.1, 80), "laece0")
    runs = [a2], [b], ["laece0"], 300
    assert paired_bootstrap(*runs, 5) == paired_bootstrap(*runs, 5)
    assert paired_bootstrap(*runs, 5).metrics[0].lo != paired_bootstrap(*runs, 6).metrics[0].lo


def test_bad_arguments_raise():
    a = MeanScorer(np.ones(5))
    with pytest.raises(ValueError, match="n_boot: got 0; need at least 1"):
        paired_bootstrap([a], [a], ["m"], 0)
    with pytest.raises(ValueError, match=r"different numbers of images: \[4, 5\]"):
        paired_bootstrap([a], [MeanScorer(np.ones(4))], ["m"], 10)
    with pytest.raises(ValueError, match="metric 'mAP' is not scored"):
        paired_bootstrap([a], [a], ["mAP"], 10)


def test_to_dict_is_plain_and_names_the_method():
    a = MeanScorer(np.arange(10.0))
    out = paired_bootstrap([a], [a], ["m"], 20, 3).to_dict()
    assert out["n_boot"] == 20 and out["seed"] == 3 and out["n_images"] == 10
    assert out["metrics"][0]["p_a_wins"] == 0.5 and "ties count half" not in out["method"]
    assert "a tie counts half a win" in out["method"] and "percentile" in out["method"]
