"""Varifocal loss: IoU-aware classification with asymmetric weighting of positives and negatives.

VarifocalNet: An IoU-aware Dense Object Detector, Zhang et al., CVPR 2021, arXiv:2008.13367.
"""

from __future__ import annotations

import torch
from torch import Tensor

from focalbench.losses._common import (
    Kernel,
    bce_into,
    check_float_logits,
    check_non_negative,
    check_reduction,
    check_unit_interval,
    elementwise_loss,
)
from focalbench.losses.gfl import check_iou_targets


def _vfl_kernel(alpha: float, gamma: float, iou_weighted: bool) -> Kernel:
    """Loss and closed-form gradient of VFL for one flat chunk.

    With p = sigmoid(x), ce = softplus(x) - x q (= BCE(x, q)), n = [q <= 0] and the negative
    weight v = alpha p^gamma n, the total weight is w = v + q (iou_weighted) or v + (1 - n):
        loss  = w ce
        dloss = w (p - q) + gamma v (1 - p) ce      (q is a constant: no gradient through it)
    d(p^gamma)/dx = gamma p^gamma (1 - p) has no p^(gamma - 1), so it is finite for gamma < 1.
    """

    def kernel(x: Tensor, q: Tensor, loss: Tensor, grad: Tensor | None, work: list[Tensor]) -> None:
        p, s, ce, w, v = work
        torch.sigmoid(x, out=p)
        torch.sigmoid(torch.neg(x, out=s), out=s)  # s = 1 - p without cancellation
        bce_into(x, q, p, s, out=ce, tmp=w)  # ce = BCE(x, q); q = 0 on negatives
        torch.le(q, 0.0, out=w)  # w = n, 1.0 on negatives (mmdet's rule: q <= 0 is negative)
        torch.pow(p, gamma, out=v)
        v.mul_(w).mul_(alpha)  # v = alpha p^gamma n
        if iou_weighted:
            torch.add(v, q, out=w)  # positives: q, negatives: v (q = 0 there)
        else:
            torch.sub(v, w, out=w).add_(1.0)  # positives: 1, negatives: v
        torch.mul(w, ce, out=loss)
        if grad is not None:
            v.mul_(s).mul_(ce)  # v = v (1 - p) ce, the p^gamma term
            torch.lerp(p, s.neg_(), q, out=p).mul_(w)  # w (p - q), exact at q = 1 too
            torch.add(p, v, alpha=gamma, out=grad)

    return kernel


def varifocal_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: float = 0.75,
    gamma: float = 2.0,
    iou_weighted: bool = True,
    reduction: str = "none",
) -> Tensor:
    """Varifocal loss, elementwise, with q the IoU target and p = sigmoid(logits):
        VFL(p, q) = -q (q log p + (1 - q) log(1 - p))   if q > 0  (BCE if not iou_weighted)
                  = -alpha p^gamma log(1 - p)           if q = 0

    VarifocalNet (Zhang et al., 2021), arXiv:2008.13367, eq. (2).

    Args:
        logits: [N, C] raw class scores (sigmoid, no background class).
        targets: [N, C] float IoU scores: the IoU with the gt at the gt class, 0 elsewhere
            (one-hot shaped). A [N] label vector is an error: build the dense target first.
        alpha: weight of the negatives, in [0, 1] (paper: 0.75).
        gamma: exponent >= 0 of the negatives' p^gamma down-weighting (paper: 2).
        iou_weighted: weight positives by q (paper); False weights them by 1.
        reduction: "none" -> [N, C]; "sum"; "mean" over all elements (normalizing by the number
            of positives is the caller's job). Empty input: sum and mean are 0, not NaN.

    Returns: float32 (float64 for float64 logits); half-precision logits are computed in float32.

    Gradient conventions: the IoU target q is a constant (detached) in both the weight and the
    BCE target, as RT-DETR does (its IoU is detached); mmdet's varifocal_loss does not detach, so
    a target that requires grad gets gradient there. The negatives' weight alpha p^gamma IS
    differentiated, as in the paper and mmdet; RT-DETR also detaches sigmoid(x) inside it, so its
    negative gradient lacks the gamma p^gamma (1 - p) BCE term. RT-DETR also marks positives by
    the one-hot label, so a matched box with IoU 0 gets weight 0 there but alpha p^gamma here.
    """
    check_reduction(reduction)
    check_float_logits("varifocal_loss", logits)
    check_unit_interval("alpha", alpha)
    check_non_negative("gamma", gamma)
    check_iou_targets("varifocal_loss", logits, targets)
    kernel = _vfl_kernel(float(alpha), float(gamma), bool(iou_weighted))
    return elementwise_loss(kernel, logits, targets, reduction)
