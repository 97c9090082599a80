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
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

MAX_DETS = 100  # per image and class, as COCOeval: lower-scoring ones are not evaluated at all
AREA_ALL = (0.0, 1e10)  # COCOeval's 'all' range; a gt 'area' outside it is ignored like a crowd
TAU = 0.0  # LaECE0/LaACE0/LRP: a TP needs IoU > TAU, so a box with no overlap never matches
LAECE_BINS = 25
DECE_IOU, DECE_BINS, DECE_SCORE_MIN = 0.5, 10, 0.3  # D-ECE: TP at IoU >= 0.5, scores >= 0.3
BRIER_IOU = 0.5


@dataclass(frozen=True)
class DetectionSet:
    """Ground truth and detections as arrays: G ground truths, D detections, I images, K classes.

    `*_img` / `*_cat` index `img_ids` / `cat_ids` (both ascending, COCOeval's order). Boxes are
    COCO xywh. Detections keep their input order: it breaks score ties, as in COCOeval.
    """

    img_ids: Ints  # [I]
    cat_ids: Ints  # [K]
    cat_names: tuple[str, ...]  # [K]
    gt_img: Ints  # [G]
    gt_cat: Ints  # [G]
    gt_box: Floats  # [G, 4]
    gt_area: Floats  # [G] the annotation's 'area': COCOeval's area ranges use it, not the box
    gt_crowd: Bools  # [G]
    gt_id: Ints  # [G] annotation ids (COCOeval reads a match to id 0 as no match; see coco.py)
    dt_img: Ints  # [D]
    dt_cat: Ints  # [D]
    dt_box: Floats  # [D, 4]
    dt_score: Floats  # [D]

    def gt_ignored(self, lo: float = AREA_ALL[0], hi: float = AREA_ALL[1]) -> Bools:
        """[G] COCOeval's ignore flag for the area range [lo, hi]: crowd, or 'area' outside."""
        return self.gt_crowd | (self.gt_area < lo) | (self.gt_area > hi)


@dataclass(frozen=True)
class Candidates:
    """The N evaluated detections (top MAX_DETS per image and class) and their P gt pairs.

    Detections are sorted by (image, class, score descending, input order). A pair joins a detection
    with a gt of its image and class. Pairs are sorted by the detection's rank, so those of rank r
    are the slice rank_start[r]:rank_start[r + 1]; inside it, grouped by detection, gts in input
    order.
    """

    det: Ints  # [N] index into ds.dt_*
    rank: Ints  # [N] position inside its (image, class) group, 0 = highest score
    pair_det: Ints  # [P] index into the N evaluated detections
    pair_gt: Ints  # [P] index into ds.gt_*
    pair_iou: Floats  # [P]
    rank_start: Ints  # [R + 1]


def box_iou(dt: Floats, gt: Floats, crowd: Bools) -> Floats:
    """IoU of row-aligned xywh boxes dt[P, 4] and gt[P, 4]; a crowd gt's union is the dt's area.

    The same operations in the same order as pycocotools' bbIou: bit-identical values.
    """
    w = np.minimum(dt[:, 2] + dt[:, 0], gt[:, 2] + gt[:, 0]) - np.maximum(dt[:, 0], gt[:, 0])
    h = np.minimum(dt[:, 3] + dt[:, 1], gt[:, 3] + gt[:, 1]) - np.maximum(dt[:, 1], gt[:, 1])
    inter = w * h
    dt_area = dt[:, 2] * dt[:, 3]
    union = np.where(crowd, dt_area, dt_area + gt[:, 2] * gt[:, 3] - inter)
    iou: Floats = np.divide(inter, union, out=np.zeros_like(inter), where=(w > 0) & (h > 0))
    return iou


def candidates(ds: DetectionSet, max_dets: int = MAX_DETS) -> Candidates:
    """Rank detections in their (image, class) group, keep the top max_dets, pair them with gts."""
    K, D = len(ds.cat_ids), len(ds.dt_score)
    dt_key = ds.dt_img * K + ds.dt_cat  # [D] group id
    order = np.lexsort((np.arange(D), -ds.dt_score, dt_key))  # score ties keep input order
    key = dt_key[order]
    new_group = np.r_[True, key[1:] != key[:-1]] if D else np.zeros(0, bool)
    rank = np.arange(D) - np.flatnonzero(new_group)[np.cumsum(new_group) - 1]
    keep = rank < max_dets
    det, rank, key = order[keep], rank[keep], key[keep]

    gt_order = np.argsort(ds.gt_img * K + ds.gt_cat, kind="stable")
    gt_key = (ds.gt_img * K + ds.gt_cat)[gt_order]
    lo = np.searchsorted(gt_key, key, side="left")  # [N] the detection's gts: gt_order[lo:hi]
    n_pairs = np.searchsorted(gt_key, key, side="right") - lo
    pair_det = np.repeat(np.arange(len(det)), n_pairs)  # [P]
    offset = np.arange(len(pair_det)) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    pair_gt = gt_order[np.repeat(lo, n_pairs) + offset]

    by_rank = np.argsort(rank[pair_det], kind="stable")
    pair_det, pair_gt = pair_det[by_rank], pair_gt[by_rank]
    n_ranks = int(rank.max()) + 1 if len(rank) else 0
    rank_start = np.searchsorted(rank[pair_det], np.arange(n_ranks + 1))
    iou = box_iou(ds.dt_box[det[pair_det]], ds.gt_box[pair_gt], ds.gt_crowd[pair_gt])
    return Candidates(det, rank, pair_det, pair_gt, iou, rank_start)


