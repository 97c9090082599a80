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
from typing import Any

import numpy as np

from .calibration import Bools, Candidates, DetectionSet, Floats, Ints, greedy_match

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


def _accumulate(
    ds: DetectionSet, cand: Candidates, match: Ints, gt_ign: Bools
) -> tuple[Floats, Floats]:
    """COCOeval.accumulate for all classes: precision[T, R, K, A, M] and recall[T, K, A, M]."""
    T, R, K, A, M = len(IOU_THRS), len(REC_THRS), len(ds.cat_ids), len(AREA_RNGS), len(MAX_DETS)
    det, setting = np.divmod(np.flatnonzero(match >= 0), match.shape[1])  # setting c = a*T + t
    pair = match[det, setting]
    # COCOeval's dtMatches holds the matched gt's id: a match to annotation id 0 reads as none
    dtm = np.zeros(match.shape, bool)  # [N, A*T]
    dtm[det, setting] = ds.gt_id[cand.pair_gt[pair]] != 0
    dt_ign = np.zeros(match.shape, bool)
    dt_ign[det, setting] = gt_ign[cand.pair_gt[pair], setting // T]
    box = ds.dt_box[cand.det]
    area = box[:, 2] * box[:, 3]
    lo, hi = np.array(AREA_RNGS).T
    outside = ((area[:, None] < lo) | (area[:, None] > hi))[:, np.arange(A * T) // T]  # [N, A*T]
    dt_ign |= ~dtm & outside

    cat, score, img = ds.dt_cat[cand.det], ds.dt_score[cand.det], ds.dt_img[cand.det]
    # accumulate concatenates the images in id order, each sorted by score, then mergesorts by score
    order = np.lexsort((cand.rank, img, -score, cat))
    tp_all = np.ascontiguousarray((dtm & ~dt_ign)[order].T)  # [A*T, N]
    ign_all = np.ascontiguousarray(dt_ign[order].T)
    rank = cand.rank[order]
    bounds = np.searchsorted(cat[order], np.arange(K + 1))
    npig = np.stack([np.bincount(ds.gt_cat[~gt_ign[:, a]], minlength=K) for a in range(A)], 1)
    precision, recall = -np.ones((T, R, K, A, M)), -np.ones((T, K, A, M))
    max_dets = np.array(MAX_DETS)
    for k in range(K):
        if not npig[k].any():
            continue
        cols = slice(bounds[k], bounds[k + 1])
        kept = rank[cols][None, :] < max_dets[:, None]  # [M, n] COCOeval's per-image maxDets cut
        tp = tp_all[None, :, cols] & kept[:, None, :]  # [M, A*T, n]
        ign = ign_all[None, :, cols] & kept[:, None, :]
        rows = M * A * T
        q, rc = _interpolate(tp.reshape(rows, -1), ign.reshape(rows, -1), kept.cumsum(1), npig[k])
        has = npig[k] > 0
        precision[:, :, k, has, :] = q.reshape(M, A, T, R).transpose(2, 3, 1, 0)[:, :, has]
        recall[:, k, has, :] = rc.reshape(M, A, T).transpose(2, 1, 0)[:, has]
    return precision, recall


def _interpolate(tp: Bools, ign: Bools, kept_cum: Ints, npig: Ints) -> tuple[Floats, Floats]:
    """Interpolated precision q[S, R] and final recall rc[S] from score-sorted flags [S, n].

    Row s = (m, a, t). COCOeval computes rc = tp/npig and pr = tp/(fp + tp + eps) at all n
    positions, takes the right-to-left running max of pr and reads it at searchsorted(rc, recThrs).
    Both change only at TPs and that search always lands on a TP (or position 0, whose running max
    is the max over the TPs), so evaluating at the TPs alone gives the same floats with the same
    operations, and every row is done at once. kept_cum[m, i]: detections kept under maxDets m at
    positions <= i; npig[a]: non-ignored gts.
    """
    S, n = tp.shape
    M, A = kept_cum.shape[0], len(npig)
    T = S // (M * A)
    flat = np.flatnonzero(tp)  # TPs as row * n + position (~3x faster than np.nonzero)
    rows, pos = np.divmod(flat, max(n, 1))
    n_tp = np.bincount(rows, minlength=S)  # [S]
    j = np.arange(len(rows)) - np.repeat(np.cumsum(n_tp) - n_tp, n_tp) + 1  # TPs up to this one
    ign_flat = np.flatnonzero(ign)
    # ignored detections in the same row at or before pos (row starts at flat - pos)
    ign_before = np.searchsorted(ign_flat, flat, "right") - np.searchsorted(ign_flat, flat - pos)
    tp_sum = j.astype(np.float64)
    fp_sum = (kept_cum[rows // (A * T), pos] - j - ign_before).astype(np.float64)
    width = max(int(n_tp.max()), 1) if S else 1
    pr = np.zeros((S, width))
    pr[rows, j - 1] = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision envelope
    q, rc = np.zeros((S, len(REC_THRS))), np.zeros(S)
    area_of_row = (np.arange(S) // T) % A
    n_kept = kept_cum[:, -1] if n else np.zeros(M, np.int64)
    for a in np.flatnonzero(npig):
        sel = area_of_row == a
        rc_at_tp = np.arange(1, width + 1) / npig[a]  # recall after the j-th TP, any row
        at = np.searchsorted(rc_at_tp, REC_THRS, side="left")  # [R]
        found = at[None, :] < n_tp[sel, None]
        q[sel] = np.where(found, pr[sel][:, np.minimum(at, width - 1)], 0.0)
        rc[sel] = np.where(n_kept[np.arange(S)[sel] // (A * T)] > 0, n_tp[sel] / npig[a], 0.0)
    return q, rc


def coco_eval_numpy(ds: DetectionSet, cand: Candidates) -> tuple[list[float], Floats]:
    """The 12 stats and precision[T, R, K, A, M] with the vectorized matcher."""
    T = len(IOU_THRS)
    lo, hi = np.array(AREA_RNGS).T
    gt_ign = ds.gt_crowd[:, None] | (ds.gt_area[:, None] < lo) | (ds.gt_area[:, None] > hi)
    thr = np.tile(np.minimum(IOU_THRS, 1 - 1e-10), len(AREA_RNGS))  # setting c = a*T + t
    strict = np.zeros(len(thr), bool)  # COCOeval: IoU >= t
    match = greedy_match(cand, ds.gt_crowd, np.repeat(gt_ign, T, axis=1), thr, strict)
    precision, recall = _accumulate(ds, cand, match, gt_ign)
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
