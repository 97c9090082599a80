"""COCO-style matching of detections to ground truth, shared by mAP (coco.py) and calibration.

DetectionSet holds a validated ground truth and results file as arrays; candidates() ranks the
detections per (image, class) and pairs them with the gts they can match; greedy_match() runs
COCOeval's greedy one-to-one matching for many IoU settings at once. Same semantics as pycocotools'
COCOeval.evaluateImg (crowd regions, ignore flags, score ties in input order); code written here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

MAX_DETS = 100  # per image and class, as COCOeval: lower-scoring ones are not evaluated at all
AREA_ALL = (0.0, 1e10)  # COCOeval's 'all' range; a gt 'area' outside it is ignored like a crowd


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