def greedy_match(
    cand: Candidates, gt_crowd: Bools, gt_ignore: Bools, thr: Floats, strict: Bools
) -> Ints:
    """COCOeval's greedy matching for C settings at once; returns match[N, C]: a pair or -1.

    Setting c: a pair qualifies if IoU > thr[c] (strict[c]) else IoU >= thr[c]. By descending score
    each detection takes the qualifying free gt of highest IoU (ties: the later annotation, as
    COCOeval). Ignored gts (gt_ignore[G, C]: crowd or outside the area range) are only tried when no
    regular gt qualifies; crowd regions stay free. Detections of equal rank lie in different
    (image, class) groups and never compete, so each rank is one vectorized step.
    """
    N, C = len(cand.det), len(thr)
    match = np.full((N, C), -1, np.int64)
    taken = np.zeros((len(gt_crowd), C), bool)  # [G, C]
    # Pairs below every threshold never match: drop them first (most pairs, in practice).
    iou_all = cand.pair_iou[:, None]
    live = np.flatnonzero(np.where(strict, iou_all > thr, iou_all >= thr).any(axis=1))
    rank_start = np.searchsorted(cand.rank[cand.pair_det[live]], np.arange(len(cand.rank_start)))
    for r in range(len(rank_start) - 1):
        p = live[rank_start[r] : rank_start[r + 1]]  # [Pr] pairs of rank r
        if len(p) == 0:
            continue
        d, g, iou = cand.pair_det[p], cand.pair_gt[p], cand.pair_iou[p, None]
        ok = np.where(strict, iou > thr, iou >= thr) & ~(taken[g] & ~gt_crowd[g, None])  # [Pr, C]
        ignored = gt_ignore[g]  # [Pr, C]
        new_det = np.r_[True, d[1:] != d[:-1]]
        seg = np.flatnonzero(new_det)  # [S] first pair of each detection
        seg_of = np.cumsum(new_det) - 1  # [Pr]
        has_regular = np.logical_or.reduceat(ok & ~ignored, seg, axis=0)  # [S, C]
        usable = ok & (ignored != has_regular[seg_of])
        score = np.where(usable, iou, -1.0)
        at_best = usable & (score == np.maximum.reduceat(score, seg, axis=0)[seg_of])
        pick = np.maximum.reduceat(np.where(at_best, p[:, None], -1), seg, axis=0)  # [S, C]
        match[d[seg]] = pick
        rows, cols = np.nonzero(pick >= 0)
        taken[cand.pair_gt[pick[rows, cols]], cols] = True
    return match


def _segment_cumsum(x: Floats, seg: Ints, n_seg: int) -> Floats:
    """Cumulative sum of x restarting at each segment; seg[i] is x[i]'s segment (ascending)."""
    total = np.cumsum(x)
    before = np.r_[0.0, total][np.searchsorted(seg, np.arange(n_seg))]  # [n_seg]
    out: Floats = total - before[seg]
    return out


