"""torchvision RetinaNet with the classification loss chosen by name and a vectorized loss head.

torchvision's head hard-codes sigmoid focal loss (alpha 0.25, gamma 2), loops over images and
normalizes per image. `FocalRetinaNet` keeps torchvision's backbone, FPN, anchors, matcher (IoU
0.5/0.4 with low-quality matches) and NMS, and replaces `compute_loss` with one batched
computation: any loss of `focalbench.losses`, alpha/gamma/beta from the config, and the
positive-count normalization named in the config. Optionally the box branch is the GFL head: per
side a distribution over reg_max + 1 distances (in stride units), trained with DFL + GIoU.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.retinanet import (
    RetinaNet,
    RetinaNetClassificationHead,
    RetinaNetHead,
    RetinaNetRegressionHead,
)
from torchvision.ops import boxes as box_ops
from torchvision.ops import generalized_box_iou_loss
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from focalbench.config import LossCfg, RetinaNetCfg
from focalbench.losses import distribution_focal_loss
from focalbench.models.criterion import PRIOR_PROB, ClassificationLoss, init_class_bias
from focalbench.models.weights import freeze_stages, load_backbone_weights, norm_layer

DFL_WEIGHT = 0.25  # GFL's default weights of the DFL and GIoU terms
GIOU_WEIGHT = 2.0


class _StrideAnchors(AnchorGenerator):
    """AnchorGenerator that remembers each level's stride and anchor count (the DFL head works in
    stride units)."""

    def forward(self, image_list, feature_maps):
        anchors = super().forward(image_list, feature_maps)
        height = image_list.tensors.shape[-2]
        self.level_strides = [height / f.shape[-2] for f in feature_maps]
        self.level_counts = [
            f.shape[-2] * f.shape[-1] * self.num_anchors_per_location()[0] for f in feature_maps
        ]
        return anchors

    def anchor_strides(self, device) -> Tensor:
        """Stride of every anchor, in the order of the concatenated head outputs.  # [A]"""
        return torch.cat(
            [
                torch.full((n,), s, device=device)
                for s, n in zip(self.level_strides, self.level_counts)
            ]
        )


class DFLRegressionHead(RetinaNetRegressionHead):
    """GFL box branch: per anchor 4 sides x (reg_max + 1) logits of the distance to the box edge."""

    def __init__(self, in_channels: int, num_anchors: int, reg_max: int, norm_layer=None):
        super().__init__(in_channels, num_anchors, norm_layer=norm_layer)
        self.bins = reg_max + 1
        self.bbox_reg = nn.Conv2d(in_channels, num_anchors * 4 * self.bins, 3, padding=1)
        nn.init.normal_(self.bbox_reg.weight, std=0.01)
        nn.init.zeros_(self.bbox_reg.bias)

    def forward(self, x: list[Tensor]) -> Tensor:
        out = []
        for features in x:
            reg = self.bbox_reg(self.conv(features))
            N, _, H, W = reg.shape
            reg = reg.view(N, -1, 4 * self.bins, H, W).permute(0, 3, 4, 1, 2)
            out.append(reg.reshape(N, -1, 4 * self.bins))  # [N, HWA, 4 * bins]
        return torch.cat(out, dim=1)


