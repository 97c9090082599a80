"""Poly-1 focal loss: the sigmoid focal loss plus the first polynomial term of its Taylor series.

PolyLoss: A Polynomial Expansion Perspective of Classification Loss Functions, Leng et al.,
ICLR 2022, arXiv:2204.12511, eq. (4) for the focal loss:
    Poly-1 FL = FL + epsilon (1 - p_t)^(gamma + 1)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from focalbench.losses._common import check_float_logits, check_reduction, compute_dtype, reduce
from focalbench.losses.focal import sigmoid_focal_loss


def poly1_focal_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: float | Sequence[float] | Tensor | None = 0.25,
    gamma: float = 2.0,
    epsilon: float = 1.0,
    reduction: str = "none",
) -> Tensor:
    """Poly-1 sigmoid focal loss, elementwise, with p = sigmoid(logits):
        loss = -alpha_t (1 - p_t)^gamma log(p_t) + epsilon (1 - p_t)^(gamma + 1)

    PolyLoss (Leng et al., 2022), arXiv:2204.12511. The first term is exactly
    `sigmoid_focal_loss` (torchvision semantics: p_t = p t + (1 - p)(1 - t), alpha_t = alpha t +
    (1 - alpha)(1 - t), soft targets allowed); epsilon=0 returns it unchanged, bit for bit.

    Departure from the paper (alpha weighting): the paper defines Poly-1 focal as
    FL + epsilon (1 - p_t)^(gamma + 1), the leading term of the focal loss's expansion in
    (1 - p_t) with alpha left aside; expanding the alpha-balanced FL would give
    alpha_t epsilon (1 - p_t)^(gamma + 1). Here, as in the common PyTorch ports (e.g.
    abhuse/polyloss's Poly1FocalLoss), alpha_t weights only the focal term and the poly term is
    never alpha-weighted: with alpha = 0.25 it weighs 4x more against the focal term on positives
    and 4/3x more on negatives than in that expansion.

    Args:
        logits: [N, C] (any shape) raw scores, float16/bfloat16/float32/float64.
        targets: same shape, in [0, 1] (one-hot or soft; not checked).
        alpha: as in `sigmoid_focal_loss`: a float in [0, 1], None or < 0 (off), or one weight
            per class, a sequence / tensor [C] broadcast over the last dimension.
        gamma: focusing parameter >= 0; the poly term has exponent gamma + 1.
        epsilon: coefficient of the poly term, any finite float; it may be negative (the
            paper tunes it on both sides of 0). epsilon < 0 lowers the loss most where p_t is
            small; below -alpha_t the loss is negative on easy elements (p_t near 1, where FL is
            about alpha_t (1 - p_t)^(gamma + 1)). 0 is exactly `sigmoid_focal_loss`.
        reduction: "none" -> same shape as logits; "sum"; "mean" over all elements. Normalizing
            by the number of positives is the caller's job. Empty input: sum and mean are 0.

    Returns: float32 (float64 for float64 logits); float16/bfloat16 logits are computed in float32
    and their gradient is returned in their own dtype. Targets get no gradient.

    Numerics: 1 - p_t is m = (1 - t) sigmoid(x) + t sigmoid(-x), never 1 - sigmoid(x), so it keeps
    its relative precision where p_t rounds to 1. The poly term's gradient is
    epsilon (gamma + 1) m^gamma (1 - 2t) p (1 - p): no negative power of m, finite at any logit
    (|x| = 1e4 included) and for gamma in (0, 1); the focal term is finite there too.
    """
    check_reduction(reduction)
    if not math.isfinite(epsilon):
        raise ValueError(f"epsilon must be a finite float, got {epsilon!r}")
    if epsilon == 0.0:  # the focal loss itself: same values, gradient and reduction
        return sigmoid_focal_loss(logits, targets, alpha, gamma, reduction)
    check_float_logits("poly1_focal_loss", logits)
    # one cast up front: both terms' gradients add in float32 and round to float16/bfloat16 once
    x = logits.to(compute_dtype(logits.dtype))
    focal = sigmoid_focal_loss(x, targets, alpha, gamma, "none")  # checks shapes and args
    t = targets.detach().to(x.dtype)
    # 1 - p_t = (1 - t) p + t (1 - p), with 1 - p = sigmoid(-x): exact where p rounds to 1
    m = torch.lerp(torch.sigmoid(x), torch.sigmoid(-x), t)
    loss = focal + epsilon * m.pow(gamma + 1.0)
    return reduce(loss, reduction)
