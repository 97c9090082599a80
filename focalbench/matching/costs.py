"""Pairwise matching costs of DETR-style set prediction: class costs by name, and box costs.

A cost matrix is `cost[Q, T]`: row q is a query (a prediction), column t a ground truth. Lower is a
better match. The Hungarian matcher adds the weighted class, L1 and GIoU matrices and solves the
assignment. Every ground truth is matched exactly once (Q >= T), so a constant added to a whole
column never changes the assignment (DETR drops the 1 of 1 - p); a constant added to a row (one
query) does when Q > T, because not every query is matched: that is what separates focal_full
from focal below.

Class costs (p is the model's probability of the ground truth's class, computed from logits):
    prob        -p                                   DETR (Carion et al., arXiv 2005.12872)
    ce          -log p                               the pair's cross-entropy
    focal       pos - neg                            Deformable DETR (Zhu et al., arXiv 2010.04159)
    focal_full  pos + sum_c neg(q, c) - neg(q, l)    "full focal", proposed in detrex issue #196
with pos = alpha (1 - p)^gamma (-log p) and neg = (1 - alpha) p^gamma (-log(1 - p)): the focal
loss of the query at the class with target 1 and with target 0 (Lin et al. 2017, arXiv 1708.02002).
alpha may be one weight per class (`loss.alpha=[...]`): entry (q, c) then uses alpha_c, so column
t of `focal` uses the alpha of ground truth t's class.

Why pos - neg is the loss-optimal cost: the total sigmoid focal loss of an assignment is
sum over all (q, c) of neg(q, c) (every entry starts as a negative) plus, for each matched pair,
pos(q, l) - neg(q, l) (its entry turns positive). The first sum does not depend on the assignment,
so minimizing the sum of pos - neg over matched pairs minimizes the total loss (with a per-class
alpha too: each entry keeps its own class's weights in both sums). focal_full adds
sum_c neg(q, c), a per-query term that does depend on WHICH queries are matched when Q > T, so it
does not minimize the total loss in general (tests/matching keeps a counterexample).

Everything is computed in log space from the logits (logsigmoid, log_softmax, masked logsumexp),
never as log(1 - sigmoid(x)), which is -inf once sigmoid(x) rounds to 1 (|x| > 16.6 in float32);
Deformable DETR instead adds eps = 1e-8 inside the logs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import (  # type: ignore[import-untyped]
    box_area,
    box_convert,
    box_iou,
    generalized_box_iou,
)

# (log_p[Q, C], log_1mp[Q, C], labels[T], alpha (None, a float, or per class [C]), gamma)
#   -> cost[Q, T]
CostFn = Callable[[Tensor, Tensor, Tensor, "float | Tensor | None", float], Tensor]


@dataclass(frozen=True)
class CostSpec:
    """A registered class cost. `summary` is the one line `focalbench losses` prints."""

    name: str
    fn: CostFn
    params: tuple[str, ...]  # the hyper-parameters it reads (alpha, gamma) — informative
    summary: str


def _alpha_weights(alpha: float | Tensor | None) -> tuple[float | Tensor, float | Tensor]:
    """(weight of pos, weight of neg): floats, or tensors broadcast over the columns. alpha None
    turns balancing off (class_cost maps a negative float to None, as the losses do)."""
    if alpha is None:
        return 1.0, 1.0
    return alpha, 1.0 - alpha


def _pos_neg(
    log_p: Tensor, log_1mp: Tensor, alpha: float | Tensor | None, gamma: float
) -> tuple[Tensor, Tensor]:
    """Focal loss of every (query, column) entry with target 1 (pos) and 0 (neg). Both [Q, K].

    alpha: None, a float, or one weight per column [K]. (1 - p)^gamma = exp(gamma log(1 - p)):
    finite and exactly 1 at gamma = 0 (logs are finite for finite logits, so 0 * log never makes
    a NaN).
    """
    w_pos, w_neg = _alpha_weights(alpha)
    pos = w_pos * torch.exp(gamma * log_1mp) * -log_p
    neg = w_neg * torch.exp(gamma * log_p) * -log_1mp
    return pos, neg


def _prob(
    log_p: Tensor, log_1mp: Tensor, labels: Tensor, alpha: float | Tensor | None, gamma: float
) -> Tensor:
    # -p rather than 1 - p: the constant does not change the assignment (DETR)
    return -log_p[:, labels].exp()


def _ce(
    log_p: Tensor, log_1mp: Tensor, labels: Tensor, alpha: float | Tensor | None, gamma: float
) -> Tensor:
    return -log_p[:, labels]


def _focal(
    log_p: Tensor, log_1mp: Tensor, labels: Tensor, alpha: float | Tensor | None, gamma: float
) -> Tensor:
    # only the T label columns are needed: gather before the pow/exp work (and column t takes
    # the alpha of its ground truth's class)
    alpha_t = alpha[labels] if isinstance(alpha, Tensor) else alpha  # [T] or a float
    pos, neg = _pos_neg(log_p[:, labels], log_1mp[:, labels], alpha_t, gamma)  # [Q, T] each
    return pos - neg


def _focal_full(
    log_p: Tensor, log_1mp: Tensor, labels: Tensor, alpha: float | Tensor | None, gamma: float
) -> Tensor:
    pos, neg = _pos_neg(log_p, log_1mp, alpha, gamma)  # [Q, C] each
    # the query's whole focal loss if it takes label l: its positive at l, negatives elsewhere
    return pos[:, labels] + neg.sum(1, keepdim=True) - neg[:, labels]


MATCH_COSTS: dict[str, CostSpec] = {}


def _register(spec: CostSpec) -> None:
    if spec.name in MATCH_COSTS:
        raise ValueError(f"match cost {spec.name!r} is registered twice")
    MATCH_COSTS[spec.name] = spec


_register(CostSpec("prob", _prob, (), "-p of the gt class (DETR, arXiv 2005.12872)"))
_register(CostSpec("ce", _ce, (), "-log p of the gt class: the pair's cross-entropy"))
_register(CostSpec(
    "focal", _focal, ("alpha", "gamma"),
    "focal pos - neg (Deformable DETR, arXiv 2010.04159): minimizes the total focal loss; "
    "a per-class alpha takes the gt class's",
))  # fmt: skip
_register(CostSpec(
    "focal_full", _focal_full, ("alpha", "gamma"),
    "pos + sum_c neg - neg(gt): the query's whole focal loss (detrex #196); not loss-optimal",
))  # fmt: skip


def get_match_cost(name: str) -> CostSpec:
    try:
        return MATCH_COSTS[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown match cost {name!r}; choose from {sorted(MATCH_COSTS)}"
        ) from None


def class_log_probs(logits: Tensor, softmax: bool = False) -> tuple[Tensor, Tensor]:
    """log p and log(1 - p) of every foreground class, computed without cancellation.

    Args:
        logits: [Q, C] sigmoid logits, or [Q, C + 1] softmax logits whose last column is no-object.
        softmax: which of the two.
    Returns: (log_p, log_1mp), each [Q, C], float32 (float64 for float64 logits).
    """
    x = logits.double() if logits.dtype == torch.float64 else logits.float()
    if not softmax:
        return F.logsigmoid(x), F.logsigmoid(-x)  # log(1 - sigmoid(x)) = logsigmoid(-x)
    Q, K = x.shape
    lse = torch.logsumexp(x, dim=1, keepdim=True)  # [Q, 1]
    log_p = (x - lse)[:, : K - 1]  # [Q, C]
    # log(1 - p_c) = logsumexp over the other K - 1 logits - lse: a [Q, C, K] masked logsumexp
    # (exact where p_c rounds to 1, where log1p(-p_c) would be -inf)
    own = torch.eye(K - 1, K, dtype=torch.bool, device=x.device)  # [C, K]: class c masks itself
    others = x[:, None, :].masked_fill(own, float("-inf"))  # [Q, C, K]
    log_1mp = torch.logsumexp(others, dim=2) - lse  # [Q, C]
    return log_p, log_1mp


def class_cost(
    name: str,
    logits: Tensor,
    labels: Tensor,
    alpha: float | Sequence[float] | Tensor | None = 0.25,
    gamma: float = 2.0,
    softmax: bool = False,
) -> Tensor:
    """Class cost of assigning each query to each ground truth.

    Args:
        name: prob | ce | focal | focal_full (see the module docstring; `MATCH_COSTS`).
        logits: [Q, C] sigmoid logits; with softmax=True, [Q, C + 1] softmax logits whose last
            column is DETR's no-object class (p is then the softmax probability of the class).
        labels: [T] int64 ground-truth classes in [0, C).
        alpha: focal costs' weight of pos, in [0, 1] (neg gets 1 - alpha); None or < 0: no
            weighting; or one weight per foreground class, [C] in [0, 1] (entry (q, c) uses
            alpha_c, so `focal`'s column t uses its ground truth's). Unused by prob and ce.
        gamma: focal costs' focusing exponent >= 0. Unused by prob and ce.
        softmax: interpret logits as softmax logits with a no-object column.
    Returns: cost [Q, T], float32 (float64 for float64 logits); lower is a better match.
    """
    spec = get_match_cost(name)
    if logits.dim() != 2 or labels.dim() != 1:
        raise ValueError(
            f"class_cost: expects logits [Q, C] and labels [T], got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if not gamma >= 0:
        raise ValueError(f"class_cost: gamma must be >= 0, got {gamma!r}")
    C = logits.shape[1] - (1 if softmax else 0)
    if labels.numel() and (labels.min() < 0 or labels.max() >= C):
        raise ValueError(f"class_cost: labels must lie in [0, {C}), got {labels.tolist()}")
    log_p, log_1mp = class_log_probs(logits, softmax)
    weights = _cost_alpha(alpha, C, log_p)
    return spec.fn(log_p, log_1mp, labels.long(), weights, float(gamma))


def _cost_alpha(
    alpha: float | Sequence[float] | Tensor | None, num_classes: int, like: Tensor
) -> float | Tensor | None:
    """class_cost's alpha checked: None (off; also for a negative float), a float in [0, 1], or
    [C] weights in [0, 1] with the dtype and device of `like`."""
    if isinstance(alpha, Tensor) and alpha.dim() == 0:
        alpha = float(alpha)
    if alpha is None or isinstance(alpha, (int, float)):
        if alpha is not None and alpha > 1:
            raise ValueError(
                f"class_cost: alpha must lie in [0, 1] (or be None / < 0), got {alpha!r}"
            )
        return None if alpha is None or alpha < 0 else float(alpha)
    weights = torch.as_tensor(alpha, dtype=torch.float64).flatten().cpu()  # checked on the host
    if weights.numel() != num_classes:
        raise ValueError(
            "class_cost: a per-class alpha needs one weight per class, expected length "
            f"{num_classes}, "
            f"got {weights.numel()}"
        )
    if not ((weights >= 0) & (weights <= 1)).all():  # NaN fails too
        raise ValueError(f"class_cost: per-class alpha must lie in [0, 1], got {weights.tolist()}")
    return weights.to(device=like.device, dtype=like.dtype)


# ---- box costs -------------------------------------------------------------------------------
# The box geometry is torchvision.ops'; these names stay because the matcher and the DETR model
# import them from here.
def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """[..., 4] (cx, cy, w, h) -> (x0, y0, x1, y1)."""
    out: Tensor = box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")  # [..., 4]
    return out


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """[..., 4] (x0, y0, x1, y1) -> (cx, cy, w, h)."""
    out: Tensor = box_convert(boxes, in_fmt="xyxy", out_fmt="cxcywh")  # [..., 4]
    return out


def box_iou_giou(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU and generalized IoU of xyxy boxes (Rezatofighi et al. 2019, arXiv 1902.09630).

    a: [N, 4], b: [M, 4] -> (iou [N, M], giou [N, M]): torchvision.ops.box_iou and
    generalized_box_iou, except that a pair of two zero-area boxes gets 0 for both instead of
    torchvision's 0/0 = NaN, so a collapsed prediction cannot turn a whole cost matrix non-finite.
    """
    iou: Tensor = box_iou(a, b)  # [N, M]
    giou: Tensor = generalized_box_iou(a, b)  # [N, M]
    both_empty = (box_area(a)[:, None] + box_area(b)[None, :]) == 0  # [N, M]: union is 0
    return iou.masked_fill(both_empty, 0.0), giou.masked_fill(both_empty, 0.0)


def l1_cost(pred_cxcywh: Tensor, gt_cxcywh: Tensor) -> Tensor:
    """L1 distance of normalized cxcywh boxes. [Q, 4], [T, 4] -> [Q, T]."""
    return torch.cdist(pred_cxcywh, gt_cxcywh, p=1)


def giou_cost(pred_xyxy: Tensor, gt_xyxy: Tensor) -> Tensor:
    """-GIoU (DETR), in [-1, 1]; the loss 1 - GIoU differs by a constant.

    pred_xyxy [Q, 4], gt_xyxy [T, 4] -> [Q, T].
    """
    return -box_iou_giou(pred_xyxy, gt_xyxy)[1]
