"""Naive float64 formulas, written from the papers and independently of focalbench.losses.

They use plain torch ops (so autograd gives reference gradients) or per-row Python loops, trade
speed and range for obviousness, and are only valid where they do not overflow: moderate logits,
except `sigmoid_focal_logspace` which covers hard targets at any logit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def sigmoid_focal(x: Tensor, t: Tensor, alpha: float | None, gamma: float) -> Tensor:
    """Lin et al. eq. (5) with torchvision's soft-target p_t and alpha_t; alpha None/<0 = off."""
    p = 1.0 / (1.0 + torch.exp(-x))
    ce = -(t * torch.log(p) + (1.0 - t) * torch.log(1.0 - p))
    p_t = p * t + (1.0 - p) * (1.0 - t)
    loss = (1.0 - p_t) ** gamma * ce
    if alpha is not None and alpha >= 0:
        loss = (alpha * t + (1.0 - alpha) * (1.0 - t)) * loss
    return loss


def sigmoid_focal_logspace(x: Tensor, t: Tensor, alpha: float | None, gamma: float) -> Tensor:
    """Same loss for t in {0, 1}, in log space so it holds at |x| = 100: with the signed logit
    z = x (t = 1) or -x (t = 0), log p_t = logsigmoid(z) and log(1 - p_t) = logsigmoid(-z)."""
    z = torch.where(t > 0.5, x, -x)
    loss = -torch.exp(gamma * F.logsigmoid(-z)) * F.logsigmoid(z)
    if alpha is not None and alpha >= 0:
        loss = torch.where(t > 0.5, alpha, 1.0 - alpha) * loss
    return loss


def softmax_focal(
    x: Tensor, labels: Tensor, alpha: float | list[float] | None, gamma: float, ignore_index: int
) -> Tensor:
    """Row by row: -alpha_y (1 - p_y)^gamma log p_y with p = softmax(row); ignored rows give 0."""
    rows = []
    for i in range(x.shape[0]):
        y = int(labels[i])
        if y == ignore_index:
            rows.append(x[i].sum() * 0.0)
            continue
        e = torch.exp(x[i] - x[i].max())
        p_y = e[y] / e.sum()
        a = 1.0 if alpha is None else (alpha if isinstance(alpha, float) else alpha[y])
        rows.append(-a * (1.0 - p_y) ** gamma * torch.log(p_y))
    return torch.stack(rows) if rows else x.sum(1) * 0.0


def quality_focal(x: Tensor, y: Tensor, beta: float) -> Tensor:
    """Li et al. eq. (5): -|y - s|^beta ((1 - y) log(1 - s) + y log s), s = sigmoid(x)."""
    s = 1.0 / (1.0 + torch.exp(-x))
    return -((y - s).abs() ** beta) * ((1.0 - y) * torch.log(1.0 - s) + y * torch.log(s))


def varifocal(x: Tensor, q: Tensor, alpha: float, gamma: float, iou_weighted: bool) -> Tensor:
    """Zhang et al. eq. (2), elementwise; q is a constant (detached) as in focalbench."""
    q = q.detach()
    p = 1.0 / (1.0 + torch.exp(-x))
    pos_weight = q if iou_weighted else torch.ones_like(q)
    positive = -pos_weight * (q * torch.log(p) + (1.0 - q) * torch.log(1.0 - p))
    negative = -alpha * p**gamma * torch.log(1.0 - p)
    return torch.where(q > 0, positive, negative)


def distribution_focal(logits: Tensor, target: Tensor) -> Tensor:
    """Li et al. eq. (6), row by row, bins at 0..B-1; a target on the last bin is -log S_{B-1}."""
    B = logits.shape[1]
    rows = []
    for i in range(logits.shape[0]):
        y = float(target[i])
        log_s = logits[i] - torch.logsumexp(logits[i], 0)
        left = math.floor(y)
        if left == B - 1:
            rows.append(-log_s[B - 1])
        else:
            rows.append(-((left + 1 - y) * log_s[left] + (y - left) * log_s[left + 1]))
    return torch.stack(rows)
