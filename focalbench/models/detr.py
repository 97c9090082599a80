"""A small DETR whose classification loss and Hungarian class cost are chosen by name (issue 6).

DETR (Carion et al. 2020, arXiv 2005.12872): a ResNet, a transformer encoder over the feature map
with sine positional encodings, a decoder of object queries, and a set loss on the Hungarian
matching of queries to ground truths, repeated at every decoder layer (auxiliary losses). Written
here at a CPU-friendly size (d_model 128, 2 + 2 layers, ResNet-18 from scratch, C4 memory).

Queries. DETR's learned queries are the same for every image: on the embedded dataset from scratch
its decoder output stayed image-independent (3% of its variance across images) and the class
loss did not move within 10k CPU images. So each query has a learnable anchor point (as DAB-DETR,
Liu et al. 2022, arXiv 2201.12329, and Anchor DETR, arXiv 2109.07107): its positional query is the
anchor's sine encoding, its initial content is the encoder memory sampled at the anchor (the
content initialization of two-stage Deformable DETR, without the proposal head), and its box
centre is predicted as an offset from the anchor in logit space. Matching, losses and inference
are DETR's: one-to-one Hungarian set loss, no NMS.

Classification, following the two families of the literature:
- softmax losses (ce, softmax_focal): C + 1 logits, the last is no-object, weighted `noobj_weight`
  (0.1 in DETR); the loss is DETR's weighted mean over all queries;
- sigmoid losses (focal, bce, qfl, vfl): C logits, no no-object class, as Deformable DETR
  (Zhu et al. 2020, arXiv 2010.04159); the sum over all queries x classes is divided by the number
  of ground truths (`loss.normalization`: of the batch, or per image then averaged). QFL/VFL take
  the IoU of the matched (detached) predicted box as the positive target.
Boxes: L1 on normalized cxcywh + GIoU loss, divided by the number of ground truths in the batch.

This file is the network (`SmallDETR`), its post-processing and its builder; the set criterion is in
detr_criterion.py, the matching audit in detr_audit.py, the classification loss in criterion.py.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from focalbench.config import DetrCfg, LossCfg, MatcherCfg
from focalbench.losses import get_loss
from focalbench.matching import HungarianMatcher, box_cxcywh_to_xyxy
from focalbench.models.criterion import ClassificationLoss, init_class_bias
from focalbench.models.detr_audit import MatchingAudit
from focalbench.models.detr_criterion import SetCriterion, normalized_targets
from focalbench.models.detr_layers import (
    DecoderLayer,
    EncoderLayer,
    ResNetBody,
    SinePositionEncoding,
)
from focalbench.models.weights import freeze_stages, load_backbone_weights, norm_layer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SmallDETR(nn.Module):
    """DETR with a named classification loss and a named Hungarian class cost. A `models.Detector`.

    Call it like a torchvision detector: model(images, targets) -> dict of losses in train mode
    (its `criterion`), model(images) -> [{"boxes" xyxy pixels, "scores", "labels"}] per image in
    eval mode (`postprocess`). Images are [3, S, S] in 0..1, all of one size; targets carry "boxes"
    xyxy pixels and "labels" 0..C-1. `audit` is its matching audit (detr_audit.py).
    """

    def __init__(
        self, backbone: ResNetBody, num_classes: int, criterion: SetCriterion,
        d_model: int = 128, nheads: int = 8, enc_layers: int = 2, dec_layers: int = 2,
        dim_feedforward: int = 512, num_queries: int = 50, dropout: float = 0.0,
        detections_per_img: int = 100,
    ) -> None:  # fmt: skip
        super().__init__()
        self.num_classes, self.criterion = num_classes, criterion
        cls_loss = criterion.cls_loss
        per_class = not cls_loss.softmax and isinstance(cls_loss.kwargs.get("alpha"), tuple)
        self.audit = (PerClassAlphaAudit if per_class else MatchingAudit)(criterion)
        self.detections_per_img = detections_per_img
        self.backbone = backbone
        self.input_proj = nn.Conv2d(backbone.out_channels, d_model, 1)
        self.pos = SinePositionEncoding(d_model)
        layer_args = (d_model, nheads, dim_feedforward, dropout)
        self.encoder = nn.ModuleList(EncoderLayer(*layer_args) for _ in range(enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(*layer_args) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(d_model)  # shared by every layer's output (DETR)
        self.class_embed = nn.Linear(d_model, cls_loss.out_channels(num_classes))
        self.bbox_embed = nn.Sequential(
            nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, d_model), nn.ReLU(),
            nn.Linear(d_model, 4),
        )  # fmt: skip
        init_class_bias(self.class_embed.bias, num_classes, cls_loss.softmax)
        # learnable anchor points, one per query (DAB-DETR): initial boxes sit on them
        anchors = torch.rand(num_queries, 2) * 0.9 + 0.05
        self.anchor_logit = nn.Parameter(torch.logit(anchors))  # [Q, 2] (x, y) before sigmoid
        nn.init.zeros_(self.bbox_embed[-1].weight)
        nn.init.zeros_(self.bbox_embed[-1].bias)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def compiled_parts(self) -> tuple[str, ...]:
        """What `train.compile` compiles: the backbone and each transformer layer. Matching (scipy),
        the losses and post-processing stay eager."""
        layers = [f"encoder.{i}" for i in range(len(self.encoder))]
        layers += [f"decoder.{i}" for i in range(len(self.decoder))]
        return ("backbone", *layers)

    # ---- forward ---------------------------------------------------------------------------
    def head_outputs(self, images: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Per decoder layer: logits [L, B, Q, K] and boxes [L, B, Q, 4] (normalized cxcywh)."""
        sizes = {tuple(im.shape) for im in images}
        if len(sizes) != 1:
            raise ValueError(f"SmallDETR: all images of a batch must have one size, got {sizes}")
        x = (torch.stack(images) - self.mean) / self.std  # [B, 3, S, S]
        feat = self.input_proj(self.backbone(x))  # [B, d, H, W]
        B, _, H, W = feat.shape
        memory = feat.flatten(2).transpose(1, 2)  # [B, HW, d]
        pos = self.pos(H, W, feat.device).to(memory.dtype)[None]  # [1, HW, d]
        for layer in self.encoder:
            memory = layer(memory, pos)
        # Queries: position = sine encoding of the anchor (the same encoding as the memory's, so
        # cross-attention can learn to look near it); content = the memory sampled at the anchor,
        # so that every query depends on the image from the first step.
        anchors = self.anchor_logit.sigmoid()  # [Q, 2]
        query_pos = self.pos.points(anchors).to(memory.dtype)[None].expand(B, -1, -1)  # [B, Q, d]
        grid = (anchors * 2 - 1).to(memory.dtype)[None, :, None, :].expand(B, -1, -1, -1)
        fmap = memory.transpose(1, 2).reshape(B, -1, H, W)  # [B, d, H, W]
        tgt = F.grid_sample(fmap, grid, align_corners=False)  # [B, d, Q, 1], bilinear
        tgt, hs = tgt.squeeze(-1).transpose(1, 2), []  # [B, Q, d]
        for layer in self.decoder:
            tgt = layer(tgt, memory, pos, query_pos)
            hs.append(self.decoder_norm(tgt))
        out = torch.stack(hs)  # [L, B, Q, d]
        box = self.bbox_embed(out)  # [L, B, Q, 4]: centre offsets from the anchor, in logit space
        box = torch.cat([box[..., :2] + self.anchor_logit, box[..., 2:]], dim=-1)
        return self.class_embed(out), box.sigmoid()

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        logits, boxes = self.head_outputs(images)
        S = images[0].shape[-2:]
        if self.training:
            if targets is None:
                raise ValueError("SmallDETR in train mode needs targets")
            return self.criterion(logits, boxes, normalized_targets(targets, S))
        scores = self.criterion.cls_loss.scores(logits[-1], self.num_classes)  # [B, Q, C]
        return postprocess(scores, boxes[-1], S, self.detections_per_img)


