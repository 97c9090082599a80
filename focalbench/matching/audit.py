"""The matching audit: what a class cost does to the assignment itself (issue 6).

Three numbers, measured by the model on a fixed probe batch after every epoch:
- agreement: fraction of ground truths that the run's class cost assigns to the same query as the
  loss-optimal class cost does;
- regret: the extra total classification loss of the run's assignment over the loss-optimal one,
  per ground truth (>= 0; 0 when the assignments agree);
- instability: fraction of ground truths whose matched query changed since the previous call
  (the instability measure of DN-DETR, Li et al. 2022, arXiv 2203.01305).

Agreement and regret compare class-cost-only assignments, so they isolate the one thing a
matcher sweep varies. "Loss-optimal" is measured with the run's own classification loss, not a
formula: the total loss of an assignment is sum(all entries as negatives) + sum over matched pairs
of [loss(pair as positive) - loss(pair as negative)], so the loss-optimal pair cost is that
bracket (`sigmoid_pair_cost`, `softmax_pair_cost`). For the sigmoid focal loss it equals the
`focal` cost with the loss's alpha/gamma; for QFL/VFL its positive target is the pair's IoU.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from focalbench.matching.hungarian import assign, query_of_target


def sigmoid_pair_cost(
    loss: Callable[[Tensor, Tensor], Tensor], logits: Tensor, labels: Tensor, target: Tensor | float
) -> Tensor:
    """Change of a sigmoid loss's total when query q takes ground truth t.

    Args:
        loss: elementwise loss(logits, targets) -> same shape (reduction "none").
        logits: [Q, C]; labels: [T] int64.
        target: the positive target, 1.0 or a [Q, T] soft target (the pair's IoU for QFL/VFL).
    Returns: [Q, T] = loss(x_ql, target) - loss(x_ql, 0).
    """
    x = logits[:, labels.long()]  # [Q, T]
    pos_target = torch.as_tensor(target, dtype=x.dtype, device=x.device).expand_as(x)
    return loss(x, pos_target.contiguous()) - loss(x, torch.zeros_like(x))


def softmax_pair_cost(
    loss: Callable[[Tensor, Tensor], Tensor], logits: Tensor, labels: Tensor, noobj_weight: float
) -> Tensor:
    """Change of a softmax loss's total when query q takes ground truth t instead of no-object.

    Args:
        loss: loss(logits [N, K], labels [N]) -> [N] (reduction "none").
        logits: [Q, C + 1] with no-object last; labels: [T] int64.
        noobj_weight: the weight of the no-object class in the loss (DETR: 0.1).
    Returns: [Q, T] = loss(q, l_t) - noobj_weight * loss(q, no-object).
    """
    Q, K = logits.shape
    T = labels.numel()
    pairs = logits[:, None, :].expand(Q, T, K).reshape(Q * T, K)
    pos = loss(pairs, labels.long().repeat(Q)).view(Q, T)  # row-major: pair (q, t) at q * T + t
    neg = loss(logits, torch.full((Q,), K - 1, dtype=torch.long, device=logits.device))  # [Q]
    return pos - noobj_weight * neg[:, None]


def agreement_and_regret(
    run_costs: list[Tensor], optimal_costs: list[Tensor]
) -> tuple[float, float]:
    """Agreement and per-ground-truth regret of the run's class cost against the optimal one.

    Args:
        run_costs: per image [Q, T_b], the run's class cost.
        optimal_costs: per image [Q, T_b], the loss-optimal pair cost (its assignment sum is the
            total loss up to a constant).
    Returns: (agreement in [0, 1], regret >= 0); both NaN when there is no ground truth.
    """
    agree, regret, count = 0, 0.0, 0
    for run, opt in zip(run_costs, optimal_costs, strict=True):
        T = run.shape[1]
        if T == 0:
            continue
        mine, best = assign(run), assign(opt)
        agree += int((query_of_target(mine, T) == query_of_target(best, T)).sum())
        opt64 = opt.detach().double().cpu()
        regret += float(opt64[mine].sum() - opt64[best].sum())
        count += T
    if count == 0:
        return math.nan, math.nan
    return agree / count, max(regret, 0.0) / count  # max: rounding only; best is the minimum


class MatchInstability:
    """Fraction of ground truths whose matched query changed since the previous `update`.

    DN-DETR (arXiv 2203.01305) measures it between consecutive epochs on the same images. The first
    call, or a call on a different probe (other ground-truth counts), returns NaN.
    """

    def __init__(self) -> None:
        self._previous: list[np.ndarray] | None = None

    def update(self, indices: list[tuple[Tensor, Tensor]], num_targets: list[int]) -> float:
        """indices: per image (query_idx, target_idx); num_targets: T_b per image."""
        current = [query_of_target(ij, T) for ij, T in zip(indices, num_targets, strict=True)]
        previous, self._previous = self._previous, current
        if previous is None or [len(p) for p in previous] != num_targets:
            return math.nan
        total = sum(num_targets)
        if total == 0:
            return math.nan
        changed = sum(int((p != c).sum()) for p, c in zip(previous, current, strict=True))
        return changed / total
