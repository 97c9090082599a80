"""Calibration metrics vs hand-computed toy cases, a naive COCOeval-style matcher and netcal."""

import math

import numpy as np
import pytest

from focalbench.metrics import evaluate
from focalbench.metrics.calibration import candidates, greedy_match, lrp_optimal_thresholds
from focalbench.metrics.evaluate import detection_set

CATS = [
    {"id": 1, "name": "cat"},
    {"id": 2, "name": "dog"},
    {"id": 3, "name": "bird"},
    {"id": 4, "name": "fish"},
]


def ann(i, img, cat, bbox, crowd=0):
    return {
        "id": i,
        "image_id": img,
        "category_id": cat,
        "bbox": bbox,
        "area": bbox[2] * bbox[3],
        "iscrowd": crowd,
    }


def det(img, cat, bbox, score):
    return {"image_id": img, "category_id": cat, "bbox": bbox, "score": score}


# Toy set. Scores avoid bin edges (multiples of 0.04 for LaECE's 25 bins, of 0.1 for D-ECE's 10).
# image 1: cat g1 [0,0,10,10], a cat crowd region, dog g4 [50,50,10,10]
# image 2: cat g3 [0,0,10,10], bird g5 (bird gets no detection)
# image 3: no ground truth at all; fish has no ground truth anywhere
TOY_GT = {
    "images": [{"id": 1}, {"id": 2}, {"id": 3}],
    "categories": CATS,
    "annotations": [
        ann(1, 1, 1, [0, 0, 10, 10]),
        ann(2, 1, 1, [100, 100, 50, 50], crowd=1),
        ann(3, 2, 1, [0, 0, 10, 10]),
        ann(4, 1, 2, [50, 50, 10, 10]),
        ann(5, 2, 3, [30, 30, 10, 10]),
    ],
}
TOY_DETS = [
    det(
        2, 1, [20, 20, 10, 10], 0.95
    ),  # d4: zero overlap, outscores the perfect d5 -> FP (IoU > 0 rule)
    det(1, 1, [0, 0, 10, 10], 0.91),  # d1: TP, IoU 1
    det(
        1, 1, [0, 0, 10, 10], 0.89
    ),  # d2: duplicate of d1, g1 taken -> FP; shares LaECE bin (0.88, 0.92] with d1
    det(
        1, 1, [110, 110, 20, 20], 0.70
    ),  # d3: inside the crowd region only -> ignored (neither TP nor FP)
    det(2, 1, [0, 0, 10, 10], 0.62),  # d5: perfect, TP IoU 1
    det(3, 1, [0, 0, 5, 5], 0.53),  # d6: image without ground truth -> FP
    det(3, 2, [0, 0, 5, 5], 0.33),  # dog FP (image 3)
    det(1, 2, [50, 50, 10, 10], 0.22),  # dog TP, IoU 1
    det(3, 4, [0, 0, 5, 5], 0.45),  # fish FP: class without ground truth
]


