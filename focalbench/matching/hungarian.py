"""Hungarian matching of queries to ground truths (DETR, Carion et al. 2020, arXiv 2005.12872).

The cost of query q for ground truth t is
    weight_class * class_cost(q, t) + weight_bbox * L1(q, t) + weight_giou * (-GIoU(q, t))
with the class cost chosen by name (see costs.py). The matrices of the whole batch are computed in
one go on the model's device (the queries of all images against the ground truths of all images,
then each image's block is cut out: B x fewer kernel launches than a loop, and the blocks are
tiny), moved to the CPU once, and each block is solved with scipy.optimize.linear_sum_assignment.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from focalbench.matching.costs import (
    box_cxcywh_to_xyxy,
    class_cost,
    get_match_cost,
    giou_cost,
    l1_cost,
)

# A non-finite cost (NaN logits after a diverged step) would make scipy raise; a large finite one
# lets the matching finish so that the NaN loss is reported as a divergence by the training loop.
_BIG = 1e8


def assign(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum-cost assignment of one image.

    Args:
        cost: [Q, T] (any device; solved on the CPU).
    Returns: (query_idx, target_idx), int64 on the CPU, len(query_idx) == len(target_idx) ==
        min(Q, T); query_idx is sorted (scipy's order).
    """
    c = torch.nan_to_num(cost.detach().double().cpu(), nan=_BIG, posinf=_BIG, neginf=-_BIG)
    if c.numel() == 0:
        empty = torch.empty(0, dtype=torch.int64)
        return empty, empty.clone()
    rows, cols = linear_sum_assignment(c.numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


class HungarianMatcher:
    """One-to-one matcher with a named class cost plus L1 and GIoU box costs.

    Args:
        class_cost: prob | ce | focal | focal_full.
        weight_class, weight_bbox, weight_giou: cost weights (DETR-family defaults 2, 5, 2).
        alpha, gamma: the focal costs' own hyper-parameters (the model passes the loss's unless the
            config sets matcher.alpha / matcher.gamma); alpha None: no alpha-balancing.
        softmax: the class logits are softmax logits with a last no-object column.
    """

    def __init__(
        self,
        class_cost: str = "focal",
        weight_class: float = 2.0,
        weight_bbox: float = 5.0,
        weight_giou: float = 2.0,
        alpha: float | None = 0.25,
        gamma: float = 2.0,
        softmax: bool = False,
    ) -> None:
        self.class_cost = get_match_cost(class_cost).name  # fails early on an unknown name
        self.weight_class, self.weight_bbox, self.weight_giou = (
            weight_class,
            weight_bbox,
            weight_giou,
        )
        self.alpha, self.gamma, self.softmax = alpha, gamma, softmax

    def __repr__(self) -> str:
        return (
            f"HungarianMatcher(class_cost={self.class_cost!r}, weights=({self.weight_class}, "
            f"{self.weight_bbox}, {self.weight_giou}), alpha={self.alpha}, gamma={self.gamma}, "
            f"softmax={self.softmax})"
        )

    @torch.no_grad()
    def cost_matrices(
        self, pred_logits: Tensor, pred_boxes: Tensor, targets: list[dict[str, Tensor]]
    ) -> list[Tensor]:
        """Per-image total cost matrices.

        Args:
            pred_logits: [B, Q, C] (sigmoid) or [B, Q, C + 1] (softmax with no-object last).
            pred_boxes: [B, Q, 4] normalized cxcywh in [0, 1].
            targets: B dicts with "labels" int64 [T_b] and "boxes" [T_b, 4] normalized cxcywh.
        Returns: B float tensors [Q, T_b] on the CPU.
        """
        B, Q, _ = pred_logits.shape
        if len(targets) != B:
            raise ValueError(f"HungarianMatcher: {B} predictions but {len(targets)} targets")
        sizes = [len(t["labels"]) for t in targets]
        if sum(sizes) == 0:
            return [pred_logits.new_zeros(Q, 0, dtype=torch.float32).cpu() for _ in range(B)]
        labels = torch.cat([t["labels"] for t in targets])  # [sum T]
        gt_boxes = torch.cat([t["boxes"] for t in targets]).float()  # [sum T, 4]
        logits = pred_logits.flatten(0, 1)  # [B*Q, K]
        boxes = pred_boxes.flatten(0, 1).float()  # [B*Q, 4]
        cost = self.weight_class * class_cost(
            self.class_cost, logits, labels, self.alpha, self.gamma, self.softmax
        )  # [B*Q, sum T]
        if self.weight_bbox:
            cost = cost + self.weight_bbox * l1_cost(boxes, gt_boxes)
        if self.weight_giou:
            cost = cost + self.weight_giou * giou_cost(
                box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(gt_boxes)
            )
        cost = cost.view(B, Q, -1).cpu()  # one device->host copy for the batch
        # image b's block: its own queries against its own ground truths
        return [c[b] for b, c in enumerate(cost.split(sizes, dim=-1))]

    @torch.no_grad()
    def __call__(
        self, pred_logits: Tensor, pred_boxes: Tensor, targets: list[dict[str, Tensor]]
    ) -> list[tuple[Tensor, Tensor]]:
        """Match a batch (arguments as in `cost_matrices`).

        Returns: B pairs (query_idx, target_idx), int64 on the CPU, each of length min(Q, T_b).
        """
        return [assign(c) for c in self.cost_matrices(pred_logits, pred_boxes, targets)]


def query_of_target(indices: tuple[Tensor, Tensor], num_targets: int) -> np.ndarray:
    """The query matched to each ground truth, -1 where none is (Q < T). [T] int64."""
    out = np.full(num_targets, -1, dtype=np.int64)
    out[indices[1].numpy()] = indices[0].numpy()
    return out
