"""The small DETR's set criterion: Hungarian matching, then classification, L1 and GIoU losses, at
every decoder layer (DETR's `SetCriterion`, Carion et al. 2020, arXiv 2005.12872).

Each decoder layer gets its own matching, as in DETR. The classification loss is the shared
`models.criterion.ClassificationLoss` (softmax losses: DETR's no-object weighting; sigmoid losses:
Deformable DETR's sum over queries x classes divided by the ground-truth count). Boxes: L1 on
normalized cxcywh + GIoU loss, divided by the number of ground truths in the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss

from focalbench.matching import HungarianMatcher, box_cxcywh_to_xyxy, box_xyxy_to_cxcywh
from focalbench.models.criterion import ClassificationLoss


def normalized_targets(targets: list[dict[str, Tensor]], size) -> list[dict[str, Tensor]]:
    """xyxy pixels -> normalized cxcywh, the space of the predictions and the matcher.

    size: the images' (H, W)."""
    H, W = size
    scale = torch.tensor([W, H, W, H], dtype=torch.float32)
    return [
        {
            "labels": t["labels"],
            "boxes": box_xyxy_to_cxcywh(t["boxes"].float() / scale.to(t["boxes"].device)),
        }
        for t in targets
    ]


class SetCriterion(nn.Module):
    """The set loss of DETR's decoder outputs. No parameters: the detector's state dict is the
    network's alone."""

    def __init__(
        self,
        matcher: HungarianMatcher,
        cls_loss: ClassificationLoss,
        weight_class: float = 2.0,
        weight_bbox: float = 5.0,
        weight_giou: float = 2.0,
        aux_loss: bool = True,
    ) -> None:
        super().__init__()
        self.matcher, self.cls_loss = matcher, cls_loss
        self.weights = (weight_class, weight_bbox, weight_giou)
        self.aux_loss = aux_loss

    def forward(self, logits: Tensor, boxes: Tensor, targets: list[dict[str, Tensor]]) -> dict:
        """Set loss of every decoder layer (the last only when aux_loss is off), summed.

        logits [L, B, Q, K], boxes [L, B, Q, 4] normalized cxcywh; targets normalized cxcywh
        (normalized_targets). Returns weighted {"classification", "bbox_l1", "bbox_giou"}.
        """
        device = logits.device
        num_pos = torch.tensor([len(t["labels"]) for t in targets], device=device)  # [B]
        num_boxes = max(int(num_pos.sum()), 1)
        layers = range(logits.shape[0]) if self.aux_loss else [logits.shape[0] - 1]
        wc, wb, wg = self.weights
        totals = {"classification": 0.0, "bbox_l1": 0.0, "bbox_giou": 0.0}
        for layer in layers:
            lg, bx = logits[layer], boxes[layer]
            indices = self.matcher(lg.detach(), bx.detach(), targets)
            cls, l1, giou = self.layer_loss(lg, bx, targets, indices, num_pos, num_boxes)
            totals["classification"] = totals["classification"] + wc * cls
            totals["bbox_l1"] = totals["bbox_l1"] + wb * l1
            totals["bbox_giou"] = totals["bbox_giou"] + wg * giou
        return totals

    def layer_loss(
        self,
        logits: Tensor,
        boxes: Tensor,
        targets: list[dict[str, Tensor]],
        indices: list[tuple[Tensor, Tensor]],
        num_pos: Tensor,
        num_boxes: int,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """logits [B, Q, K], boxes [B, Q, 4], the matching (query_idx, target_idx) per image,
        ground truths per image num_pos [B] and in all num_boxes -> (classification, L1, GIoU)."""
        device = logits.device
        batch_idx = torch.cat([torch.full_like(i, b) for b, (i, _) in enumerate(indices)])  # [M]
        batch_idx, query_idx = batch_idx.to(device), torch.cat([i for i, _ in indices]).to(device)
        labels = torch.cat([t["labels"][j.to(device)] for t, (_, j) in zip(targets, indices)])
        gt = torch.cat([t["boxes"][j.to(device)] for t, (_, j) in zip(targets, indices)])  # [M, 4]
        pred = boxes[batch_idx, query_idx].float()  # [M, 4] cxcywh
        l1 = F.l1_loss(pred, gt, reduction="sum") / num_boxes
        pred_xyxy, gt_xyxy = box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(gt)
        giou = generalized_box_iou_loss(pred_xyxy, gt_xyxy, reduction="sum") / num_boxes
        cls = self.cls_loss(logits, batch_idx, query_idx, labels, num_pos, pred_xyxy, gt_xyxy)
        return cls, l1, giou
