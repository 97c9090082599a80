"""COCO-style matching and the calibration metrics LaECE0, LaACE0, LRP, D-ECE and Brier (numpy).

References
- Oksuz et al., "Towards Building Self-Aware Object Detectors via Reliable Uncertainty
  Quantification and Calibration", CVPR 2023: LaECE (target = IoU for a TP, 0 for a FP), LRP and
  LRP-optimal thresholds as the operating point.
- Kuzucu et al., "On Calibration of Object Detectors: Pitfalls, Evaluation and Baselines", ECCV
  2024: tau = 0 (LaECE0, LaACE0), per-class evaluation after LRP-optimal thresholding.
- Küppers et al., "Multivariate Confidence Calibration for Object Detection", CVPR-W 2020: D-ECE.
Class means, bin edges, tie handling and the no-TP threshold follow the semantics of the official
code (github.com/fiveai/detection_calibration) unless a docstring says otherwise. Code written here.

Why thresholds can be applied after matching: detections are matched one by one by descending
score, each taking a ground truth still free after the higher-scoring ones, so the matches of the
detections scoring >= t do not depend on those below t (crowd regions absorb any number of
detections and never become unavailable). A threshold keeps a prefix of that order, so one matching
serves every threshold (tests/metrics/test_calibration.py checks it against re-matching).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# the matching lives in match.py; its names stay importable from here
from .match import (  # noqa: F401
    AREA_ALL,
    MAX_DETS,
    Bools,
    Candidates,
    DetectionSet,
    Floats,
    Ints,
    box_iou,
    candidates,
    greedy_match,
)

TAU = 0.0  # LaECE0/LaACE0/LRP: a TP needs IoU > TAU, so a box with no overlap never matches
LAECE_BINS = 25
DECE_IOU, DECE_BINS, DECE_SCORE_MIN = 0.5, 10, 0.3  # D-ECE: TP at IoU >= 0.5, scores >= 0.3
BRIER_IOU = 0.5


def _segment_cumsum(x: Floats, seg: Ints, n_seg: int) -> Floats:
    """Cumulative sum of x restarting at each segment; seg[i] is x[i]'s segment (ascending)."""
    total = np.cumsum(x)
    before = np.r_[0.0, total][np.searchsorted(seg, np.arange(n_seg))]  # [n_seg]
    out: Floats = total - before[seg]
    return out


def lrp_optimal_thresholds(
    cat: Ints,
    score: Floats,
    tp: Bools,
    iou: Floats,
    n_gt: Ints | Floats,
    tau: float = TAU,
    weight: Floats | None = None,
) -> tuple[Floats, Floats]:
    """Per class the score threshold minimising LRP; returns (thr[K], lrp[K]).

    LRP(t) = (sum_TP (1 - IoU) / (1 - tau) + N_FP + N_FN) / (N_TP + N_FP + N_FN) over the
    (non-ignored) detections scoring >= t, from cumulative sums over the score-sorted list. The
    candidates are the distinct scores: unlike the official code, no cut inside a score tie, which
    no threshold can make. Ties between thresholds go to the highest, as its np.argmin. A class
    without any TP has LRP 1 at every threshold: NaN, which keeps all its detections (the official
    code's behaviour). A class without ground truth: NaN, NaN. weight[D] (> 0): how many times
    each detection counts (its image's count in a bootstrap resample); None: once.
    """
    K = len(n_gt)
    thr, best = np.full(K, np.nan), np.full(K, np.nan)
    order = np.lexsort((-score, cat))
    c, s = cat[order], score[order]
    w = np.ones(len(c)) if weight is None else np.asarray(weight, np.float64)[order]
    is_tp = tp[order].astype(np.float64)
    n_tp = _segment_cumsum(w * is_tp, c, K)
    n_fp = _segment_cumsum(w * (1.0 - is_tp), c, K)
    loc = _segment_cumsum(w * is_tp * (1.0 - iou[order]), c, K)
    last_of_tie = np.r_[(c[1:] != c[:-1]) | (s[1:] != s[:-1]), True][: len(c)]
    idx = np.flatnonzero(last_of_tie & (n_gt[c] > 0))
    if len(idx) == 0:
        return thr, best
    cls, ng = c[idx], n_gt[c[idx]]
    lrp = (loc[idx] / (1.0 - tau) + n_fp[idx] + (ng - n_tp[idx])) / (n_fp[idx] + ng)
    best_all = np.full(K, np.inf)
    np.minimum.at(best_all, cls, lrp)
    at_min = lrp == best_all[cls]
    chosen_cls, first = np.unique(cls[at_min], return_index=True)  # first = highest score
    has_tp = np.bincount(c, weights=w * is_tp, minlength=K) > 0
    thr[chosen_cls] = np.where(has_tp[chosen_cls], s[idx[at_min][first]], np.nan)
    best[chosen_cls] = best_all[chosen_cls]
    return thr, best


