"""The metrics of one run on many image resamples at once, from one matching (issue 15).

A resample is a count per image (how many times it was drawn): counts[B, I] for B resamples. The
metrics of a resample are those of the set with each image repeated that many times (each
detection's copies adjacent in the score order: see coco.accumulate for the one tie case where
COCOeval would order them otherwise), as coco.accumulate and calibration.calibration_from_records
compute them for one weight vector. Tests check the two agree, and that both agree with evaluating
the repeated set from scratch (pycocotools for mAP).

What makes it fast: every quantity the metrics need is a weighted sum of per-detection records
over a prefix of a fixed score order (TPs and FPs above a TP, kept detections above a threshold).
Such sums are linear in the counts, so each is a sparse [queries, images] matrix built once
(PrefixSums); a batch of resamples costs one sparse-dense product plus work per query, never a pass
over all detections per resample. Only the TPs are queried for mAP (precision changes only there),
and only tie blocks holding a TP for the LRP-optimal threshold (the LRP minimum lies at one).
Pure numpy + scipy.sparse.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

from .calibration import (
    DECE_BINS,
    DECE_SCORE_MIN,
    LAECE_BINS,
    TAU,
    Records,
    dece_bins,
    laece_bins,
    match_records,
)
from .coco import IOU_THRS, MAX_DETS, REC_THRS, ImageEval, image_eval
from .match import MAX_DETS as EVALUATED_PER_IMAGE_CLASS
from .match import Bools, DetectionSet, Floats, Ints, candidates
from .prefix_sums import PrefixSums, reverse_cummax

MAP_METRICS = ("mAP", "AP50", "AP75", "AR100")  # area all, 100 detections: the others cost more
CALIB_METRICS = ("laece0", "laace0", "lrp", "dece", "brier")
METRICS = (*MAP_METRICS, *CALIB_METRICS)
LOWER_IS_BETTER = frozenset(CALIB_METRICS)
_CHUNK_CELLS = 250_000  # queries x resamples per batch: arrays of ~2 MB stay in the cache (~3x)


# exact recalls: c / n == r / 100 as fractions. Division rounds correctly, so c / n is then the
# float nearest r / 100 whatever c and n are, and COCOeval's test c / n >= REC_THRS[r] has one
# answer per r
_EXACT_REACHES = np.arange(len(REC_THRS)) / (len(REC_THRS) - 1) >= REC_THRS


def thresholds_reached(scaled: Floats) -> Floats:
    """#{r: REC_THRS[r] <= c / n} from scaled = 100 c / n (c TPs of n gts, both integers): the
    floor plus one, where the recall is no exact hundredth r / 100; where it is, _EXACT_REACHES[r]
    says. Other recalls lie >= 1 / n away from every hundredth (in scaled units), far beyond the
    1e-9 margin for any n < 1e9, and float error (~1e-13) never moves them across one."""
    f = np.floor(scaled + 1e-9)
    reached = f + 1.0
    flat = reached.reshape(-1)
    exact = np.flatnonzero((scaled - f).reshape(-1) < 1e-9)
    flat[exact] -= ~_EXACT_REACHES[f.reshape(-1)[exact].astype(np.int64)]
    return reached


class _MapOps:
    """mAP, AP50, AP75 and AR100 (area all, 100 detections per image and class) per resample.

    Precision at the j-th TP of (class, IoU threshold) is tp / (fp + tp + eps) with tp the TP weight
    up to it and fp = kept - ignored - tp above it (coco._interpolate). Recall threshold r reads the
    envelope at the first TP whose recall reaches it, so the 101-point AP is
    sum_j (F(recall_j) - F(recall_j-1)) envelope_j / 101 with F(x) = #{r: REC_THRS[r] <= x}.
    """

    def __init__(self, ev: ImageEval) -> None:
        assert EVALUATED_PER_IMAGE_CLASS <= MAX_DETS[-1], "candidates must all pass maxDets=100"
        T, K = len(IOU_THRS), len(ev.bounds) - 1
        self.T, self.K = T, K
        pos = np.arange(len(ev.cat)) - ev.bounds[ev.cat]  # position inside its class
        t, d = np.nonzero(ev.tp[:T])  # area 'all' is settings 0..T-1
        seg = ev.cat[d] * T + t
        order = np.lexsort((pos[d], seg))
        t, d, seg = t[order], d[order], seg[order]
        self.tp_seg = seg  # [P] (class, threshold) of each TP, P = all TPs of all thresholds
        # kept detections above each TP: one query per distinct (class, position)
        big = len(ev.cat) + 1
        uniq, self.tp_to_kept = np.unique(ev.cat[d] * big + pos[d], return_inverse=True)
        self.kept = PrefixSums(
            ev.n_img, ev.cat, pos, ev.img, np.ones((1, len(ev.cat))), uniq // big, uniq % big
        )
        ti, di = np.nonzero(ev.ign[:T])
        is_tp = np.r_[np.ones(len(d)), np.zeros(len(di))]  # records: the TPs, then the ignored
        self.tp_ign = PrefixSums(
            ev.n_img,
            np.r_[seg, ev.cat[di] * T + ti],
            np.r_[pos[d], pos[di]],
            np.r_[ev.img[d], ev.img[di]],
            np.stack([is_tp, 1.0 - is_tp]),
            seg,
            pos[d],
        )
        self.first = self.tp_ign.starts  # [S] first TP of each (class, threshold) with a TP
        self.last = self.first + self.tp_ign.lengths - 1
        gt = ~ev.gt_ign[:, 0]
        self.n_gt = np.zeros((ev.n_img, K))  # [I, K] non-ignored gts of area 'all'
        np.add.at(self.n_gt, (ev.gt_img[gt], ev.gt_cat[gt]), 1.0)
        self.n_queries = len(seg)

    def __call__(self, counts_t: Floats) -> dict[str, Floats]:
        T, K, B = self.T, self.K, counts_t.shape[1]
        npig = self.n_gt.T @ counts_t  # [K, B]
        tp, ign = self.tp_ign(counts_t)  # [P, B] each
        kept = self.kept(counts_t)[0][self.tp_to_kept]
        fp = kept - ign - tp
        pr = reverse_cummax(tp / (fp + tp + np.spacing(1)), self.tp_seg)
        per_gt = np.divide(len(REC_THRS) - 1, npig, out=np.zeros_like(npig), where=npig > 0)
        reached = thresholds_reached(tp * per_gt[self.tp_seg // T])  # recall x 100 after a TP
        step = reached.copy()
        step[1:] -= reached[:-1]
        step[self.first] = reached[self.first]  # a segment starts from 0 thresholds reached
        ap = np.zeros((K * T, B))
        recall = np.zeros((K * T, B))
        if len(self.first):
            seg_ids = self.tp_seg[self.first]
            ap[seg_ids] = np.add.reduceat(step * pr, self.first, axis=0) / len(REC_THRS)
            recall[seg_ids] = tp[self.last]
        ap_kt = ap.reshape(K, T, B)
        valid = npig > 0  # classes COCOeval averages over (precision -1 otherwise)
        n_valid = valid.sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            recall_kt = np.where(valid[:, None], recall.reshape(K, T, B) / npig[:, None], 0.0)

            def mean_over_classes(x: Floats) -> Floats:  # x[K, t, B]
                out: Floats = (x * valid[:, None]).sum((0, 1)) / (x.shape[1] * n_valid)
                return np.where(n_valid > 0, out, np.nan)

            t50, t75 = (int(np.flatnonzero(IOU_THRS == v)[0]) for v in (0.5, 0.75))
            return {
                "mAP": mean_over_classes(ap_kt),
                "AP50": mean_over_classes(ap_kt[:, t50 : t50 + 1]),
                "AP75": mean_over_classes(ap_kt[:, t75 : t75 + 1]),
                "AR100": mean_over_classes(recall_kt),
            }


class _CalibOps:
    """LaECE0, LaACE0 and LRP at each resample's own LRP-optimal thresholds, D-ECE and Brier.

    Per class the records (IoU > 0 setting, crowd matches left out) are sorted by score, so a
    threshold keeps a prefix. The LRP-optimal cut is re-chosen per resample, as a re-evaluation of
    the resampled set would choose it: among the tie blocks holding a TP of the full set (adding a
    FP never lowers LRP, adding a TP always does, so the minimum lies at one of them; a block whose
    TPs all left the resample scores no better than the block before it). LaECE0's bins above the
    cut are whole; the bin holding it is summed up to the cut.
    """

    V_ONE, V_SCORE, V_TARGET, V_TP, V_LOC, V_ABS = range(6)

    def __init__(self, rec: Records) -> None:
        K, U = rec.n_cat, LAECE_BINS
        ok = rec.valid[:, 0]
        order = np.lexsort((-rec.score[ok], rec.cat[ok]))
        c, s = rec.cat[ok][order], rec.score[ok][order]
        tp, target, img = rec.tp[ok, 0][order], rec.target[ok, 0][order], rec.img[ok][order]
        start = np.searchsorted(c, np.arange(K + 1))
        pos = np.arange(len(c)) - start[c]
        # candidate cuts: the last record of each tie block holding a TP
        block_end = np.r_[(c[1:] != c[:-1]) | (s[1:] != s[:-1]), True][: len(c)]
        block = np.cumsum(np.r_[True, block_end[:-1]][: len(c)]) - 1  # [N] block index
        block_has_tp = np.bincount(block, tp, block[-1] + 1 if len(c) else 0) > 0
        cand = np.flatnonzero(block_end & block_has_tp[block])  # record index of each cut
        # the end of each bin rank u (u = 0: scores (0.96, 1]): last position with rank <= u
        rank = U - 1 - laece_bins(s)  # [N] non-decreasing inside a class
        bin_end = np.zeros((K, U), np.int64)  # [K, U] positions (-1: no record yet)
        for k in range(K):
            bin_end[k] = np.searchsorted(rank[start[k] : start[k + 1]], np.arange(U), "right") - 1
        q_seg = np.r_[c[cand], np.repeat(np.arange(K), U)]
        q_pos = np.r_[pos[cand], bin_end.ravel()]
        q_order = np.lexsort((q_pos, q_seg))
        where = np.empty(len(q_order), np.int64)
        where[q_order] = np.arange(len(q_order))  # query -> row of the PrefixSums output
        self.cand_q, self.end_q = where[: len(cand)], where[len(cand) :].reshape(K, U)
        self.cand_cat, self.cand_rank = c[cand], rank[cand]
        # candidates come grouped by class: group g starts at cand_start[g]
        new_group = np.r_[True, self.cand_cat[1:] != self.cand_cat[:-1]][: len(cand)]
        self.cand_start, self.cand_group = np.flatnonzero(new_group), np.cumsum(new_group) - 1
        vals = np.stack([np.ones(len(c)), s, target, tp, tp * (1.0 - target), np.abs(s - target)])
        self.sums = PrefixSums(rec.n_img, c, pos, img, vals, q_seg[q_order], q_pos[q_order])
        last = np.where(start[1:] > start[:-1], start[1:] - 1, 0)
        self.last_rank = np.where(start[1:] > start[:-1], rank[last] if len(c) else 0, 0)  # [K]
        self.n_gt = np.zeros((rec.n_img, K))
        np.add.at(self.n_gt, (rec.gt_img, rec.gt_cat), 1.0)
        # D-ECE and Brier need no order: per-image sums, one small dense product
        ok = rec.valid[:, 1]
        s, t, img = rec.score[ok], rec.tp[ok, 1].astype(np.float64), rec.img[ok]
        hi = s >= DECE_SCORE_MIN
        cell = img[hi] * DECE_BINS + dece_bins(s[hi])
        n = rec.n_img * DECE_BINS
        per_bin = [
            np.bincount(cell, x, n).reshape(rec.n_img, DECE_BINS)
            for x in (np.ones(int(hi.sum())), t[hi], s[hi])
        ]
        brier = [np.bincount(img, x, rec.n_img)[:, None] for x in ((s - t) ** 2, np.ones(len(s)))]
        # as a sparse product: BLAS may sum in an order that depends on the batch size
        self.image_sums = sparse.csr_matrix(np.hstack([*per_bin, *brier]).T)  # [3 * 10 + 2, I]
        self.n_queries = len(q_order)

    def __call__(self, counts_t: Floats) -> dict[str, Floats]:
        K, B = len(self.end_q), counts_t.shape[1]
        P = self.sums(counts_t)  # [6, Q, B]
        n_gt = self.n_gt.T @ counts_t  # [K, B]
        cols = np.arange(B)
        # each class's cut: its LRP-optimal candidate, or all records when no TP is left
        cut = np.repeat(self.end_q[:, -1:], B, axis=1)  # [K, B] query rows
        cut_rank = np.repeat(self.last_rank[:, None], B, axis=1)
        has_tp = P[self.V_TP][self.end_q[:, -1]] > 0  # [K, B]
        with np.errstate(divide="ignore", invalid="ignore"):
            if len(self.cand_q):  # LRP at every candidate, then the first minimum per class
                q, k = self.cand_q, self.cand_cat
                n_tp, n_fp = P[self.V_TP][q], P[self.V_ONE][q] - P[self.V_TP][q]
                lrp = (P[self.V_LOC][q] / (1.0 - TAU) + n_fp + (n_gt[k] - n_tp)) / (n_fp + n_gt[k])
                lrp = np.nan_to_num(lrp, nan=np.inf)  # [C, B]
                lowest = np.minimum.reduceat(lrp, self.cand_start, axis=0)  # [K', B]
                row = np.where(lrp == lowest[self.cand_group], np.arange(len(q))[:, None], len(q))
                best = np.minimum.reduceat(row, self.cand_start, axis=0)  # ties: highest score
                ks = k[self.cand_start]
                cut[ks] = np.where(has_tp[ks], q[best], cut[ks])
                cut_rank[ks] = np.where(has_tp[ks], self.cand_rank[best], cut_rank[ks])
            at = P[:, cut, cols]  # [6, K, B] sums over the kept records
            n_kept, n_tp = at[self.V_ONE], at[self.V_TP]
            n_fp = n_kept - n_tp
            lrp = (at[self.V_LOC] / (1.0 - TAU) + n_fp + (n_gt - n_tp)) / (n_fp + n_gt)
            # LaECE0: whole bins above the cut's bin, then that bin up to the cut
            st = P[[self.V_SCORE, self.V_TARGET]]  # [2, Q, B]
            ends = st[:, self.end_q]  # [2, K, U, B] prefix sums at each bin's end
            before = np.concatenate([np.zeros((2, K, 1, B)), ends[:, :, :-1]], axis=2)
            gap = np.abs((ends[0] - before[0]) - (ends[1] - before[1]))  # [K, U, B]
            gap_above = np.cumsum(gap, axis=1) - gap  # bins ranked before u
            k_idx = np.arange(K)[:, None]
            partial = st[:, cut, cols] - before[:, k_idx, cut_rank, cols]  # cut's bin, to the cut
            num = gap_above[k_idx, cut_rank, cols] + np.abs(partial[0] - partial[1])
            laece, laace = num / n_kept, at[self.V_ABS] / n_kept
            has_gt = n_gt > 0
            rated = has_gt & (n_kept > 0)
            sums = np.asarray(self.image_sums @ counts_t)  # [3 * DECE_BINS + 2, B]
            n_bin, acc, conf = sums[: 3 * DECE_BINS].reshape(3, DECE_BINS, B)
            n_dece = n_bin.sum(0)

            def class_mean(x: Floats, which: Bools) -> Floats:
                return np.where(which.any(0), np.where(which, x, 0.0).sum(0) / which.sum(0), np.nan)

            return {
                "laece0": class_mean(laece, rated),
                "laace0": class_mean(laace, rated),
                "lrp": class_mean(lrp, has_gt),
                "dece": np.where(n_dece > 0, np.abs(acc - conf).sum(0) / n_dece, np.nan),
                "brier": np.where(sums[-1] > 0, sums[-2] / sums[-1], np.nan),
            }


class ResampledMetrics:
    """METRICS of one run (a DetectionSet) on image resamples: match once, then any number of
    counts[B, I] (int, >= 0; I = the run's images in DetectionSet order). Calibration follows the
    default protocol of evaluate(): LRP-optimal thresholds (re-chosen per resample). A metric with
    nothing to average on a resample (no class with ground truth, no detection >= 0.3 for D-ECE)
    is NaN there; COCOeval's -1 would read as a value."""

    def __init__(self, ds: DetectionSet, metrics: Sequence[str] = METRICS) -> None:
        unknown = sorted(set(metrics) - set(METRICS))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; choose from {list(METRICS)}")
        self.metrics = tuple(metrics)
        self.n_images = len(ds.img_ids)
        cand = candidates(ds)
        self._ops: list[_MapOps | _CalibOps] = []
        if set(self.metrics) & set(MAP_METRICS):
            self._ops.append(_MapOps(image_eval(ds, cand)))
        if set(self.metrics) & set(CALIB_METRICS):
            self._ops.append(_CalibOps(match_records(ds, cand)))
        queries = max((op.n_queries for op in self._ops), default=1)
        self._chunk = max(1, _CHUNK_CELLS // max(queries, 1))

    def __call__(self, counts: Ints) -> dict[str, Floats]:
        """counts[B, I] -> {metric: values[B]}."""
        counts = np.asarray(counts)
        if counts.ndim != 2 or counts.shape[1] != self.n_images or (counts < 0).any():
            raise ValueError(
                f"counts: expected [B, {self.n_images}] counts >= 0, got {counts.shape}"
            )
        out: dict[str, list[Floats]] = {m: [] for m in self.metrics}
        for lo in range(0, len(counts), self._chunk):
            counts_t = np.ascontiguousarray(counts[lo : lo + self._chunk].T, dtype=np.float64)
            for op in self._ops:
                for m, v in op(counts_t).items():
                    if m in out:
                        out[m].append(v)
        return {m: np.concatenate(v) if v else np.zeros(0) for m, v in out.items()}

    def full(self) -> dict[str, float]:
        """The metrics on the validation set itself (every image once)."""
        return {m: float(v[0]) for m, v in self(np.ones((1, self.n_images), np.int64)).items()}