def test_toy_no_threshold():
    r = evaluate(TOY_GT, TOY_DETS, calib_threshold="none")
    pc = r["per_class"]
    # cat, 5 detections (d3 ignored): d4 .95 FP | d1 .91 TP(1) and d2 .89 FP share bin 22 |
    # d5 .62 TP(1) | d6 .53 FP.
    # LaECE0 = sum_b |sum s - sum IoU| / n = (.95 + |1.80 - 1| + |.62 - 1| + .53) / 5 = 2.66 / 5
    assert pc["cat"]["laece0"] == pytest.approx(2.66 / 5, abs=1e-12)
    # LaACE0 (one detection per bin) = mean |s - t| = (.95 + .09 + .89 + .38 + .53) / 5
    assert pc["cat"]["laace0"] == pytest.approx(2.84 / 5, abs=1e-12)
    # LRP = (sum (1 - IoU) + FP + FN) / (TP + FP + FN) = (0 + 3 + 0) / 5; crowd gt not counted
    assert pc["cat"]["lrp"] == pytest.approx(0.6, abs=1e-12)
    assert (pc["cat"]["n_gt"], pc["cat"]["n_dets"], pc["cat"]["n_kept"]) == (2, 5, 5)
    # dog: .33 FP in bin 8, .22 TP(1) in bin 5: (.33 + .78) / 2; LRP (0 + 1 + 0) / 2
    assert pc["dog"]["laece0"] == pytest.approx(1.11 / 2, abs=1e-12)
    assert pc["dog"]["laace0"] == pytest.approx(1.11 / 2, abs=1e-12)
    assert pc["dog"]["lrp"] == pytest.approx(0.5, abs=1e-12)
    # bird: ground truth, no detection -> LaECE0 undefined (left out of the mean), LRP = FN / FN = 1
    assert math.isnan(pc["bird"]["laece0"]) and pc["bird"]["lrp"] == 1.0
    # fish: no ground truth -> left out of every class mean
    assert math.isnan(pc["fish"]["laece0"]) and math.isnan(pc["fish"]["lrp"])
    assert r["laece0"] == pytest.approx((2.66 / 5 + 1.11 / 2) / 2, abs=1e-12)
    assert r["laace0"] == pytest.approx((2.84 / 5 + 1.11 / 2) / 2, abs=1e-12)
    assert r["lrp"] == pytest.approx((0.6 + 0.5 + 1.0) / 3, abs=1e-12)
    assert pc["cat"]["threshold"] == 0.0
    # D-ECE: IoU >= .5, scores >= .3, all classes pooled, 10 bins: d4 .95 F and d1 .91 T in bin 9
    # -> |1 - 1.86|; d2 .89 F; d5 .62 T -> .38; d6 .53 F; fish .45 F; dog .33 F
    # (d3 ignored, dog .22 below .3)
    assert r["dece"] == pytest.approx((0.86 + 0.89 + 0.38 + 0.53 + 0.45 + 0.33) / 7, abs=1e-12)
    # Brier over all 8 non-ignored detections, target = TP at IoU >= .5
    sq = [0.95**2, 0.09**2, 0.89**2, 0.38**2, 0.53**2, 0.33**2, 0.78**2, 0.45**2]
    assert r["brier"] == pytest.approx(sum(sq) / 8, abs=1e-12)


def test_toy_lrp_threshold():
    r = evaluate(TOY_GT, TOY_DETS)  # default "lrp"
    pc = r["per_class"]
    # cat LRP by threshold (n_gt 2): .95 -> 3/3; .91 -> (1 FP + 1 FN)/3; .89 -> 3/4;
    # .62 -> (0 + 2 FP + 0 FN)/4 = .5; .53 -> 3/5. Minimum at .62: d6 is dropped.
    assert pc["cat"]["threshold"] == 0.62 and pc["cat"]["lrp"] == pytest.approx(0.5, abs=1e-12)
    assert pc["cat"]["n_kept"] == 4
    assert pc["cat"]["laece0"] == pytest.approx((0.95 + 0.80 + 0.38) / 4, abs=1e-12)
    assert pc["cat"]["laace0"] == pytest.approx((0.95 + 0.09 + 0.89 + 0.38) / 4, abs=1e-12)
    # dog: .33 -> 1, .22 -> .5: keeps both
    assert pc["dog"]["threshold"] == 0.22 and pc["dog"]["laece0"] == pytest.approx(0.555, abs=1e-12)
    assert math.isnan(pc["bird"]["threshold"]) and math.isnan(pc["fish"]["threshold"])
    assert r["lrp"] == pytest.approx((0.5 + 0.5 + 1.0) / 3, abs=1e-12)
    assert r["laece0"] == pytest.approx((2.13 / 4 + 0.555) / 2, abs=1e-12)
    thr = r["protocol"]["calib_threshold"]
    assert thr["mode"] == "lrp" and thr["per_class"]["cat"] == 0.62
    # D-ECE and Brier ignore the calibration threshold
    assert r["dece"] == pytest.approx(3.44 / 7, abs=1e-12)


