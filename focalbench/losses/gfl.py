"""Generalized Focal Loss: Quality Focal Loss (classification) and Distribution Focal Loss (boxes).

Generalized Focal Loss: Learning Qualified and Distributed Bounding Boxes for Dense Object
Detection, Li et al., NeurIPS 2020, arXiv:2006.04388.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from focalbench.losses._common import (
    Kernel,
    bce_into,
    check_float_logits,
    check_non_negative,
    check_reduction,
    compute_dtype,
    elementwise_loss,
    reduce,
)


def check_iou_targets(fn: str, logits: Tensor, targets: Tensor) -> None:
    """QFL and VFL take dense IoU targets, not class labels: say so when given a label vector."""
    if targets.shape != logits.shape or not targets.is_floating_point():
        raise ValueError(
            f"{fn}: targets must be [N, C] one-hot-shaped IoU scores (the IoU at the gt class, 0 "
            f"elsewhere), float and shaped like logits {tuple(logits.shape)}; got "
            f"{tuple(targets.shape)} {targets.dtype}. Build it from labels and IoUs first, "
            "e.g. targets[torch.arange(N), labels] = iou."
        )


def _qfl_kernel(beta: float) -> Kernel:
    """Loss and closed-form gradient of QFL for one flat chunk.

    With p = sigmoid(x), q = sigmoid(-x), d = p - y and ce = softplus(x) - x y (= BCE(x, y)):
        loss  = |d|^beta ce
        dloss = |d|^beta [d + beta ce p q / d]
    p q / d is bounded for y in {0, 1} (it is q or -p) and d = (1 - y) p - y q is exact there, so
    the usual |d|^(beta - 1) blow-up at large |x| never appears for beta < 1. For a soft y the
    gradient truly diverges at p == y when beta < 1; d == 0 exactly gives 0 there (a subgradient).
    """

    def kernel(x: Tensor, y: Tensor, loss: Tensor, grad: Tensor | None, work: list[Tensor]) -> None:
        p, q, ce, d, g = work
        torch.sigmoid(x, out=p)
        torch.sigmoid(torch.neg(x, out=q), out=q)  # 1 - p without cancellation
        bce_into(x, y, p, q, out=ce, tmp=d)  # ce = BCE(x, y), soft y
        if beta == 0.0:
            loss.copy_(ce)
            if grad is not None:
                torch.lerp(p, torch.neg(q, out=g), y, out=grad)  # p - y, exact at y = 1 too
            return
        torch.lerp(p, torch.neg(q, out=g), y, out=d)  # d = (1 - y) p - y q = p - y
        if grad is not None:
            tiny = torch.tensor(torch.finfo(d.dtype).tiny, dtype=d.dtype, device=d.device)
            torch.copysign(tiny, d, out=g).add_(d)  # d nudged away from 0: no 0/0
            q.mul_(p).div_(g)  # q = p q / d
            q.mul_(ce)
            torch.add(d, q, alpha=beta, out=g)  # g = d + beta ce p q / d
        torch.abs(d, out=p)
        p.pow_(beta)  # p = |d|^beta, the quality modulating factor
        torch.mul(p, ce, out=loss)
        if grad is not None:
            torch.mul(g, p, out=grad)

    return kernel


def quality_focal_loss(
    logits: Tensor, targets: Tensor, beta: float = 2.0, reduction: str = "none"
) -> Tensor:
    """Quality Focal Loss: QFL(x, y) = |y - sigmoid(x)|^beta * BCE(x, y), elementwise.

    Generalized Focal Loss (Li et al., 2020), arXiv:2006.04388, eq. (5).

    Args:
        logits: [N, C] raw class scores (sigmoid, no background class).
        targets: [N, C] float soft targets: the IoU of the predicted box with its gt at the gt
            class, 0 at every other class and for background anchors (one-hot-shaped IoU scores).
            mmdet's QualityFocalLoss takes (labels, scores) instead; we take the dense form so QFL,
            VFL and the focal loss share one target layout.
        beta: modulating exponent >= 0 (paper: 2); beta=0 is BCE with soft targets.
        reduction: "none" -> [N, C]; "sum"; "mean" over all elements (normalizing by the number
            of positives is the caller's job). Empty input: sum and mean are 0, not NaN.

    Returns: float32 (float64 for float64 logits); half-precision logits are computed in float32.
    Targets get no gradient (they are treated as constants, like a detached IoU); the gradient is
    closed-form (see `_qfl_kernel`), finite for beta in (0, 1) at large |logit|.
    """
    check_reduction(reduction)
    check_float_logits("quality_focal_loss", logits)
    check_non_negative("beta", beta)
    check_iou_targets("quality_focal_loss", logits, targets)
    return elementwise_loss(_qfl_kernel(float(beta)), logits, targets, reduction)


def distribution_focal_loss(logits: Tensor, target: Tensor, reduction: str = "none") -> Tensor:
    """Distribution Focal Loss for one box side: the CE of the two bins around a continuous target.

    Generalized Focal Loss (Li et al., 2020), arXiv:2006.04388, eq. (6): with S = softmax(logits)
    over B bins at positions 0..B-1, y_l <= y <= y_r = y_l + 1 the bins around the target y:
        DFL(S, y) = -((y_r - y) log S_{y_l} + (y - y_l) log S_{y_r})

    Args:
        logits: [N, B] bin scores, B >= 2 (one row per box side; flatten [N, 4, B] first).
        target: [N] float distances in bin units, in [0, B-1] inclusive. y == B-1 is valid: it
            falls in the last interval with all weight on bin B-1.
        reduction: "none" -> [N]; "sum"; "mean" over N. Empty input: sum and mean are 0.

    Raises ValueError for a target outside [0, B-1] (or NaN); the check syncs the device once.

    Conventions: B bins here. mmdet builds reg_max + 1 bins and raises (IndexError) for a target
    exactly at reg_max; the original GFL code clamps targets to reg_max - 0.01 and Ultralytics
    uses reg_max bins with targets clamped to reg_max - 1 - 0.01. We never clamp: a target is
    exact or an error. The loss is float32 (float64 for float64 logits); targets get no gradient.
    """
    check_reduction(reduction)
    check_float_logits("distribution_focal_loss", logits)
    if logits.dim() != 2:
        raise ValueError(
            f"distribution_focal_loss: logits must be [N, B], got {tuple(logits.shape)}"
        )
    N, B = logits.shape
    if B < 2:
        raise ValueError(f"distribution_focal_loss: needs B >= 2 bins, got B={B}")
    if target.shape != (N,):
        raise ValueError(
            f"distribution_focal_loss: target must be [N] = [{N}], got {tuple(target.shape)}"
        )
    x = logits.to(compute_dtype(logits.dtype))  # [N, B]
    y = target.detach().to(x.dtype)  # [N]
    outside = ~((y >= 0) & (y <= B - 1))  # NaN is outside too
    if outside.any():
        bad = y[outside]
        raise ValueError(
            f"distribution_focal_loss: target must lie in [0, B-1] = [0, {B - 1}]; got "
            f"{bad.numel()} value(s) outside, e.g. {bad[0].item()}"
        )
    # y == B-1 would give y_r = B (out of range): take the interval [B-2, B-1] with weight 1 on B-1
    left = y.floor().long().clamp_max(B - 2)  # [N]
    w_left = (left + 1).to(x.dtype) - y  # [N], y_r - y
    w_right = 1.0 - w_left  # [N], y - y_l
    log_s = F.log_softmax(x, dim=1)  # [N, B]
    log_s_left = log_s.gather(1, left[:, None]).squeeze(1)  # [N]
    log_s_right = log_s.gather(1, (left + 1)[:, None]).squeeze(1)  # [N]
    loss = -(w_left * log_s_left + w_right * log_s_right)
    return reduce(loss, reduction)
