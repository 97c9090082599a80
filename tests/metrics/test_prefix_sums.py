"""The two primitives of the batched bootstrap against plain loops."""

import numpy as np

from focalbench.metrics.prefix_sums import PrefixSums, reverse_cummax


def test_prefix_sums_equal_a_loop_over_records():
    rng = np.random.default_rng(0)
    R, n_img, S, B = 300, 7, 5, 4
    seg, pos, img = rng.integers(0, S, R), rng.integers(0, 40, R), rng.integers(0, n_img, R)
    val = np.stack([np.ones(R), rng.random(R), rng.integers(0, 2, R).astype(float)])
    q_seg = np.sort(np.r_[rng.integers(0, S - 1, 30), 0])  # segment S-1 has no query
    q_pos = np.concatenate([np.sort(rng.integers(-1, 45, (q_seg == s).sum())) for s in range(S)])
    counts = rng.integers(0, 3, (B, n_img)).astype(float)
    got = PrefixSums(n_img, seg, pos, img, val, q_seg, q_pos)(np.ascontiguousarray(counts.T))
    want = np.zeros((3, len(q_seg), B))
    for q, (s, p) in enumerate(zip(q_seg, q_pos)):
        for r in np.flatnonzero((seg == s) & (pos <= p)):
            want[:, q] += val[:, r, None] * counts[:, img[r]]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got[[0, 2]], want[[0, 2]])  # counts: exact


def test_reverse_cummax_restarts_per_segment_and_keeps_the_values():
    rng = np.random.default_rng(1)
    seg = np.sort(rng.integers(0, 9, 200))
    x = rng.random((200, 3))
    want = x.copy()
    for s in np.unique(seg):
        rows = np.flatnonzero(seg == s)
        want[rows] = np.maximum.accumulate(x[rows][::-1], axis=0)[::-1]
    np.testing.assert_array_equal(reverse_cummax(x, seg), want)