def test_toy_fixed_threshold():
    r = evaluate(TOY_GT, TOY_DETS, calib_threshold="0.6")
    # cat keeps .95 .91 .89 .62 (as the LRP threshold); dog keeps nothing: LaECE0 undefined, LRP = 1
    assert r["per_class"]["dog"]["n_kept"] == 0 and math.isnan(r["per_class"]["dog"]["laece0"])
    assert r["laece0"] == pytest.approx(2.13 / 4, abs=1e-12)
    assert r["lrp"] == pytest.approx((0.5 + 1.0 + 1.0) / 3, abs=1e-12)
    assert r["protocol"]["calib_threshold"]["value"] == 0.6


def _one_class(dets, n_gt_boxes):
    """Class 1 on one image: gts at x = 0, 20, 40, ...; dets as (x, score), 10x10 boxes."""
    gt = {
        "images": [{"id": 1}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [ann(i + 1, 1, 1, [20 * i, 0, 10, 10]) for i in range(n_gt_boxes)],
    }
    return gt, [det(1, 1, [x, 0, 10, 10], s) for x, s in dets]


def test_lrp_threshold_ties_go_to_the_highest_score():
    # .9 TP, .8 FP, .7 FP, .6 TP with 2 gts: LRP .5, 2/3, 3/4, .5 -> tie: keep the highest, .9
    gt, dets = _one_class([(0, 0.9), (500, 0.8), (500, 0.7), (20, 0.6)], 2)
    r = evaluate(gt, dets)
    assert r["per_class"]["a"]["threshold"] == 0.9 and r["lrp"] == pytest.approx(0.5, abs=1e-12)


def test_lrp_threshold_never_cuts_inside_a_score_tie():
    # .9 FP, then .8 TP and .8 FP (1 gt). Cutting between the two .8s would read LRP 1/2, but a
    # threshold of .8 keeps both: the candidates are .9 (LRP 1) and .8 (2/3), and the reported LRP
    # is that of what is kept.
    gt, dets = _one_class([(500, 0.9), (0, 0.8), (500, 0.8)], 1)
    r = evaluate(gt, dets)
    assert r["per_class"]["a"]["threshold"] == 0.8 and r["lrp"] == pytest.approx(2 / 3, abs=1e-12)


def test_class_without_true_positive_keeps_all_detections():
    # No TP: LRP is 1 at every threshold; as in the official code the threshold is NaN, all kept
    gt, dets = _one_class([(500, 0.7), (600, 0.5)], 1)
    r = evaluate(gt, dets)
    pc = r["per_class"]["a"]
    assert math.isnan(pc["threshold"]) and pc["n_kept"] == 2 and pc["lrp"] == 1.0
    assert pc["laece0"] == pytest.approx((0.7 + 0.5) / 2, abs=1e-12)


def test_no_detections_at_all():
    r = evaluate(TOY_GT, [])
    assert (
        r["lrp"] == 1.0
        and math.isnan(r["laece0"])
        and math.isnan(r["dece"])
        and math.isnan(r["brier"])
    )
    assert r["mAP"] == 0.0 and r["AR100"] == 0.0


def test_no_ground_truth_at_all():
    # Every detection is a FP: class means are undefined, pooled D-ECE and Brier are not
    gt = {"images": [{"id": 1}], "categories": CATS[:1], "annotations": []}
    r = evaluate(gt, [det(1, 1, [0, 0, 5, 5], 0.5)])
    assert math.isnan(r["laece0"]) and math.isnan(r["lrp"]) and r["mAP"] == -1.0
    assert r["dece"] == pytest.approx(0.5) and r["brier"] == pytest.approx(0.25)


def test_strict_tau_zero_versus_cocoeval_threshold_zero():
    # COCOeval at threshold 0 lets the zero-overlap d4 (.95) take g3 before the perfect d5
    ds = detection_set(TOY_GT, TOY_DETS)
    cand = candidates(ds)
    ign = np.stack([ds.gt_ignored()] * 2, 1)
    match = greedy_match(cand, ds.gt_crowd, ign, np.array([0.0, 0.0]), np.array([True, False]))
    gt_of = np.where(match >= 0, cand.pair_gt[np.maximum(match, 0)], -1)
    row = {int(ds.dt_score[d] * 100): i for i, d in enumerate(cand.det)}
    assert gt_of[row[95], 0] == -1 and gt_of[row[62], 0] == 2  # strict: d5 takes g3 (index 2)
    assert gt_of[row[95], 1] == 2 and gt_of[row[62], 1] == -1  # IoU >= 0: d4 takes it


def test_iou_threshold_is_inclusive_for_dece_and_strict_for_tau():
    # det [0,0,10,5] on gt [0,0,10,10]: IoU = 50 / 100 = 0.5 exactly
    gt, _ = _one_class([], 1)
    ds = detection_set(gt, [det(1, 1, [0, 0, 10, 5], 0.5)])
    cand = candidates(ds)
    assert cand.pair_iou.tolist() == [0.5]
    ign = np.zeros((1, 2), bool)
    match = greedy_match(cand, ds.gt_crowd, ign, np.array([0.5, 0.5]), np.array([False, True]))
    assert match.tolist() == [[0, -1]]


# ---------------------------------------------------------------- randomized vs a naive reference
def naive_match(ds, thr, strict, max_dets=100, keep=None):
    """COCOeval's evaluateImg loop, written out per (image, class); returns {det index: (gt index,
    iou) or None} for evaluated detections, and the set of ignored (crowd-matched) detection
    indices."""
    out, ignored = {}, set()
    for img in np.unique(np.r_[ds.gt_img, ds.dt_img]):
        for cat in range(len(ds.cat_ids)):
            dts = [
                i for i in range(len(ds.dt_score)) if ds.dt_img[i] == img and ds.dt_cat[i] == cat
            ]
            dts = sorted(dts, key=lambda i: -ds.dt_score[i])[
                :max_dets
            ]  # stable: input order on ties
            if keep is not None:
                dts = [i for i in dts if keep[i]]
            gts = [g for g in range(len(ds.gt_img)) if ds.gt_img[g] == img and ds.gt_cat[g] == cat]
            gts = sorted(gts, key=lambda g: bool(ds.gt_ignored()[g]))  # regular gts first
            used = set()
            for i in dts:
                best, m = thr, None
                for g in gts:
                    if g in used and not ds.gt_crowd[g]:
                        continue
                    if m is not None and not ds.gt_ignored()[m] and ds.gt_ignored()[g]:
                        break
                    d, b = ds.dt_box[i], ds.gt_box[g]
                    w = min(d[0] + d[2], b[0] + b[2]) - max(d[0], b[0])
                    h = min(d[1] + d[3], b[1] + b[3]) - max(d[1], b[1])
                    inter = max(w, 0) * max(h, 0)
                    union = d[2] * d[3] if ds.gt_crowd[g] else d[2] * d[3] + b[2] * b[3] - inter
                    iou = inter / union if w > 0 and h > 0 else 0.0
                    if iou < best or (strict and iou == thr and m is None):
                        continue
                    best, m = iou, g
                if m is not None:
                    used.add(m)
                    ignored.update([i] if ds.gt_ignored()[m] else [])
                out[i] = (m, best) if m is not None else None
    return out, ignored


def random_set(rng, n_img=12, n_cat=3, crowd=0.15):
    gt = {
        "images": [{"id": i} for i in range(1, n_img + 1)],
        "categories": CATS[:n_cat],
        "annotations": [],
    }
    dets = []
    for img in range(1, n_img + 1):
        for _ in range(rng.integers(0, 6)):
            x, y, w, h = rng.integers(0, 40, 2).tolist() + rng.integers(2, 20, 2).tolist()
            c = int(rng.integers(1, n_cat + 1))
            gt["annotations"].append(
                ann(len(gt["annotations"]) + 1, img, c, [x, y, w, h], int(rng.random() < crowd))
            )
        for _ in range(rng.integers(0, 25)):
            x, y, w, h = rng.integers(0, 40, 2).tolist() + rng.integers(2, 20, 2).tolist()
            s = float(np.round(rng.random(), 1))  # coarse scores: many ties
            dets.append(det(img, int(rng.integers(1, n_cat + 1)), [x, y, w, h], s))
    return gt, dets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorized_matching_equals_naive_loop(seed):
    ds = detection_set(*random_set(np.random.default_rng(seed)))
    cand = candidates(ds, max_dets=8)  # small cap: exercises the per-image, per-class cut
    ign = np.stack([ds.gt_ignored()] * 3, 1)
    thr, strict = np.array([0.0, 0.5, 0.3]), np.array([True, False, True])
    match = greedy_match(cand, ds.gt_crowd, ign, thr, strict)
    for c in range(3):
        ref, _ = naive_match(ds, thr[c], strict[c], max_dets=8)
        got = {
            int(d): (int(cand.pair_gt[p]) if p >= 0 else None)
            for d, p in zip(cand.det, match[:, c])
        }
        assert got == {i: (v[0] if v else None) for i, v in ref.items()}


@pytest.mark.parametrize("seed", [3, 4])
def test_matching_is_prefix_stable_so_thresholding_after_matching_is_exact(seed):
    # Matching all, then dropping scores < t == matching only those >= t (crowd regions included)
    ds = detection_set(*random_set(np.random.default_rng(seed)))
    full, full_ign = naive_match(ds, 0.0, True)
    for t in (0.3, 0.6, 0.9):
        keep = ds.dt_score >= t
        part, part_ign = naive_match(ds, 0.0, True, keep=keep)
        assert part == {i: v for i, v in full.items() if keep[i]}
        assert part_ign == {i for i in full_ign if keep[i]}


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_lrp_optimal_threshold_equals_brute_force(seed):
    gt, dets = random_set(np.random.default_rng(seed), n_cat=2)
    ds = detection_set(gt, dets)
    res = evaluate(gt, dets)
    n_gt = np.bincount(ds.gt_cat[~ds.gt_ignored()], minlength=2)
    for k in range(2):
        if n_gt[k] == 0:
            continue
        best = (math.inf, None)
        for t in sorted({float(s) for s in ds.dt_score[ds.dt_cat == k]}, reverse=True):
            matches, ignored = naive_match(
                ds, 0.0, True, keep=(ds.dt_score >= t) & (ds.dt_cat == k)
            )
            tps = [v[1] for i, v in matches.items() if v and i not in ignored]
            fp = sum(1 for i, v in matches.items() if v is None)
            lrp = (sum(1 - u for u in tps) + fp + n_gt[k] - len(tps)) / (fp + n_gt[k])
            best = min(best, (lrp, -t))  # ties -> highest threshold
        name = ds.cat_names[k]
        if best[1] is None:
            assert res["per_class"][name]["lrp"] == 1.0
            continue
        has_tp = best[0] < 1
        assert res["per_class"][name]["lrp"] == pytest.approx(best[0], abs=1e-12)
        if has_tp:
            assert res["per_class"][name]["threshold"] == -best[1]
        else:
            assert math.isnan(res["per_class"][name]["threshold"])


def test_lrp_thresholds_function_on_classes_without_ground_truth():
    thr, lrp = lrp_optimal_thresholds(
        np.array([0, 1]),
        np.array([0.5, 0.4]),
        np.array([True, False]),
        np.array([0.8, 0.0]),
        np.array([1, 0]),
    )
    assert (
        thr[0] == 0.5 and lrp[0] == pytest.approx(0.2) and math.isnan(thr[1]) and math.isnan(lrp[1])
    )


# ---------------------------------------------------------------- D-ECE against netcal's definition
def netcal_ece(scores, matched, bins=10):
    """netcal.metrics.ECE(bins, detection=False).measure semantics, from its documentation: scores
    clipped to [eps, 1 - eps], equal-width bins over [0, 1] as np.histogram (left-closed, last
    closed), ECE = sum over bins of N_b / N |acc_b - conf_b|, empty bins contribute nothing."""
    eps = np.finfo(np.float64).eps
    x = np.clip(scores, eps, 1 - eps)
    n, _ = np.histogram(x, bins=bins, range=(0, 1))
    acc, _ = np.histogram(x, bins=bins, range=(0, 1), weights=matched)
    conf, _ = np.histogram(x, bins=bins, range=(0, 1), weights=x)
    full = n > 0
    return float(np.sum(n[full] / n.sum() * np.abs(acc[full] / n[full] - conf[full] / n[full])))


def _dece_inputs(seed):
    rng = np.random.default_rng(seed)
    gt, dets = random_set(rng, n_img=30, n_cat=3)
    for d in dets:
        d["score"] = float(rng.random())  # continuous scores
    ds = detection_set(gt, dets)
    matches, ignored = naive_match(ds, 0.5, False)
    idx = [i for i in matches if i not in ignored and ds.dt_score[i] >= 0.3]
    flags = np.array([matches[i] is not None for i in idx], dtype=float)
    return gt, dets, ds.dt_score[idx], flags


@pytest.mark.parametrize("seed", [8, 9])
def test_dece_equals_netcal_definition_given_the_same_matches(seed):
    gt, dets, scores, flags = _dece_inputs(seed)
    assert evaluate(gt, dets)["dece"] == pytest.approx(netcal_ece(scores, flags), abs=1e-12)


def test_dece_equals_netcal_itself():
    netcal = pytest.importorskip("netcal.metrics")
    gt, dets, scores, flags = _dece_inputs(10)
    ref = netcal.ECE(bins=10, detection=False).measure(scores, flags.astype(int))
    assert evaluate(gt, dets)["dece"] == pytest.approx(ref, abs=1e-12)


# ---------------------------------------------------------------- D-ECE without a confident score
def test_dece_is_nan_exactly_when_no_detection_reaches_0_3():
    # The issue-13 report: a barely trained model on a 15-image excerpt. Its scores stay near the
    # prior (~0.01-0.2), so no detection reaches D-ECE's 0.3: no bin holds a sample and D-ECE is
    # 0 / 0 (netcal gives the same NaN). Not "a class with too few detections": D-ECE pools classes.
    rng = np.random.default_rng(0)
    gt, dets = random_set(rng, n_img=15, n_cat=3)
    for d in dets:
        d["score"] = float(rng.uniform(0.01, 0.29))
    r = evaluate(gt, dets)
    assert math.isnan(r["dece"]) and r["dece_n"] == 0
    assert not math.isnan(r["brier"]) and not math.isnan(r["laece0"])  # the others are defined
    # One detection at 0.3 (a class with a single one): defined, netcal's value on that one alone
    dets[0]["score"] = 0.3
    r = evaluate(gt, dets)
    ds = detection_set(gt, dets)
    matches, ignored = naive_match(ds, 0.5, False)
    hit = float(matches[0] is not None and 0 not in ignored)
    assert r["dece_n"] == 1 and r["dece"] == pytest.approx(netcal_ece(np.array([0.3]), [hit]))
    assert r["protocol"]["dece"]["undefined"].startswith("NaN when no detection scores >= ")