class PerClassAlphaAudit(MatchingAudit):
    """The matching audit of a sigmoid loss with a per-class alpha (loss=focal loss.alpha=[...]).

    MatchingAudit measures the loss-optimal pair cost on the gathered label columns [Q, T], where
    a per-class alpha, broadcast over the last (class) dimension, no longer lines up with the
    classes. Here the loss sees all C columns, so column c gets alpha_c, and the label columns are
    gathered after: the same pos - neg bracket (focalbench.matching.audit), class by class.
    """

    def optimal_class_cost(
        self, logits: Tensor, boxes: Tensor, target: dict[str, Tensor]
    ) -> Tensor:
        """logits [Q, C], boxes [Q, 4] (unused: binary targets), target normalized -> [Q, T]."""
        loss = self.criterion.cls_loss.elementwise
        pos = loss(logits, torch.ones_like(logits))  # [Q, C]: every entry as a positive
        neg = loss(logits, torch.zeros_like(logits))  # [Q, C]: every entry as a negative
        return (pos - neg)[:, target["labels"].long()]


def postprocess(scores: Tensor, boxes: Tensor, size, k: int) -> list[dict[str, Tensor]]:
    """Top-k over queries x classes (Deformable DETR) for sigmoid and softmax models alike.

    scores [B, Q, C] (ClassificationLoss.scores: softmax models score the C foreground
    probabilities, no-object dropped, so that both kinds are evaluated on the same rule), boxes
    [B, Q, 4] normalized cxcywh, size (H, W) -> per image "boxes" [k, 4] xyxy pixels, "scores" [k],
    "labels" [k], k = min(k, Q * C).
    """
    H, W = size
    C = scores.shape[-1]
    scores, flat = scores.flatten(1).topk(min(k, scores[0].numel()), dim=1)
    query, labels = flat // C, flat % C  # [B, k]
    scale = torch.tensor([W, H, W, H], dtype=torch.float32, device=boxes.device)
    xyxy = box_cxcywh_to_xyxy(boxes.float()) * scale  # [B, Q, 4]
    xyxy = torch.gather(xyxy, 1, query[..., None].expand(-1, -1, 4))  # [B, k, 4]
    xyxy = torch.minimum(xyxy.clamp(min=0), scale)  # inside the image
    return [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(xyxy, scores, labels)]


