"""Weighted prefix sums and running maxima per segment, for many weight vectors at once: the two
primitives of resample.py. numpy + scipy.sparse."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from .match import Floats, Ints


class PrefixSums:
    """out[v, q, b] = sum of counts[b, img[r]] * val[v, r] over the records r of query q's segment
    with pos[r] <= pos[q], for every query q at once.

    Records: seg[R], pos[R], img[R], val[V, R], any order. Queries: seg[Q], pos[Q], sorted by
    (seg, pos). Each record is summed into the first query at or after it in its segment (records
    after a segment's last query are dropped), so the matrix has at most R * V entries; the prefix
    sums are then a running sum over each segment's queries.
    """

    def __init__(
        self, n_img: int, seg: Ints, pos: Ints, img: Ints, val: Floats, q_seg: Ints, q_pos: Ints
    ) -> None:
        big = int(max(pos.max(initial=0), q_pos.max(initial=0))) + 3
        q_key = q_seg * big + q_pos + 1  # + 1: a query at pos -1 is an empty prefix
        assert (np.diff(q_key) >= 0).all(), "queries must be sorted by (seg, pos)"
        Q, V = len(q_key), len(val)
        j = np.searchsorted(q_key, seg * big + pos + 1, side="left")  # [R] first query at/after
        ok = j < Q
        ok[ok] = q_seg[j[ok]] == seg[ok]
        rows = (np.arange(V)[:, None] * Q + j[None, ok]).ravel()
        cols = np.broadcast_to(img[ok], (V, int(ok.sum()))).ravel()
        data = val[:, ok].ravel()
        nz = data != 0  # a TP flag of 0 is no entry: fewer entries, a faster product
        self.matrix = sparse.csr_matrix(
            (data[nz], (rows[nz], cols[nz])), shape=(V * Q, n_img), dtype=np.float64
        )  # duplicates (one image, one interval) are summed
        starts = np.flatnonzero(np.r_[True, q_seg[1:] != q_seg[:-1]]) if Q else np.zeros(0, int)
        self.starts, self.lengths = starts, np.diff(np.r_[starts, Q])
        self.shape = (V, Q)

    def __call__(self, counts_t: Floats) -> Floats:
        """counts_t[I, B] -> out[V, Q, B]."""
        out = np.asarray(self.matrix @ counts_t).reshape(*self.shape, counts_t.shape[1])
        if len(self.starts) > 1:
            # restart the running sum at each segment: its first entry takes off the segment
            # before's total (exact for counts; for scores, off by the rounding of the totals)
            totals = np.add.reduceat(out, self.starts, axis=1)  # [V, S, B]
            out[:, self.starts[1:]] -= totals[:, :-1]
        np.cumsum(out, axis=1, out=out)
        return out


def reverse_cummax(x: Floats, seg: Ints) -> Floats:
    """Running max of x[Q, B] from the end of each segment (seg[Q] ascending): COCOeval's precision
    envelope. numpy compares complex numbers by real part first, so a larger real part per earlier
    segment keeps every segment's max to itself, with the values (imaginary part) exact."""
    key = np.empty(x.shape, np.complex128)
    key.real = (seg[-1] - seg)[:, None] if len(seg) else 0.0
    key.imag = x
    rev = key[::-1]
    np.maximum.accumulate(rev, axis=0, out=rev)
    return np.ascontiguousarray(key.imag)
