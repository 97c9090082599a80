"""The small DETR's matching audit (issue 6): how the run's Hungarian class cost assigns queries,
measured after each epoch on a fixed probe batch (definitions in focalbench.matching.audit)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from focalbench.matching import (
    MatchInstability,
    agreement_and_regret,
    box_cxcywh_to_xyxy,
    box_iou_giou,
    class_cost,
    sigmoid_pair_cost,
    softmax_pair_cost,
)
from focalbench.models.detr_criterion import SetCriterion, normalized_targets


class MatchingAudit:
    """model.audit of a SmallDETR: call it with the detector and a probe batch after each epoch.

    Returns {"match_agreement", "match_regret", "match_stability"}: agreement and regret of the
    run's class cost against the loss-optimal one, and DN-DETR's instability (the fraction of
    ground truths whose query changed since the previous call; NaN at the first). It remembers the
    previous call's matching, so keep one audit per run and probe batch.
    """

    def __init__(self, criterion: SetCriterion) -> None:
        self.criterion = criterion
        self._instability = MatchInstability()

    @torch.no_grad()
    def __call__(
        self, model: nn.Module, images: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> dict[str, float]:
        """model: the SmallDETR (its head_outputs); images [3, S, S] and targets xyxy pixels, as
        the detector takes them. Eval mode, so BatchNorm statistics are neither used from the batch
        nor updated; the model's mode is restored."""
        was_training = model.training
        model.eval()
        try:
            logits, boxes = model.head_outputs(images)
            logits, boxes = logits[-1].float(), boxes[-1].float()  # the final layer's
        finally:
            model.train(was_training)
        gts = normalized_targets(targets, images[0].shape[-2:])
        m = self.criterion.matcher
        indices = m(logits, boxes, gts)
        instability = self._instability.update(indices, [len(t["labels"]) for t in gts])
        run, optimal = [], []
        for b, t in enumerate(gts):
            run.append(
                class_cost(m.class_cost, logits[b], t["labels"], m.alpha, m.gamma, m.softmax)
            )
            optimal.append(self.optimal_class_cost(logits[b], boxes[b], t))
        agreement, regret = agreement_and_regret(run, optimal)
        return {
            "match_agreement": agreement,
            "match_regret": regret,
            "match_stability": instability,
        }

    def optimal_class_cost(
        self, logits: Tensor, boxes: Tensor, target: dict[str, Tensor]
    ) -> Tensor:
        """The pair cost whose assignment minimizes the run's own total classification loss.

        logits [Q, K], boxes [Q, 4] cxcywh, target normalized -> [Q, T]."""
        cls_loss = self.criterion.cls_loss
        if cls_loss.softmax:
            noobj = cls_loss.noobj_weight if cls_loss.noobj_weight is not None else 1.0
            return softmax_pair_cost(cls_loss.elementwise, logits, target["labels"], noobj)
        positive: Tensor | float = 1.0
        if cls_loss.target == "iou":  # the soft target the pair would get: its IoU
            iou, _ = box_iou_giou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target["boxes"]))
            positive = iou.clamp(min=1e-6)
        return sigmoid_pair_cost(cls_loss.elementwise, logits, target["labels"], positive)