def cost_alpha_gamma(loss_cfg, matcher_cfg) -> tuple[float | tuple[float, ...] | None, float]:
    """The focal costs' alpha and gamma: matcher.alpha/gamma when set, else the loss's.

    gamma: the loss's focusing exponent (gamma; QFL's beta; 0 for bce/ce, which have none).
    alpha: the loss's alpha for sigmoid losses with binary targets (focal; bce -> None, no
    balancing), so that the focal cost is exactly the loss-optimal one; 0.25 otherwise: VFL's alpha
    weighs its negatives (the opposite role), and a softmax loss's alphas weigh softmax
    probabilities (with a background weight). A per-class focal alpha (loss.alpha=[...] or
    inverse_freq, resolved) is passed on as the list: the cost of pair (q, t) then uses the alpha
    of t's class, which keeps the focal cost loss-optimal (matching/costs.py). A scalar
    matcher.alpha still overrides it.
    """
    spec = get_loss(loss_cfg.name)
    gamma = matcher_cfg.gamma
    if gamma is None:
        gamma = (
            loss_cfg.gamma
            if "gamma" in spec.params
            else loss_cfg.beta
            if "beta" in spec.params
            else 0.0
        )
    alpha = matcher_cfg.alpha
    if alpha is None:
        binary = spec.kind == "sigmoid" and spec.target == "binary"
        if binary and "alpha" in spec.params:
            alpha = loss_cfg.alpha
        elif binary:
            alpha = None
        else:
            alpha = 0.25
    return alpha, float(gamma)


def build_detr(
    model_cfg: DetrCfg, loss_cfg: LossCfg, matcher_cfg: MatcherCfg, num_classes: int,
    image_size: int, results_dir: str | Path = "results",
) -> SmallDETR:  # fmt: skip
    """SmallDETR and its set criterion from the config dataclasses."""
    m = model_cfg
    cls_loss = ClassificationLoss(loss_cfg, noobj_weight=m.noobj_weight)
    cls_loss.check_num_classes(num_classes)  # a per-class loss.alpha: one weight per logit
    alpha, gamma = cost_alpha_gamma(loss_cfg, matcher_cfg)
    mc = matcher_cfg
    matcher = HungarianMatcher(
        mc.name, mc.weight_class, mc.weight_bbox, mc.weight_giou,
        alpha=alpha, gamma=gamma, softmax=cls_loss.softmax,
    )  # fmt: skip
    criterion = SetCriterion(
        matcher, cls_loss, m.weight_class, m.weight_bbox, m.weight_giou, aux_loss=m.aux_loss
    )
    backbone = ResNetBody(m.backbone, norm_layer=norm_layer(m.norm_layer))
    load_backbone_weights(backbone.net, m.weights, m.backbone, results_dir)
    freeze_stages(backbone.net, m.trainable)
    return SmallDETR(
        backbone, num_classes, criterion, d_model=m.d_model, nheads=m.nheads,
        enc_layers=m.enc_layers, dec_layers=m.dec_layers, dim_feedforward=m.dim_feedforward,
        num_queries=m.num_queries, dropout=m.dropout, detections_per_img=m.detections_per_img,
    )  # fmt: skip
