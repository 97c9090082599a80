"""Focal losses (sigmoid and softmax) and their BCE / CE baselines.

Focal Loss for Dense Object Detection, Lin et al., ICCV 2017, arXiv:1708.02002:
    FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from focalbench.losses._common import (
    Kernel,
    bce_into,
    check_float_logits,
    check_non_negative,
    check_reduction,
    check_unit_interval,
    compute_dtype,
    elementwise_loss,
    reduce,
)


def _focal_kernel(alpha: float | Tensor | None, gamma: float) -> Kernel:
    """Loss and closed-form d loss / dx of the sigmoid focal loss for one flat chunk.

    alpha: a float, None (off), or a per-class tensor [C] in the compute dtype and device; then
    the driver must align chunks to C (`elementwise_loss(..., align=C)`), so that a chunk viewed
    as [-1, C] has class c in column c. alpha_t is the only term that depends on the class: the
    gradient below needs no change, as alpha_t is a constant factor of each element.

    With p = sigmoid(x), q = sigmoid(-x), ce = softplus(x) - x t (= BCE, soft t allowed),
    m = 1 - p_t = (1 - t) p + t q and a = alpha_t = (1 - alpha) + (2 alpha - 1) t:
        loss  = a m^gamma ce
        dloss = a m^gamma [(p - t) + gamma ce dlog(m)/dx],  dlog(m)/dx = (1 - 2t) p q / m
    The usual chain rule has m^(gamma - 1), infinite at m = 0 for gamma < 1 (torchvision's NaN).
    Here m^gamma multiplies the log-derivative instead, which is bounded: for t in {0, 1} it is
    (1 - 2t) p_t, and m >= min(t, 1 - t) for soft t. m is built from sigmoid(x) and sigmoid(-x),
    never as 1 - sigmoid(x), so it keeps full relative precision where p_t rounds to 1 (|x| > 16.6
    in float32); that is log(1 - p_t) = logsigmoid(-x) for t = 1, logsigmoid(x) for t = 0.
    """
    # alpha_t = alpha t + (1 - alpha)(1 - t), written as an affine function of t (one fused op)
    alpha_slope = None if alpha is None else 2.0 * alpha - 1.0  # float, or [C]
    alpha_base = None if alpha is None else 1.0 - alpha  # float, or [C]
    C = alpha.numel() if isinstance(alpha, Tensor) else 1

    def kernel(x: Tensor, t: Tensor, loss: Tensor, grad: Tensor | None, work: list[Tensor]) -> None:
        p, q, ce, m, g = work
        torch.sigmoid(x, out=p)
        torch.sigmoid(torch.neg(x, out=q), out=q)  # q = 1 - p without cancellation
        bce_into(x, t, p, q, out=ce, tmp=m)
        if gamma == 0.0:  # plain (alpha-weighted) BCE: no modulating factor
            weight = None
            if grad is not None:
                torch.lerp(p, torch.neg(q, out=g), t, out=g)  # p - t = (1 - t) p - t q, exact
        else:
            torch.lerp(p, q, t, out=m)  # m = 1 - p_t, exact at t = 0 and t = 1
            # m == 0 only where p or q underflowed; then p q == 0 too and the term is 0, not NaN
            m.clamp_min_(torch.finfo(m.dtype).tiny)
            if grad is not None:
                torch.mul(p, q, out=g)
                g.div_(m)
                g.addcmul_(g, t, value=-2.0)  # g = dlog(m)/dx = (1 - 2t) p q / m
                g.mul_(ce)
                # p - t as (1 - t) p - t q: p - 1 rounds to 0 at x > 16.6 in float32, -q does not
                torch.lerp(p, q.neg_(), t, out=q)
                torch.add(q, g, alpha=gamma, out=g)  # g = (p - t) + gamma ce dlog(m)/dx
            if gamma != 1.0:
                m.pow_(gamma)
            weight = m  # m^gamma
        if alpha_slope is not None and alpha_base is not None:  # q = alpha_t (q is free now)
            if isinstance(alpha_slope, Tensor):  # per class: rows of C, broadcast over them
                torch.mul(t.view(-1, C), alpha_slope, out=q.view(-1, C)).add_(alpha_base)
            else:
                torch.mul(t, alpha_slope, out=q).add_(alpha_base)
            weight = q if weight is None else weight.mul_(q)
        if weight is None:
            loss.copy_(ce)
            if grad is not None:
                grad.copy_(g)
        else:
            torch.mul(weight, ce, out=loss)
            if grad is not None:
                torch.mul(g, weight, out=grad)

    return kernel


def sigmoid_focal_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: float | Sequence[float] | Tensor | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    """Sigmoid focal loss, elementwise: FL = -alpha_t (1 - p_t)^gamma log(p_t), p = sigmoid(logits).

    Focal Loss for Dense Object Detection (Lin et al., 2017), arXiv:1708.02002. Same semantics as
    torchvision.ops.sigmoid_focal_loss: p_t = p t + (1 - p)(1 - t), alpha_t = alpha t +
    (1 - alpha)(1 - t), and log(p_t) is the BCE, so soft targets t in [0, 1] interpolate both.

    Args:
        logits: [N, C] (any shape) raw scores, float16/bfloat16/float32/float64.
        targets: same shape, in [0, 1] (one-hot or soft; not checked, that would sync the device).
        alpha: weight of the positive term, in [0, 1]; negatives get 1 - alpha. None or < 0 turns
            the weighting off, as torchvision's alpha=-1. Or one weight per class: a sequence or
            tensor [C] in [0, 1], C = logits.shape[-1], broadcast over the class (last) dimension,
            so element [..., c] gets alpha_t = alpha[c] t + (1 - alpha[c])(1 - t) (the per-class
            alpha Ultralytics users ask for, ultralytics#10406). A constant list equals the float.
        gamma: focusing parameter >= 0; gamma=0 with alpha off is exactly BCE.
        reduction: "none" -> same shape as logits; "sum"; "mean" over all elements. Normalizing by
            the number of positives is the caller's job. Empty input: sum and mean are 0, not NaN.

    Returns: the loss in float32 (float64 for float64 logits); float16/bfloat16 logits are
    computed in float32 and their gradient is returned in their own dtype.

    Numerics: loss and gradient stay finite for gamma in (0, 1) at any |logit| (torchvision's
    gradient is NaN at gamma=0.5 for (x, t) = (17, 1), (30, 1), (-30, 0), (+-100, matching t)).
    The gradient is closed-form (see `_focal_kernel`) and computed with the forward pass, which
    costs one saved [N, C] tensor until backward; it is not twice differentiable, and targets get
    no gradient.

    Other conventions: mmdet computes alpha_t for any alpha, so its alpha=-1 weights positives by
    -1 and negatives by 2; kornia's binary focal loss gives negatives 1 - alpha, as here.
    """
    check_reduction(reduction)
    check_float_logits("sigmoid_focal_loss", logits)
    check_non_negative("gamma", gamma)
    if targets.shape != logits.shape:
        raise ValueError(
            f"sigmoid_focal_loss: targets must have the shape of logits {tuple(logits.shape)}, "
            f"got {tuple(targets.shape)}"
        )
    weights = _sigmoid_alpha(alpha, logits)
    align = weights.numel() if isinstance(weights, Tensor) else 1
    kernel = _focal_kernel(weights, float(gamma))
    return elementwise_loss(kernel, logits, targets, reduction, align=align)


def _sigmoid_alpha(
    alpha: float | Sequence[float] | Tensor | None, logits: Tensor
) -> float | Tensor | None:
    """sigmoid_focal_loss's alpha checked: None (off), a float in [0, 1], or [C] weights in the
    compute dtype on the logits' device."""
    if isinstance(alpha, Tensor) and alpha.dim() == 0:
        alpha = float(alpha)
    if alpha is None or (isinstance(alpha, (int, float)) and alpha < 0):
        return None  # torchvision's switch: a negative alpha disables the balancing
    if isinstance(alpha, (int, float)):
        check_unit_interval("alpha", float(alpha))
        return float(alpha)
    if logits.dim() == 0:
        raise ValueError(
            "sigmoid_focal_loss: a per-class alpha needs logits [..., C], got a scalar"
        )
    weights = _per_class_alpha(alpha, logits.shape[-1])
    assert isinstance(weights, Tensor)
    return weights.to(device=logits.device, dtype=compute_dtype(logits.dtype))


def bce_loss(logits: Tensor, targets: Tensor, reduction: str = "none") -> Tensor:
    """Binary cross-entropy on logits (the gamma=0, alpha-off baseline of the focal loss).

    logits, targets: same shape; float16/bfloat16 are computed in float32 and the loss is returned
    in float32. Same values as F.binary_cross_entropy_with_logits, except an empty "mean" is 0.
    """
    check_reduction(reduction)
    check_float_logits("bce_loss", logits)
    cdtype = compute_dtype(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(
        logits.to(cdtype), targets.to(cdtype), reduction="none"
    )
    return reduce(loss, reduction)


def _per_class_alpha(
    alpha: float | Sequence[float] | Tensor | None, num_classes: int
) -> Tensor | float | None:
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)):
        check_unit_interval("alpha", float(alpha))
        return float(alpha)
    weights = torch.as_tensor(alpha, dtype=torch.float64).flatten()
    if weights.numel() != num_classes:
        raise ValueError(
            "alpha: a per-class sequence needs one weight per class, expected length "
            f"{num_classes}, got {weights.numel()}"
        )
    bad = (weights < 0) | (weights > 1) | weights.isnan()
    if bad.any():
        raise ValueError(f"alpha: per-class weights must lie in [0, 1], got {weights.tolist()}")
    return weights


def softmax_focal_loss(
    logits: Tensor,
    labels: Tensor,
    alpha: float | Sequence[float] | Tensor | None = None,
    gamma: float = 2.0,
    reduction: str = "none",
    ignore_index: int = -100,
) -> Tensor:
    """Multi-class focal loss on a softmax: FL = -alpha_y (1 - p_y)^gamma log(p_y), p = softmax.

    Focal Loss for Dense Object Detection (Lin et al., 2017), arXiv:1708.02002 (the paper's
    alpha-balanced form, applied to the softmax probability of the true class y).

    Args:
        logits: [N, C] raw scores, C >= 2 (a detection head that uses it predicts a background
            class among the C).
        labels: [N] int class indices in [0, C); rows equal to `ignore_index` give loss 0.
        alpha: None (no weight) | float in [0, 1] (the same weight for every class) | a per-class
            sequence of C weights in [0, 1]. kornia's focal_loss gives class 0 (background)
            1 - alpha and the others alpha: pass [1 - a, a, ..., a] to reproduce it.
        gamma: focusing parameter >= 0; gamma=0 with alpha=None equals F.cross_entropy.
        reduction: "none" -> [N]; "sum"; "mean" over non-ignored rows (not over sum(alpha_y) as
            F.cross_entropy(weight=...) does; kornia averages over all N*C one-hot entries).
            No valid row: sum and mean are 0, not NaN.

    Returns: float32 (float64 for float64 logits). log(1 - p_y) is computed as
    logsumexp over the other classes minus logsumexp over all, so (1 - p_y)^gamma and its gradient
    stay finite for gamma < 1 when p_y rounds to 1.
    """
    check_reduction(reduction)
    check_float_logits("softmax_focal_loss", logits)
    check_non_negative("gamma", gamma)
    if logits.dim() != 2:
        raise ValueError(f"softmax_focal_loss: logits must be [N, C], got {tuple(logits.shape)}")
    N, C = logits.shape
    if C < 2:
        raise ValueError(f"softmax_focal_loss: needs C >= 2 classes, got C={C}")
    if labels.shape != (N,):
        raise ValueError(
            f"softmax_focal_loss: labels must be [N] = [{N}], got {tuple(labels.shape)}"
        )
    weights = _per_class_alpha(alpha, C)
    x = logits.to(compute_dtype(logits.dtype))  # [N, C]
    valid = labels != ignore_index  # [N]
    safe = torch.where(valid, labels, 0).long()  # gather needs an in-range index on ignored rows
    if ((safe < 0) | (safe >= C)).any():
        raise ValueError(f"softmax_focal_loss: labels must lie in [0, {C}) or be ignore_index")
    lse = torch.logsumexp(x, dim=1)  # [N]
    ce = lse - x.gather(1, safe[:, None]).squeeze(1)  # -log p_y, [N]
    loss = ce
    if gamma != 0:
        # log(1 - p_y) = log sum_{c != y} e^{x_c} - lse: no cancellation when p_y -> 1
        others = x.scatter(1, safe[:, None], float("-inf"))  # [N, C], true class removed
        log_1m_py = torch.logsumexp(others, dim=1) - lse  # [N]
        loss = torch.exp(gamma * log_1m_py) * ce
    if isinstance(weights, Tensor):
        loss = loss * weights.to(device=x.device, dtype=x.dtype)[safe]
    elif weights is not None:
        loss = loss * weights
    loss = torch.where(valid, loss, torch.zeros((), dtype=x.dtype, device=x.device))
    return reduce(loss, reduction, count=valid.sum())


def ce_loss(
    logits: Tensor, labels: Tensor, reduction: str = "none", ignore_index: int = -100
) -> Tensor:
    """Softmax cross-entropy baseline: logits [N, C], labels [N] -> [N] (or a scalar).

    F.cross_entropy in float32 (float64 for float64 logits); "mean" is over non-ignored rows as
    in torch, but with no valid row it is 0 instead of NaN.
    """
    check_reduction(reduction)
    check_float_logits("ce_loss", logits)
    x = logits.to(compute_dtype(logits.dtype))
    loss = F.cross_entropy(x, labels, reduction="none", ignore_index=ignore_index)
    return reduce(loss, reduction, count=(labels != ignore_index).sum())