class FocalRetinaNet(RetinaNet):
    """RetinaNet whose loss is `cls_loss` (any focalbench classification loss) and whose box branch
    is `l1` or `dfl`. A `models.Detector`."""

    # what `train.compile` compiles: the dense convolutions; anchors, matching, the loss and
    # post-processing stay eager (their shapes change with every batch's boxes)
    compiled_parts = ("backbone", "head")
    audit = None  # no per-epoch audit (DETR's matching audit has no anchor-matching counterpart)

    def __init__(
        self,
        backbone,
        num_classes: int,
        cls_loss: ClassificationLoss,
        box_head: str = "l1",
        reg_max: int = 8,
        anchor_sizes=(16, 32, 64, 128, 256),
        image_size: int = 256,
        score_thresh: float = 0.01,
        detections_per_img: int = 100,
        head_convs: int = 4,
    ):
        anchor_generator = _StrideAnchors(
            tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in anchor_sizes),
            ((0.5, 1.0, 2.0),) * len(anchor_sizes),
        )
        num_anchors = anchor_generator.num_anchors_per_location()[0]
        # softmax losses need an explicit background class: the last logit (DETR's no-object class)
        out_classes = cls_loss.out_channels(num_classes)
        norm = partial(
            nn.GroupNorm, 32
        )  # from scratch, the heads train far better with GroupNorm (RetinaNet v2)
        head = RetinaNetHead(backbone.out_channels, num_anchors, out_classes, norm_layer=norm)
        head.classification_head = RetinaNetClassificationHead(
            backbone.out_channels,
            num_anchors,
            out_classes,
            prior_probability=PRIOR_PROB,
            norm_layer=norm,
        )
        init_class_bias(head.classification_head.cls_logits.bias, num_classes, cls_loss.softmax)
        if box_head == "dfl":
            head.regression_head = DFLRegressionHead(
                backbone.out_channels, num_anchors, reg_max, norm
            )
        # fewer than torchvision's 4 convs per branch: a cheaper head for CPU budgets
        # (model.head_convs)
        for branch in (head.classification_head, head.regression_head):
            branch.conv = branch.conv[:head_convs]
        super().__init__(
            backbone,
            out_classes,
            min_size=image_size,
            max_size=image_size,
            anchor_generator=anchor_generator,
            head=head,
            score_thresh=score_thresh,
            detections_per_img=detections_per_img,
        )
        self.num_classes = num_classes
        self.cls_loss = cls_loss
        self.box_head = box_head
        # focalbench's datasets deliver image_size x image_size images: torchvision's resize would
        # only interpolate them at scale 1.0 (a few % of a CPU step); normalization and batching
        # stay.
        self.transform.resize = lambda image, target=None: (image, target)
        self.reg_max = reg_max

    # ---- boxes -------------------------------------------------------------------------------
    def decode(self, box_out: Tensor, anchors: Tensor, strides: Tensor) -> Tensor:
        """Boxes xyxy from the box branch.  box_out: [N, 4] deltas or [N, 4 * bins]; anchors [N, 4];
        strides [N]"""
        if self.box_head == "l1":
            return self.box_coder.decode_single(box_out, anchors)
        prob = box_out.float().view(-1, 4, self.reg_max + 1).softmax(-1)  # [N, 4, bins]
        bins = torch.arange(self.reg_max + 1, device=box_out.device, dtype=prob.dtype)
        dist = (prob * bins).sum(-1) * strides[:, None]  # expected l, t, r, b in pixels
        centre = (anchors[:, :2] + anchors[:, 2:]) / 2
        return torch.cat([centre - dist[:, :2], centre + dist[:, 2:]], dim=1)

    def _box_loss(
        self, box_out: Tensor, gt: Tensor, anchors: Tensor, strides: Tensor, pred: Tensor
    ) -> Tensor:
        """Per-positive box loss.  box_out [P, 4|4*bins], gt/anchors/pred [P, 4], strides [P] ->
        [P]"""
        if self.box_head == "l1":
            return F.l1_loss(
                box_out, self.box_coder.encode_single(gt, anchors), reduction="none"
            ).sum(1)
        centre = (anchors[:, :2] + anchors[:, 2:]) / 2
        dist = (
            torch.cat([centre - gt[:, :2], gt[:, 2:] - centre], dim=1) / strides[:, None]
        )  # [P, 4]
        # GFL clamps just below reg_max; our DFL accepts the last bin itself
        dist = dist.clamp(0, self.reg_max)
        dfl = distribution_focal_loss(box_out.reshape(-1, self.reg_max + 1), dist.reshape(-1)).view(
            -1, 4
        )
        giou = generalized_box_iou_loss(pred, gt, reduction="none")
        return DFL_WEIGHT * dfl.mean(1) + GIOU_WEIGHT * giou

    # ---- loss --------------------------------------------------------------------------------
    def compute_loss(self, targets, head_outputs, anchors):
        cls_logits = head_outputs["cls_logits"]  # [B, A, K]
        box_out = head_outputs["bbox_regression"]  # [B, A, 4] or [B, A, 4 * bins]
        B, A, _ = cls_logits.shape
        anchors = torch.stack(anchors)  # [B, A, 4]
        strides = self.anchor_generator.anchor_strides(cls_logits.device)  # [A]

        matched = cls_logits.new_full((B, A), -1, dtype=torch.long)  # -1 background, -2 ignored
        gt_boxes = anchors.new_zeros(B, A, 4)
        gt_labels = matched.new_zeros(B, A)
        for b, t in enumerate(targets):  # matching is per image; everything after is batched
            if t["boxes"].numel():
                matched[b] = self.proposal_matcher(box_ops.box_iou(t["boxes"], anchors[b]))
                idx = matched[b].clamp(min=0)
                gt_boxes[b], gt_labels[b] = t["boxes"][idx], t["labels"][idx]
        fg = matched >= 0  # [B, A]
        valid = matched != self.proposal_matcher.BETWEEN_THRESHOLDS
        num_pos = fg.sum(1)  # [B]

        fg_b, fg_a = fg.nonzero(as_tuple=True)
        pos_out = box_out[fg_b, fg_a]
        pos_gt, pos_anchors, pos_strides = gt_boxes[fg_b, fg_a], anchors[fg_b, fg_a], strides[fg_a]
        pos_pred = self.decode(
            pos_out if self.box_head == "dfl" else pos_out.detach(), pos_anchors, pos_strides
        )

        labels = gt_labels[fg_b, fg_a]  # [P]
        cls = self.cls_loss(cls_logits, fg_b, fg_a, labels, num_pos, pos_pred, pos_gt, valid=valid)
        box = self._box_loss(pos_out, pos_gt, pos_anchors, pos_strides, pos_pred)
        box_per_image = cls.new_zeros(B).index_add(0, fg_b, box.to(cls.dtype))  # [B]
        return {
            "classification": cls,
            "bbox_regression": self.cls_loss.normalize(box_per_image, num_pos),
        }

    # ---- inference ---------------------------------------------------------------------------
    def postprocess_detections(self, head_outputs, anchors, image_shapes):
        """Top-k per level above `score_thresh`, class-wise NMS, best `detections_per_img` per
        image."""
        strides = self.anchor_generator.level_strides
        detections = []
        for index, image_shape in enumerate(image_shapes):
            boxes_all, scores_all, labels_all = [], [], []
            for level, anchors_l in enumerate(anchors[index]):
                logits = head_outputs["cls_logits"][level][index]  # [A_l, K]
                scores = self.cls_loss.scores(logits, self.num_classes).flatten()  # [A_l * C]
                keep = torch.where(scores > self.score_thresh)[0]
                scores, order = scores[keep].topk(min(self.topk_candidates, keep.numel()))
                flat_idx = keep[order]
                anchor_idx = flat_idx // self.num_classes
                stride = torch.full((anchor_idx.numel(),), strides[level], device=logits.device)
                box_out = head_outputs["bbox_regression"][level][index][anchor_idx]
                boxes = self.decode(box_out, anchors_l[anchor_idx], stride)
                boxes_all.append(box_ops.clip_boxes_to_image(boxes, image_shape))
                scores_all.append(scores)
                labels_all.append(flat_idx % self.num_classes)
            boxes, scores, labels = (
                torch.cat(boxes_all),
                torch.cat(scores_all),
                torch.cat(labels_all),
            )
            keep = box_ops.batched_nms(boxes, scores, labels, self.nms_thresh)[
                : self.detections_per_img
            ]
            detections.append(
                {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
            )
        return detections


def build_retinanet(
    model_cfg: RetinaNetCfg,
    loss_cfg: LossCfg,
    num_classes: int,
    image_size: int,
    results_dir: str | Path = "results",
) -> FocalRetinaNet:
    """RetinaNet with a ResNet-18/50 FPN (P3-P7): from scratch with BatchNorm, or from
    `model.weights` (see models/weights.py) with the BatchNorm handling of `model.norm`."""
    cls_loss = ClassificationLoss(loss_cfg)
    cls_loss.check_num_classes(num_classes)  # a per-class loss.alpha: one weight per logit
    resnet = getattr(torchvision.models, model_cfg.backbone)(
        weights=None, norm_layer=norm_layer(model_cfg.norm_layer)
    )
    load_backbone_weights(resnet, model_cfg.weights, model_cfg.backbone, results_dir)
    freeze_stages(resnet, model_cfg.trainable)
    # C3..C5 widths: 128/256/512 (R18) or 512/1024/2048 (R50)
    c3 = resnet.layer2[-1].conv1.in_channels
    width = model_cfg.fpn_channels
    backbone = BackboneWithFPN(
        resnet,
        return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
        in_channels_list=[c3, 2 * c3, 4 * c3],
        out_channels=width,
        extra_blocks=LastLevelP6P7(width, width),  # P6/P7 from P5, as torchvision's RetinaNet v1
    )
    return FocalRetinaNet(
        backbone,
        num_classes,
        cls_loss,
        box_head=model_cfg.box_head,
        reg_max=model_cfg.reg_max,
        anchor_sizes=tuple(model_cfg.anchor_sizes),
        image_size=image_size,
        score_thresh=model_cfg.score_thresh,
        detections_per_img=model_cfg.detections_per_img,
        head_convs=model_cfg.head_convs,
    )
