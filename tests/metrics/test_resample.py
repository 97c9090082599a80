"""Re-weighted accumulation (coco.accumulate, calibration_from_records) against evaluating the set
with the images repeated from scratch (pycocotools, evaluate), and the batched ResampledMetrics
against both."""

import numpy as np
import pytest

from focalbench.metrics import evaluate
from focalbench.metrics.calibration import calibration_from_records, match_records
from focalbench.metrics.coco import (
    REC_THRS,
    _summarize,
    accumulate,
    image_eval,
    recall_counts,
)
from focalbench.metrics.evaluate import detection_set
from focalbench.metrics.match import candidates
from focalbench.metrics.resample import METRICS, ResampledMetrics, thresholds_reached
from tests.metrics.synthetic_runs import detections, ground_truth, repeat_images
from tests.metrics.test_coco import reference
from tests.metrics.test_coco import synthetic as coco_edge_cases

CALIB = ("laece0", "laace0", "lrp", "dece", "brier")
STAT_INDEX = {"mAP": 0, "AP50": 1, "AP75": 2, "AR100": 8}


def _run(seed, n_img=40):
    rng = np.random.default_rng(seed)
    gt = ground_truth(rng, n_img)
    return gt, detections(rng, gt)


def _counts(ds, rng):
    """A bootstrap draw, with some images drawn 2-4 times and some not at all."""
    n = len(ds.img_ids)
    return np.bincount(rng.integers(0, n, n), minlength=n)