@dataclass(frozen=True)
class Calibration:
    """Calibration results: per-class arrays [K], reliability sums [K, LAECE_BINS]."""

    laece0: float
    laace0: float
    lrp: float
    dece: float
    brier: float
    threshold: Floats  # per class; NaN keeps all (see lrp_optimal_thresholds)
    class_laece0: Floats  # NaN: no ground truth or no kept detection
    class_laace0: Floats
    class_lrp: Floats  # NaN: no ground truth
    n_dets: Ints  # evaluated detections (top MAX_DETS per image, not matched to a crowd region)
    n_kept: Ints  # of those, at or above the threshold
    n_gt: Ints  # non-ignored ground truths
    n_dece: int  # detections scoring >= DECE_SCORE_MIN: what D-ECE is computed on (0: NaN)
    bin_count: Ints  # [K, B] kept detections per score bin
    bin_score: Floats  # [K, B] their summed scores
    bin_target: Floats  # [K, B] their summed targets (IoU for a TP, 0 for a FP)


def _mean(x: Floats) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def _sum_by(index: Ints, weights: Floats, n: int) -> Floats:
    """np.bincount with weights, typed as the floats it returns."""
    out: Floats = np.bincount(index, weights, n).astype(np.float64, copy=False)
    return out


def _counts(x: Floats) -> Ints:
    """Weighted counts back to integers (the weights are image counts)."""
    return np.rint(x).astype(np.int64)


def laece_bins(score: Floats, n_bins: int = LAECE_BINS) -> Ints:
    """Equal-width bins over [0, 1], right-closed, the first [0, 1/B]: the official LaECE code."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, score, side="left") - 1, 0, n_bins - 1)


def dece_bins(score: Floats, n_bins: int = DECE_BINS) -> Ints:
    """Equal-width bins over [0, 1], left-closed, the last closed: netcal (np.histogram)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, score, side="right") - 1, 0, n_bins - 1)


@dataclass(frozen=True)
class Records:
    """The evaluated detections after the one matching, and the non-ignored ground truths: all the
    calibration metrics aggregate. Setting 0 is tau = 0 (IoU > 0: LaECE0, LaACE0, LRP), setting 1
    IoU >= 0.5 (D-ECE, Brier). Re-weighting images (a bootstrap resample) re-aggregates them
    without matching again."""

    img: Ints  # [N] image index
    cat: Ints  # [N]
    score: Floats  # [N]
    tp: Bools  # [N, 2]
    target: Floats  # [N, 2] IoU for a TP, 0 for a FP
    valid: Bools  # [N, 2] False: matched to a crowd region, neither TP nor FP (left out)
    gt_img: Ints  # [G'] the ground truths that count (not crowd, 'area' inside AREA_ALL)
    gt_cat: Ints  # [G']
    n_img: int
    n_cat: int


