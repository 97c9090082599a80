"""COCO bbox mAP: the 12 COCOeval stats and per-class AP, bit-for-bit as pycocotools computes them.

Two backends. "numpy" (default) re-implements COCOeval.evaluate/accumulate/summarize (pycocotools
2.0) on the vectorized matcher of calibration.py: the 10 IoU thresholds x 4 area ranges are matched
in one pass, >10x faster. "pycocotools" runs pycocotools itself (prints silenced): the reference
the tests compare to. COCOeval details kept on purpose, with the method they come from:
- top 100 detections per image and class, by score, ties in input order (computeIoU, mergesort);
- a gt is ignored if crowd or its 'area' field is outside the range; an unmatched detection whose
  box area is outside the range is ignored (evaluateImg);
- a match to an annotation with id 0 counts as no match (evaluateImg stores the gt id in dtMatches,
  accumulate tests it for truth);
- precision is interpolated at 101 recall points, classes without non-ignored gt are -1 and left out
  of the mean, a stat with nothing to average is -1 (accumulate, summarize).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from .match import Bools, Candidates, DetectionSet, Floats, Ints, greedy_match

COCO_STAT_KEYS = (
    "mAP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip
BACKENDS = ("numpy", "pycocotools")
# Same expressions as pycocotools' Params.setDetParams, so the floats are identical.
IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RNGS = ((0**2, 1e5**2), (0**2, 32**2), (32**2, 96**2), (96**2, 1e5**2))  # all, s, m, l
# (ap, iou threshold or None, area index, maxDets index) of each stat, as COCOeval.summarize
_SUMMARY = (
    (1, None, 0, 2), (1, 0.5, 0, 2), (1, 0.75, 0, 2),
    (1, None, 1, 2), (1, None, 2, 2), (1, None, 3, 2),
    (0, None, 0, 0), (0, None, 0, 1), (0, None, 0, 2),
    (0, None, 1, 2), (0, None, 2, 2), (0, None, 3, 2),
)  # fmt: skip


def _summarize(precision: Floats, recall: Floats) -> list[float]:
    """The 12 stats from precision[T, R, K, A, M] and recall[T, K, A, M]."""
    stats = []
    for ap, iou, a, m in _SUMMARY:
        s = precision if ap else recall
        if iou is not None:
            s = s[np.where(iou == IOU_THRS)[0]]
        s = s[..., a, m]
        stats.append(float(np.mean(s[s > -1])) if (s > -1).any() else -1.0)
    return stats


def class_ap(precision: Floats) -> Floats:
    """[K] AP per class at IoU .50:.95, area all, maxDets 100 (NaN: class without ground truth)."""
    p = precision[:, :, :, 0, -1]  # [T, R, K]
    valid = p > -1
    with np.errstate(invalid="ignore"):
        ap: Floats = np.where(valid, p, 0.0).sum(axis=(0, 1)) / valid.sum(axis=(0, 1))
    return ap


@dataclass(frozen=True)
class ImageEval:
    """COCOeval.evaluateImg for every image at once, kept for accumulation (N evaluated detections,
    G ground truths, settings c = a*T + t for A area ranges and T IoU thresholds).

    Detections are in accumulate's order: class, score descending, image id, rank (accumulate
    concatenates the images in id order, each sorted by score, then mergesorts by score). What
    accumulate needs from the matching is in `tp`/`ign`, so re-weighting images (a bootstrap
    resample) re-accumulates without matching again.
    """

    img: Ints  # [N] image index (DetectionSet.img_ids)
    cat: Ints  # [N] class index; class k is the slice bounds[k]:bounds[k + 1]
    rank: Ints  # [N] position inside its (image, class) group: the maxDets cut
    tp: Bools  # [A*T, N] matched a non-ignored gt whose id is not 0
    ign: Bools  # [A*T, N] matched an ignored gt, or unmatched with its box area outside the range
    bounds: Ints  # [K + 1]
    gt_img: Ints  # [G]
    gt_cat: Ints  # [G]
    gt_ign: Bools  # [G, A] crowd, or 'area' outside range a
    n_img: int


def image_eval(ds: DetectionSet, cand: Candidates) -> ImageEval:
    """Match all settings in one pass (match.greedy_match) and flag each detection."""
    T, A, K = len(IOU_THRS), len(AREA_RNGS), len(ds.cat_ids)
    lo, hi = np.array(AREA_RNGS).T
    gt_ign = ds.gt_crowd[:, None] | (ds.gt_area[:, None] < lo) | (ds.gt_area[:, None] > hi)
    thr = np.tile(np.minimum(IOU_THRS, 1 - 1e-10), A)  # setting c = a*T + t
    strict = np.zeros(len(thr), bool)  # COCOeval: IoU >= t
    match = greedy_match(cand, ds.gt_crowd, np.repeat(gt_ign, T, axis=1), thr, strict)

    det, setting = np.divmod(np.flatnonzero(match >= 0), match.shape[1])
    pair = match[det, setting]
    # COCOeval's dtMatches holds the matched gt's id: a match to annotation id 0 reads as none
    dtm = np.zeros(match.shape, bool)  # [N, A*T]
    dtm[det, setting] = ds.gt_id[cand.pair_gt[pair]] != 0
    dt_ign = np.zeros(match.shape, bool)
    dt_ign[det, setting] = gt_ign[cand.pair_gt[pair], setting // T]
    box = ds.dt_box[cand.det]
    area = box[:, 2] * box[:, 3]
    outside = ((area[:, None] < lo) | (area[:, None] > hi))[:, np.arange(A * T) // T]  # [N, A*T]
    dt_ign |= ~dtm & outside

    cat, score, img = ds.dt_cat[cand.det], ds.dt_score[cand.det], ds.dt_img[cand.det]
    order = np.lexsort((cand.rank, img, -score, cat))
    return ImageEval(
        img=img[order],
        cat=cat[order],
        rank=cand.rank[order],
        tp=np.ascontiguousarray((dtm & ~dt_ign)[order].T),
        ign=np.ascontiguousarray(dt_ign[order].T),
        bounds=np.searchsorted(cat[order], np.arange(K + 1)),
        gt_img=ds.gt_img,
        gt_cat=ds.gt_cat,
        gt_ign=gt_ign,
        n_img=len(ds.img_ids),
    )


def accumulate(ev: ImageEval, img_weight: Ints | None = None) -> tuple[Floats, Floats]:
    """COCOeval.accumulate for all classes: precision[T, R, K, A, M] and recall[T, K, A, M].

    img_weight[I]: how many times each image is in the evaluated set (a bootstrap resample; None:
    once each). The result is COCOeval's on the set with the images repeated and each detection's
    copies next to each other in the score order. COCOeval orders the repeated set that way too
    (copies of an image get adjacent ids), except where one image holds equal scores in one class:
    it would interleave those copies (d1, d2, d1, d2, not d1, d1, d2, d2), and the two can differ
    by such a tie's order, which is arbitrary either way (input order).
    """
    T, R, K, A, M = len(IOU_THRS), len(REC_THRS), len(ev.bounds) - 1, len(AREA_RNGS), len(MAX_DETS)
    w = np.ones(ev.n_img, np.int64) if img_weight is None else np.asarray(img_weight, np.int64)
    if w.shape != (ev.n_img,) or (w < 0).any():
        raise ValueError(f"img_weight: expected {ev.n_img} counts >= 0, got shape {w.shape}")
    det_w = w[ev.img]  # [N]
    npig = np.stack(
        [
            np.bincount(ev.gt_cat[~ev.gt_ign[:, a]], w[ev.gt_img[~ev.gt_ign[:, a]]], K)
            for a in range(A)
        ],
        1,
    ).astype(np.int64)  # [K, A] non-ignored gts, counted with their image's weight
    precision, recall = -np.ones((T, R, K, A, M)), -np.ones((T, K, A, M))
    max_dets = np.array(MAX_DETS)
    for k in range(K):
        if not npig[k].any():
            continue
        cols: slice | Ints = slice(ev.bounds[k], ev.bounds[k + 1])
        if not det_w[cols].all():  # an image left out of the resample is not evaluated
            cols = np.flatnonzero(det_w[cols]) + ev.bounds[k]
        kept = ev.rank[cols][None, :] < max_dets[:, None]  # [M, n] COCOeval's per-image maxDets
        tp = ev.tp[None, :, cols] & kept[:, None, :]  # [M, A*T, n]
        ign = ev.ign[None, :, cols] & kept[:, None, :]
        rows = M * A * T
        wk = det_w[cols]
        kept_cum = (kept * wk).cumsum(1)
        q, rc = _interpolate(tp.reshape(rows, -1), ign.reshape(rows, -1), kept_cum, wk, npig[k])
        has = npig[k] > 0
        precision[:, :, k, has, :] = q.reshape(M, A, T, R).transpose(2, 3, 1, 0)[:, :, has]
        recall[:, k, has, :] = rc.reshape(M, A, T).transpose(2, 1, 0)[:, has]
    return precision, recall


def recall_counts(npig: Ints) -> Ints:
    """need[..., R]: the fewest TPs c with c / npig >= REC_THRS[r] in floats, COCOeval's test.

    c / npig rises with c, so the answer is ceil(r * npig) give or take one rounding step.
    """
    npig = np.asarray(npig, np.int64)[..., None]
    c = np.ceil(REC_THRS * npig).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where((c > 0) & ((c - 1) / npig >= REC_THRS), c - 1, c)
        c = np.where(c / npig < REC_THRS, c + 1, c)
    return c


def _interpolate(
    tp: Bools, ign: Bools, kept_cum: Ints, w: Ints, npig: Ints
) -> tuple[Floats, Floats]:
    """Interpolated precision q[S, R] and final recall rc[S] from score-sorted flags [S, n].

    Row s = (m, a, t). COCOeval computes rc = tp/npig and pr = tp/(fp + tp + eps) at all n
    positions, takes the right-to-left running max of pr and reads it at searchsorted(rc, recThrs).
    Both change only at TPs and that search always lands on a TP (or position 0, whose running max
    is the max over the TPs), so evaluating at the TPs alone gives the same floats with the same
    operations, and every row is done at once. w[n]: each detection's weight (its image's count,
    > 0): a repeated TP is one position whose count rises by w, which reads the same running max as
    w adjacent copies would. kept_cum[m, i]: weight kept under maxDets m at positions <= i;
    npig[a]: non-ignored gts (weighted).
    """
    S, n = tp.shape
    M, A = kept_cum.shape[0], len(npig)
    T = S // (M * A)
    flat = np.flatnonzero(tp)  # TPs as row * n + position (~3x faster than np.nonzero)
    rows, pos = np.divmod(flat, max(n, 1))
    n_tp = np.bincount(rows, minlength=S)  # [S] TP positions per row
    first = np.cumsum(n_tp) - n_tp
    j = np.arange(len(rows)) - np.repeat(first, n_tp) + 1  # TP positions up to this one
    wt = np.cumsum(w[pos])
    tp_cum = wt - np.repeat(np.r_[0, wt][first], n_tp)  # weight of the TPs up to this one
    ign_flat = np.flatnonzero(ign)
    # weight of the ignored detections in the same row at or before pos (row starts at flat - pos)
    ign_lo, ign_hi = np.searchsorted(ign_flat, flat - pos), np.searchsorted(ign_flat, flat, "right")
    if (w == 1).all():  # the common case, once per image: a count (many ignored in area ranges)
        ign_before = ign_hi - ign_lo
    else:
        ign_w = np.r_[0, np.cumsum(w[ign_flat % max(n, 1)])]
        ign_before = ign_w[ign_hi] - ign_w[ign_lo]
    tp_sum = tp_cum.astype(np.float64)
    fp_sum = (kept_cum[rows // (A * T), pos] - tp_cum - ign_before).astype(np.float64)
    width = max(int(n_tp.max()), 1) if S else 1
    pr = np.zeros((S, width))
    pr[rows, j - 1] = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision envelope
    # Per row, the first TP whose count reaches need[r]: one search over the rows laid end to end,
    # each row's counts padded past its last TP with one more than any count needed.
    big = int(npig.max()) + 1
    stride = np.arange(S)[:, None] * (big + 1)
    counts = np.full((S, width), big, np.int64)
    counts[rows, j - 1] = tp_cum
    area_of_row = (np.arange(S) // T) % A
    need = recall_counts(npig)[area_of_row]  # [S, R]
    at = np.searchsorted((counts + stride).ravel(), need + stride) - np.arange(S)[:, None] * width
    found = at < n_tp[:, None]
    q = np.where(found, np.take_along_axis(pr, np.minimum(at, width - 1), 1), 0.0)
    n_kept = kept_cum[:, -1] if n else np.zeros(M, np.int64)
    tp_total = np.bincount(rows, w[pos], minlength=S)
    with np.errstate(divide="ignore", invalid="ignore"):  # rows of an area without gt: unused
        rc = np.where(n_kept[np.arange(S) // (A * T)] > 0, tp_total / npig[area_of_row], 0.0)
    return q, rc


def coco_eval_numpy(ds: DetectionSet, cand: Candidates) -> tuple[list[float], Floats]:
    """The 12 stats and precision[T, R, K, A, M] with the vectorized matcher."""
    precision, recall = accumulate(image_eval(ds, cand))
    return _summarize(precision, recall), precision


def coco_eval_pycocotools(gt: dict[str, Any], dets: list[Any]) -> tuple[list[float], Floats]:
    """The 12 stats and precision array from pycocotools itself (inputs copied, prints silenced).

    Expects validated input (evaluate.detection_set). Builds the results object as COCO.loadRes does
    for boxes (area = w*h, id = index + 1, iscrowd = 0) but without its assert on an empty list.
    Missing gt 'area' / 'iscrowd' / 'id' get the defaults detection_set uses.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    anns = []
    for i, a in enumerate(gt.get("annotations") or []):
        w, h = a["bbox"][2], a["bbox"][3]
        anns.append({"area": w * h, "iscrowd": 0, "id": i + 1, **a})
    results = [
        {**d, "area": d["bbox"][2] * d["bbox"][3], "id": i + 1, "iscrowd": 0}
        for i, d in enumerate(dets)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {**gt, "annotations": anns}
        coco_gt.createIndex()
        coco_dt.dataset = {"images": list(gt["images"]), "categories": list(gt["categories"])}
        coco_dt.dataset["annotations"] = results
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(x) for x in ev.stats], ev.eval["precision"]


def protocol(backend: str) -> dict[str, Any]:
    return {
        "backend": backend,
        "iou_thresholds": [float(t) for t in IOU_THRS],
        "max_dets": list(MAX_DETS),
        "area_ranges": dict(zip(("all", "small", "medium", "large"), map(list, AREA_RNGS))),
        "area_of": "gt: the annotation's 'area'; detection: box w*h",
        "class_ap": "IoU .50:.95, area all, maxDets 100 (NaN: no ground truth)",
        "undefined_stat": -1.0,
    }