def lrp_optimal_thresholds(
    cat: Ints, score: Floats, tp: Bools, iou: Floats, n_gt: Ints, tau: float = TAU
) -> tuple[Floats, Floats]:
    """Per class the score threshold minimising LRP; returns (thr[K], lrp[K]).

    LRP(t) = (sum_TP (1 - IoU) / (1 - tau) + N_FP + N_FN) / (N_TP + N_FP + N_FN) over the
    (non-ignored) detections scoring >= t, from cumulative sums over the score-sorted list. The
    candidates are the distinct scores: unlike the official code, no cut inside a score tie, which
    no threshold can make. Ties between thresholds go to the highest, as its np.argmin. A class
    without any TP has LRP 1 at every threshold: NaN, which keeps all its detections (the official
    code's behaviour). A class without ground truth: NaN, NaN.
    """
    K = len(n_gt)
    thr, best = np.full(K, np.nan), np.full(K, np.nan)
    order = np.lexsort((-score, cat))
    c, s = cat[order], score[order]
    is_tp = tp[order].astype(np.float64)
    n_tp = _segment_cumsum(is_tp, c, K)
    n_fp = _segment_cumsum(1.0 - is_tp, c, K)
    loc = _segment_cumsum(is_tp * (1.0 - iou[order]), c, K)
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
    has_tp = np.bincount(c, weights=is_tp, minlength=K) > 0
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
    bin_count: Ints  # [K, B] kept detections per score bin
    bin_score: Floats  # [K, B] their summed scores
    bin_target: Floats  # [K, B] their summed targets (IoU for a TP, 0 for a FP)


def _mean(x: Floats) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def laece_bins(score: Floats, n_bins: int = LAECE_BINS) -> Ints:
    """Equal-width bins over [0, 1], right-closed, the first [0, 1/B]: the official LaECE code."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, score, side="left") - 1, 0, n_bins - 1)


def dece_bins(score: Floats, n_bins: int = DECE_BINS) -> Ints:
    """Equal-width bins over [0, 1], left-closed, the last closed: netcal (np.histogram)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, score, side="right") - 1, 0, n_bins - 1)


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
    D-ECE: every class pooled, scores >= 0.3, TP at IoU >= 0.5, 10 bins, sum_b (n_b/N)|acc - conf|.
    Brier: mean (score - [TP at IoU >= 0.5])^2 over every evaluated detection.
    Detections matched to a crowd region are neither TP nor FP and left out, as in COCOeval.
    """
    K, B = len(ds.cat_ids), LAECE_BINS
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
    cat, score = ds.dt_cat[cand.det], ds.dt_score[cand.det]
    n_gt = np.bincount(ds.gt_cat[~ignored_gt], minlength=K)

    valid = ~crowd_hit[:, 0]
    c, s, t, iou = cat[valid], score[valid], tp[valid, 0], target[valid, 0]
    if threshold == "lrp":
        thr = lrp_optimal_thresholds(c, s, t, iou, n_gt)[0]
    else:
        thr = np.full(K, 0.0 if threshold == "none" else float(threshold))
    keep = s >= np.where(np.isnan(thr), -np.inf, thr)[c]
    c, s, t, iou = c[keep], s[keep], t[keep], iou[keep]

    n_kept = np.bincount(c, minlength=K)
    n_tp = np.bincount(c, weights=t, minlength=K)
    loc = np.bincount(c, weights=t * (1.0 - iou), minlength=K)
    flat = c * B + laece_bins(s)
    bin_count = np.bincount(flat, minlength=K * B).reshape(K, B)
    bin_score = np.bincount(flat, weights=s, minlength=K * B).reshape(K, B).astype(np.float64)
    bin_target = np.bincount(flat, weights=iou, minlength=K * B).reshape(K, B).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lrp = (loc / (1.0 - TAU) + (n_kept - n_tp) + (n_gt - n_tp)) / (n_kept - n_tp + n_gt)
        laece = np.abs(bin_score - bin_target).sum(axis=1) / n_kept
        laace = np.bincount(c, weights=np.abs(s - iou), minlength=K) / n_kept
    has_gt = n_gt > 0
    rated = has_gt & (n_kept > 0)
    lrp[~has_gt], laece[~rated], laace[~rated] = np.nan, np.nan, np.nan

    # D-ECE and Brier: IoU >= 0.5, no threshold, every class (with or without ground truth).
    valid = ~crowd_hit[:, 1]
    s, t = score[valid], tp[valid, 1].astype(np.float64)
    sel = s >= DECE_SCORE_MIN
    b = dece_bins(s[sel])
    gap = np.abs(np.bincount(b, t[sel], DECE_BINS) - np.bincount(b, s[sel], DECE_BINS))
    return Calibration(
        laece0=_mean(laece[rated]),
        laace0=_mean(laace[rated]),
        lrp=_mean(lrp[has_gt]),
        dece=float(gap.sum() / sel.sum()) if sel.any() else float("nan"),
        brier=_mean((s - t) ** 2),
        threshold=thr,
        class_laece0=laece,
        class_laace0=laace,
        class_lrp=lrp,
        n_dets=np.bincount(cat[~crowd_hit[:, 0]], minlength=K),
        n_kept=n_kept,
        n_gt=n_gt,
        bin_count=bin_count,
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
        },
        "brier": {"iou": BRIER_IOU, "iou_rule": "IoU >= iou", "detections": "all, unthresholded"},
    }
