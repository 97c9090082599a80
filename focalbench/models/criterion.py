"""The classification loss of both detectors: one dispatch on the registered loss's kind and target.

A detector finds its positives (RetinaNet: anchors matched by IoU; DETR: queries matched by the
Hungarian algorithm) and hands them here as (image, slot, class) triples; `ClassificationLoss`
builds the target the loss expects and reduces the elementwise loss by the config's rule:
- sigmoid losses (focal, bce, qfl, vfl): C logits per slot and a [B, N, C] target, 1 at each
  positive's class (QFL/VFL, target "iou": the IoU of the positive's detached predicted box with its
  ground truth, as GFL and VarifocalNet); the sum is divided by the positive count, of the batch or
  of each image then averaged (`loss.normalization`);
- softmax losses (ce, softmax_focal): C + 1 logits per slot, the last is background (no-object),
  and a [B, N] label target. By default normalized as the sigmoid losses; with `noobj_weight` set
  (DETR) the no-object class is weighted so and the loss is the weighted mean over slots, as DETR's
  cross-entropy (arXiv 2005.12872), and the normalization rule is not used.
- GHM-C (ghmc) brings its own normalization, as mmdetection's GHMC: the weighted BCE summed over
  the valid elements (anchors not ignored, times C classes) divided by their number;
  `loss.normalization` is not used. Its running bin counts (loss.momentum > 0) are this module's
  buffer `ghm_acc_sum`, so they enter the detector's state_dict, hence the checkpoint, and a
  resumed run goes on with them. mmdetection calls GHMC once per FPN level (five histograms and
  five momentum updates a step); here it is called once over every anchor of the batch (one
  histogram, one update).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchvision.ops import box_area

from focalbench.config import LossCfg
from focalbench.errors import InputError
from focalbench.losses import get_loss

# Lin et al. 2017: the initial foreground probability, so early training is not drowned by negatives
PRIOR_PROB = 0.01


class ClassificationLoss(nn.Module):
    """The config's classification loss (LossCfg), as a detector's loss head applies it. A module
    so that a loss with state across iterations (GHM-C's running bin counts) keeps it as a buffer
    of the detector, saved in its checkpoint; the other losses have none."""

    def __init__(self, cfg: LossCfg, noobj_weight: float | None = None) -> None:
        super().__init__()
        spec = get_loss(cfg.name)
        if spec.kind == "box":
            raise ValueError(f"loss {cfg.name!r} is a box loss, not a classification loss")
        # the spec's parts, not the spec: its read-only params mapping cannot be deep-copied, and
        # detectors are (tests/models/test_compile.py compares a compiled copy with the original)
        self.name, self.fn, self.target = cfg.name, spec.fn, spec.target
        self.softmax = spec.kind == "softmax"
        self.kwargs = dict(cfg.params)  # only the hyper-parameters this loss takes
        if isinstance(self.kwargs.get("alpha"), str):  # inverse_freq: a list only the data tells
            raise ValueError(
                f"loss.alpha={self.kwargs['alpha']} is resolved from the training annotations "
                "before a model is built (focalbench.engine.resolve.resolve_alpha)"
            )
        self.normalization = cfg.normalization
        self.noobj_weight = noobj_weight
        if self.name == "ghmc" and cfg.momentum > 0:
            self.register_buffer("ghm_acc_sum", torch.zeros(cfg.bins, dtype=torch.float32))

    def out_channels(self, num_classes: int) -> int:
        """Logits per slot: softmax losses add the background class, last."""
        return num_classes + 1 if self.softmax else num_classes

    def check_num_classes(self, num_classes: int) -> None:
        """A per-class loss.alpha has one weight per logit: per class (sigmoid focal), or per class
        and then the background (softmax focal). InputError otherwise: checked when a model is
        built, the first moment the dataset's class count is known."""
        alpha = self.kwargs.get("alpha")
        want = self.out_channels(num_classes)
        if isinstance(alpha, tuple) and len(alpha) != want:
            which = "one per class, then the background" if self.softmax else "one per class"
            raise InputError(
                f"loss.alpha has {len(alpha)} per-class weights; the dataset has {num_classes} "
                f"classes, so give {want} ({which})"
            )

    def elementwise(self, logits: Tensor, target: Tensor) -> Tensor:
        """The registered loss, reduction "none", with this config's hyper-parameters."""
        return self.fn(logits, target, reduction="none", **self.kwargs)

    def forward(
        self,
        logits: Tensor,
        batch_idx: Tensor,
        slot_idx: Tensor,
        labels: Tensor,
        num_pos: Tensor,
        pred_xyxy: Tensor,
        gt_xyxy: Tensor,
        valid: Tensor | None = None,
    ) -> Tensor:
        """The normalized classification loss of a batch.

        logits [B, N, K] (N slots: anchors or queries); the P positives as batch_idx, slot_idx,
        labels [P] (classes 0..C-1), with their predicted and ground-truth boxes pred_xyxy, gt_xyxy
        [P, 4] (any one scale; read only for IoU targets, pred detached); num_pos [B], the count
        the normalization divides by; valid [B, N] bool, False for slots the loss ignores (RetinaNet
        anchors between its IoU thresholds), None = all.
        """
        B, N, K = logits.shape
        if self.softmax:
            target = torch.full((B, N), K - 1, dtype=torch.long, device=logits.device)  # background
            target[batch_idx, slot_idx] = labels
            if self.noobj_weight is not None:  # DETR: CE's weighted mean over all queries
                loss = self.elementwise(logits.flatten(0, 1), target.flatten())  # [B*N]
                weight = torch.where(target.flatten() == K - 1, self.noobj_weight, 1.0)
                weight = weight.to(loss.dtype)
                return (loss * weight).sum() / weight.sum()
            if valid is not None:
                target = target.masked_fill(~valid, -100)  # the losses' ignore_index: loss 0
            loss = self.elementwise(logits.flatten(0, 1), target.flatten())  # [B*N]
            return self.normalize(loss.view(B, N).sum(1), num_pos)
        target = torch.zeros(B, N, K, dtype=torch.float32, device=logits.device)
        if self.name == "ghmc":
            target[batch_idx, slot_idx, labels] = 1.0
            return self.ghmc(logits, target, valid)
        if self.target == "iou":  # QFL/VFL: the quality of the positive's box is its target
            target[batch_idx, slot_idx, labels] = elementwise_iou(
                pred_xyxy.detach(), gt_xyxy
            ).clamp(min=1e-6)
        else:
            target[batch_idx, slot_idx, labels] = 1.0
        loss = self.elementwise(logits, target)  # [B, N, C]
        if valid is not None:
            loss = loss * valid[..., None]
        return self.normalize(loss.sum((1, 2)), num_pos)

    def ghmc(self, logits: Tensor, target: Tensor, valid: Tensor | None) -> Tensor:
        """GHM-C over the batch: the elementwise weighted BCE [B, N, C] summed over the valid
        elements, divided by their number (its own normalization; `ghm_acc_sum` updated in place
        when loss.momentum > 0)."""
        weight = None if valid is None else valid[..., None].expand_as(target)  # [B, N, C]
        state = getattr(self, "ghm_acc_sum", None)
        loss = self.fn(logits, target, weight, acc_sum=state, reduction="none", **self.kwargs)
        if weight is None:
            return loss.sum() / max(target.numel(), 1)
        return loss.sum() / weight.sum().clamp(min=1)

    def normalize(self, per_image: Tensor, num_pos: Tensor) -> Tensor:
        """A loss summed per image [B] -> the batch's loss, by `loss.normalization`: divided by the
        positives of the whole batch (mmdet, DETR), or by each image's (at least 1), then the mean
        over images (torchvision's RetinaNet)."""
        if self.normalization == "num_pos_batch":
            return per_image.sum() / num_pos.sum().clamp(min=1)
        return (per_image / num_pos.clamp(min=1)).mean()

    def scores(self, logits: Tensor, num_classes: int) -> Tensor:
        """Per-class probabilities [..., C] of logits [..., K]: the sigmoid, or the softmax without
        its background class, so that both kinds are evaluated by one rule."""
        if self.softmax:
            return logits.float().softmax(-1)[..., :num_classes]
        return logits.float().sigmoid()


def init_class_bias(bias: Tensor, num_classes: int, softmax: bool) -> None:
    """Prior-probability init of a classifier's bias (Lin et al. 2017), in place: p = PRIOR_PROB
    for every class at the start. bias: [A * K], K logits per slot, A slots per location.

    sigmoid: b = -log((1 - pi) / pi); without it the sigmoid losses start by drowning in easy
    negatives. softmax: classes 0 and the background log(1 / pi - C), so that each class's softmax
    probability is pi.
    """
    with torch.no_grad():
        if softmax:
            per_slot = bias.view(-1, num_classes + 1)  # [A, C + 1]
            per_slot[:, :num_classes] = 0.0
            per_slot[:, num_classes] = math.log(1 / PRIOR_PROB - num_classes)
        else:
            bias.fill_(-math.log((1 - PRIOR_PROB) / PRIOR_PROB))


def elementwise_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of boxes a[i] and b[i] (xyxy).  a, b: [N, 4] -> [N]"""
    lt = torch.max(a[:, :2], b[:, :2])
    rb = torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    union = box_area(a) + box_area(b) - inter
    return inter / union.clamp(min=1e-6)