@pytest.mark.parametrize("seed", [0, 1])
def test_weighted_accumulate_equals_pycocotools_on_the_repeated_images(seed):
    gt, dets = _run(seed)
    ds = detection_set(gt, dets)
    counts = _counts(ds, np.random.default_rng(seed + 10))
    assert counts.max() >= 3 and (counts == 0).any()
    rep_gt, rep_dets = repeat_images(gt, dets, dict(zip(ds.img_ids.tolist(), counts.tolist())))
    ev = reference(rep_gt, rep_dets)
    precision, recall = accumulate(image_eval(ds, candidates(ds)), counts)
    np.testing.assert_allclose(precision, ev.eval["precision"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(recall, ev.eval["recall"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(_summarize(precision, recall), ev.stats, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_weighted_calibration_equals_evaluating_the_repeated_images(seed):
    gt, dets = _run(seed)
    ds = detection_set(gt, dets)
    counts = _counts(ds, np.random.default_rng(seed + 20))
    rep_gt, rep_dets = repeat_images(gt, dets, dict(zip(ds.img_ids.tolist(), counts.tolist())))
    want = evaluate(rep_gt, rep_dets)
    got = calibration_from_records(match_records(ds, candidates(ds)), "lrp", counts)
    for key in CALIB:
        assert getattr(got, key) == pytest.approx(want[key], rel=1e-12, abs=1e-12), key
    want_thr = [v["threshold"] for v in want["per_class"].values()]
    np.testing.assert_allclose(got.threshold, want_thr, rtol=0, atol=0)  # same cut, NaN alike


def test_unit_weights_change_nothing():
    gt, dets = coco_edge_cases(3, n_img=80)
    ds = detection_set(gt, dets)
    cand = candidates(ds)
    ones = np.ones(len(ds.img_ids), np.int64)
    ev = image_eval(ds, cand)
    for a, b in zip(accumulate(ev), accumulate(ev, ones)):
        np.testing.assert_array_equal(a, b)
    rec = match_records(ds, cand)
    plain, weighted = calibration_from_records(rec), calibration_from_records(rec, "lrp", ones)
    for key in (*CALIB, "threshold", "class_laece0", "bin_score", "n_kept"):
        np.testing.assert_array_equal(getattr(plain, key), getattr(weighted, key))


@pytest.mark.parametrize("seed", [4, 5])
def test_resampled_metrics_equal_the_weighted_references(seed):
    # the pycocotools edge cases: crowd, id 0, > 100 detections per image, coarse (tied) scores
    gt, dets = coco_edge_cases(seed, n_img=90)
    ds = detection_set(gt, dets)
    rng = np.random.default_rng(seed)
    counts = np.stack([_counts(ds, rng) for _ in range(6)])
    counts[0] = 0
    counts[0, :3] = 1  # almost everything left out: classes without gt, without detections
    got = ResampledMetrics(ds)(counts)
    ev, rec = image_eval(ds, candidates(ds)), match_records(ds, candidates(ds))
    for b, w in enumerate(counts):
        stats = _summarize(*accumulate(ev, w))
        cal = calibration_from_records(rec, "lrp", w)
        for m, i in STAT_INDEX.items():
            want = np.nan if stats[i] == -1 else stats[i]
            assert got[m][b] == pytest.approx(want, abs=1e-12, nan_ok=True), (m, b)
        for m in CALIB:
            assert got[m][b] == pytest.approx(getattr(cal, m), rel=1e-9, nan_ok=True), (m, b)


@pytest.mark.parametrize("backend", ["numpy", "pycocotools"])
def test_identity_resample_equals_the_plain_evaluation(backend):
    gt, dets = coco_edge_cases(6, n_img=120)
    full = ResampledMetrics(detection_set(gt, dets)).full()
    plain = evaluate(gt, dets, map_backend=backend)
    for m in METRICS:
        assert full[m] == pytest.approx(plain[m], rel=1e-12, abs=1e-12), m


def test_no_detections_and_an_empty_resample():
    gt, _ = _run(2, n_img=10)
    rm = ResampledMetrics(detection_set(gt, []))
    full = rm.full()
    assert full["mAP"] == 0.0 and full["AR100"] == 0.0 and full["lrp"] == 1.0
    assert np.isnan(full["laece0"]) and np.isnan(full["dece"]) and np.isnan(full["brier"])
    nothing = rm(np.zeros((1, rm.n_images), np.int64))
    assert all(np.isnan(nothing[m][0]) for m in METRICS)  # no class with ground truth left


def test_chunks_do_not_change_the_numbers():
    gt, dets = _run(3)
    ds = detection_set(gt, dets)
    rm = ResampledMetrics(ds)
    counts = np.stack([_counts(ds, np.random.default_rng(i)) for i in range(7)])
    whole = rm(counts)
    rm._chunk = 2
    for m, v in rm(counts).items():
        np.testing.assert_array_equal(v, whole[m])


def test_bad_counts_and_metrics_raise():
    gt, dets = _run(4, n_img=5)
    ds = detection_set(gt, dets)
    with pytest.raises(ValueError, match=r"unknown metrics \['nope'\]; choose from"):
        ResampledMetrics(ds, ["mAP", "nope"])
    with pytest.raises(ValueError, match=r"counts: expected \[B, 5\]"):
        ResampledMetrics(ds, ["mAP"])(np.ones((2, 4), np.int64))


def test_recall_thresholds_reached_match_cocoeval_float_search():
    # every recall c / n for n up to 1500 gts, computed as _MapOps does (c * (100 / n)), against
    # COCOeval's search of the float recall c / n in REC_THRS
    npig = np.arange(1, 1500)
    c = np.concatenate([np.arange(n + 1) for n in npig]).astype(float)
    n = np.repeat(npig, npig + 1).astype(float)
    want = np.searchsorted(REC_THRS, c / n, side="right")
    np.testing.assert_array_equal(thresholds_reached(c * (100 / n)), want)
    # recall_counts: the fewest TPs reaching each threshold, as COCOeval's float test sees it
    need = recall_counts(npig)  # [len(npig), R]
    for k in (0, 6, 48, 98, 398):
        rc = np.arange(npig[k] + 1) / npig[k]
        np.testing.assert_array_equal(need[k], np.searchsorted(rc, REC_THRS, side="left"))