def match_records(ds: DetectionSet, cand: Candidates) -> Records:
    """Match once at IoU > 0 and IoU >= 0.5 (greedy_match) and keep one record per detection."""
    ignored_gt = ds.gt_ignored()
    settings = np.array([TAU, DECE_IOU]), np.array([True, False])  # IoU > 0, IoU >= 0.5
    both = np.stack([ignored_gt, ignored_gt], axis=1)  # [G, 2]
    match = greedy_match(cand, ds.gt_crowd, both, *settings)  # [N, 2]
    matched = match >= 0
    crowd_hit = np.zeros_like(matched)  # [N, 2]
    crowd_hit[matched] = ignored_gt[cand.pair_gt[match[matched]]]
    tp = matched & ~crowd_hit
    target = np.zeros(match.shape)  # IoU for a TP, 0 for a FP
    target[tp] = cand.pair_iou[match[tp]]
    return Records(
        img=ds.dt_img[cand.det],
        cat=ds.dt_cat[cand.det],
        score=ds.dt_score[cand.det],
        tp=tp,
        target=target,
        valid=~crowd_hit,
        gt_img=ds.gt_img[~ignored_gt],
        gt_cat=ds.gt_cat[~ignored_gt],
        n_img=len(ds.img_ids),
        n_cat=len(ds.cat_ids),
    )


def calibration_metrics(
    ds: DetectionSet, cand: Candidates, threshold: str | float = "lrp"
) -> Calibration:
    """LaECE0, LaACE0 and LRP after `threshold`, D-ECE and Brier on every detection.

    threshold: "lrp" (each class's LRP-optimal threshold), "none", or keep scores >= the number.
    Per class, with target = IoU for a TP (IoU > 0), 0 for a FP:
      LaECE0 = sum_b (n_b / n) |mean score_b - mean target_b| = sum_b |sum s_b - sum t_b| / n,
      LaACE0 = the same with adaptive bins of one detection each (the official LaACE0), i.e. the
      mean |score - target|. Both are averaged over classes with ground truth and >= 1 kept
      detection; LRP over classes with ground truth (no kept detection: 1).
    D-ECE: every class pooled, scores >= 0.3, TP at IoU >= 0.5, 10 bins, sum_b (n_b/N)|acc - conf|
      (Küppers et al.; netcal's ECE with sample_threshold 1: an empty bin adds no gap). It does not
      depend on how the detections split into classes. Defined whenever at least one detection
      scores >= 0.3 (`n_dece` counts them); with none it is NaN, as in netcal (0 / 0): no bin
      holds a sample, and 0 would rank a model that is never confident as perfectly calibrated.
      Early in training (prior-probability init, scores near 0.01) that is the usual case.
    Brier: mean (score - [TP at IoU >= 0.5])^2 over every evaluated detection.
    Detections matched to a crowd region are neither TP nor FP and left out, as in COCOeval.
    """
    return calibration_from_records(match_records(ds, cand), threshold)


def calibration_from_records(
    rec: Records, threshold: str | float = "lrp", img_weight: Floats | Ints | None = None
) -> Calibration:
    """calibration_metrics from matched records; img_weight[I]: how many times each image counts
    (a bootstrap resample; None: once each). LRP-optimal thresholds are chosen on the weighted set,
    as they would be on a set with the images repeated."""
    K, B = rec.n_cat, LAECE_BINS
    w_img = np.ones(rec.n_img) if img_weight is None else np.asarray(img_weight, np.float64)
    if w_img.shape != (rec.n_img,) or (w_img < 0).any():
        raise ValueError(f"img_weight: expected {rec.n_img} weights >= 0, got {w_img.shape}")
    w = w_img[rec.img]  # [N]
    n_gt = _sum_by(rec.gt_cat, w_img[rec.gt_img], K)  # [K]

    valid = rec.valid[:, 0] & (w > 0)
    c, s, t, iou = rec.cat[valid], rec.score[valid], rec.tp[valid, 0], rec.target[valid, 0]
    wv = w[valid]
    n_dets = _sum_by(c, wv, K)
    if threshold == "lrp":
        thr = lrp_optimal_thresholds(c, s, t, iou, n_gt, weight=wv)[0]
    else:
        thr = np.full(K, 0.0 if threshold == "none" else float(threshold))
    keep = s >= np.where(np.isnan(thr), -np.inf, thr)[c]
    c, s, t, iou, wv = c[keep], s[keep], t[keep], iou[keep], wv[keep]

    n_kept = _sum_by(c, wv, K)
    n_tp = _sum_by(c, wv * t, K)
    loc = _sum_by(c, wv * t * (1.0 - iou), K)
    flat = c * B + laece_bins(s)
    bin_count = _sum_by(flat, wv, K * B).reshape(K, B)
    bin_score = _sum_by(flat, wv * s, K * B).reshape(K, B)
    bin_target = _sum_by(flat, wv * iou, K * B).reshape(K, B)
    with np.errstate(divide="ignore", invalid="ignore"):
        lrp = (loc / (1.0 - TAU) + (n_kept - n_tp) + (n_gt - n_tp)) / (n_kept - n_tp + n_gt)
        laece = np.abs(bin_score - bin_target).sum(axis=1) / n_kept
        laace = _sum_by(c, wv * np.abs(s - iou), K) / n_kept
    has_gt = n_gt > 0
    rated = has_gt & (n_kept > 0)
    lrp[~has_gt], laece[~rated], laace[~rated] = np.nan, np.nan, np.nan

    # D-ECE and Brier: IoU >= 0.5, no threshold, every class (with or without ground truth).
    valid = rec.valid[:, 1] & (w > 0)
    s, t, wv = rec.score[valid], rec.tp[valid, 1].astype(np.float64), w[valid]
    sel = s >= DECE_SCORE_MIN
    b = dece_bins(s[sel])
    gap = np.abs(_sum_by(b, wv[sel] * t[sel], DECE_BINS) - _sum_by(b, wv[sel] * s[sel], DECE_BINS))
    n_dece = wv[sel].sum()
    return Calibration(
        laece0=_mean(laece[rated]),
        laace0=_mean(laace[rated]),
        lrp=_mean(lrp[has_gt]),
        dece=float(gap.sum() / n_dece) if n_dece > 0 else float("nan"),
        brier=float(np.sum(wv * (s - t) ** 2) / wv.sum()) if len(s) else float("nan"),
        threshold=thr,
        class_laece0=laece,
        class_laace0=laace,
        class_lrp=lrp,
        n_dets=_counts(n_dets),
        n_kept=_counts(n_kept),
        n_gt=_counts(n_gt),
        n_dece=int(round(n_dece)),
        bin_count=_counts(bin_count),
        bin_score=bin_score,
        bin_target=bin_target,
    )


def protocol(threshold: str | float) -> dict[str, Any]:
    """Every setting behind the calibration numbers, to log next to them."""
    mode = threshold if threshold in ("lrp", "none") else "fixed"
    return {
        "matching": "per image and class by descending score (ties: input order), greedy "
        "one-to-one with the free gt of highest IoU (ties: later annotation), COCOeval crowd rules",
        "crowd": "a detection matched to a crowd region is neither TP nor FP (left out)",
        "max_dets_per_image_class": MAX_DETS,
        "tau": TAU,
        "tau_rule": "IoU > tau",
        "laece0": {
            "bins": LAECE_BINS,
            "binning": "equal width over [0, 1], right-closed, first bin [0, 0.04] (official)",
            "target": "IoU for TP, 0 for FP",
            "class_mean": "classes with ground truth and >= 1 detection after the threshold",
        },
        "laace0": {"bins": "adaptive, one detection per bin (official)", "class_mean": "as laece0"},
        "lrp": {"class_mean": "classes with ground truth; no detection after the threshold: 1"},
        "calib_threshold": {
            "mode": mode,
            "value": float(threshold) if mode == "fixed" else None,
            "applies_to": ["laece0", "laace0", "lrp"],
            "rule": "keep score >= threshold; lrp: per class the LRP-minimising distinct score "
            "(highest on ties); NaN (no TP, or no ground truth) keeps all",
        },
        "dece": {
            "iou": DECE_IOU,
            "iou_rule": "IoU >= iou",
            "bins": DECE_BINS,
            "binning": "equal width over [0, 1], left-closed, last bin closed (netcal)",
            "score_min": DECE_SCORE_MIN,
            "pooled": True,
            "empty_bins": "no gap, weight 0 (netcal, sample_threshold 1)",
            "undefined": "NaN when no detection scores >= score_min (dece_n = 0)",
        },
        "brier": {"iou": BRIER_IOU, "iou_rule": "IoU >= iou", "detections": "all, unthresholded"},
    }
