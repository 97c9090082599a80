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
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss

from focalbench.losses import get_loss
from focalbench.matching import (
    HungarianMatcher,
    MatchInstability,
    agreement_and_regret,
    box_cxcywh_to_xyxy,
    box_iou_giou,
    box_xyxy_to_cxcywh,
    class_cost,
    sigmoid_pair_cost,
    softmax_pair_cost,
)
from focalbench.models.detr_layers import (
    DecoderLayer,
    EncoderLayer,
    ResNetBody,
    SinePositionEncoding,
)
from focalbench.models.retinanet import ClsLoss, elementwise_iou, load_backbone_weights

PRIOR_PROB = 0.01  # initial foreground probability (Lin et al. 2017), as in Deformable DETR
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SmallDETR(nn.Module):
    """DETR with a named classification loss and a named Hungarian class cost.

    Call it like a torchvision detector: model(images, targets) -> dict of losses in train mode,
    model(images) -> [{"boxes" xyxy pixels, "scores", "labels"}] per image in eval mode. Images are
    [3, S, S] in 0..1, all of one size; targets carry "boxes" xyxy pixels and "labels" 0..C-1.
    """

    def __init__(
        self, backbone: ResNetBody, num_classes: int, cls_loss: ClsLoss, matcher: HungarianMatcher,
        d_model: int = 128, nheads: int = 8, enc_layers: int = 2, dec_layers: int = 2,
        dim_feedforward: int = 512, num_queries: int = 50, dropout: float = 0.0,
        aux_loss: bool = True, noobj_weight: float = 0.1, weight_class: float = 2.0,
        weight_bbox: float = 5.0, weight_giou: float = 2.0, detections_per_img: int = 100,
    ) -> None:  # fmt: skip
        super().__init__()
        self.num_classes, self.cls_loss, self.matcher = num_classes, cls_loss, matcher
        self.softmax = cls_loss.softmax
        self.aux_loss, self.noobj_weight = aux_loss, noobj_weight
        self.weights = (weight_class, weight_bbox, weight_giou)
        self.detections_per_img = detections_per_img
        self.backbone = backbone
        self.input_proj = nn.Conv2d(backbone.out_channels, d_model, 1)
        self.pos = SinePositionEncoding(d_model)
        layer_args = (d_model, nheads, dim_feedforward, dropout)
        self.encoder = nn.ModuleList(EncoderLayer(*layer_args) for _ in range(enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(*layer_args) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(d_model)  # shared by every layer's output (DETR)
        self.class_embed = nn.Linear(d_model, num_classes + 1 if self.softmax else num_classes)
        self.bbox_embed = nn.Sequential(
            nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, d_model), nn.ReLU(),
            nn.Linear(d_model, 4),
        )  # fmt: skip
        self._init_class_bias()
        # learnable anchor points, one per query (DAB-DETR): initial boxes sit on them
        anchors = torch.rand(num_queries, 2) * 0.9 + 0.05
        self.anchor_logit = nn.Parameter(torch.logit(anchors))  # [Q, 2] (x, y) before sigmoid
        nn.init.zeros_(self.bbox_embed[-1].weight)
        nn.init.zeros_(self.bbox_embed[-1].bias)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._instability = MatchInstability()  # the audit's memory of the previous probe matching

    @property
    def compiled_parts(self) -> tuple[str, ...]:
        """What `train.compile` compiles: the backbone and each transformer layer. Matching (scipy),
        the losses and post-processing stay eager."""
        layers = [f"encoder.{i}" for i in range(len(self.encoder))]
        layers += [f"decoder.{i}" for i in range(len(self.decoder))]
        return ("backbone", *layers)

    def _init_class_bias(self) -> None:
        bias = self.class_embed.bias.data
        if self.softmax:  # p(each class) = PRIOR_PROB: classes 0, no-object log(1/pi - C)
            bias.zero_()
            bias[-1] = math.log(1 / PRIOR_PROB - self.num_classes)
        else:  # without it the sigmoid losses start by drowning in easy negatives
            bias.fill_(-math.log((1 - PRIOR_PROB) / PRIOR_PROB))

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
            return self.compute_loss(logits, boxes, self.normalized_targets(targets, S))
        return self.postprocess(logits[-1], boxes[-1], S)

    @staticmethod
    def normalized_targets(targets: list[dict[str, Tensor]], size) -> list[dict[str, Tensor]]:
        """xyxy pixels -> normalized cxcywh, the space of the predictions and the matcher."""
        H, W = size
        scale = torch.tensor([W, H, W, H], dtype=torch.float32)
        return [
            {
                "labels": t["labels"],
                "boxes": box_xyxy_to_cxcywh(t["boxes"].float() / scale.to(t["boxes"].device)),
            }
            for t in targets
        ]

    # ---- loss ------------------------------------------------------------------------------
    def compute_loss(self, logits: Tensor, boxes: Tensor, targets: list[dict[str, Tensor]]) -> dict:
        """Set loss of every decoder layer (the last only when aux_loss is off), summed.

        logits [L, B, Q, K], boxes [L, B, Q, 4]; targets normalized cxcywh. Each layer gets its own
        matching, as in DETR. Returns weighted {"classification", "bbox_l1", "bbox_giou"}.
        """
        num_boxes = max(sum(len(t["labels"]) for t in targets), 1)
        layers = range(logits.shape[0]) if self.aux_loss else [logits.shape[0] - 1]
        wc, wb, wg = self.weights
        totals = {"classification": 0.0, "bbox_l1": 0.0, "bbox_giou": 0.0}
        for layer in layers:
            lg, bx = logits[layer], boxes[layer]
            indices = self.matcher(lg.detach(), bx.detach(), targets)
            cls, l1, giou = self._layer_loss(lg, bx, targets, indices, num_boxes)
            totals["classification"] = totals["classification"] + wc * cls
            totals["bbox_l1"] = totals["bbox_l1"] + wb * l1
            totals["bbox_giou"] = totals["bbox_giou"] + wg * giou
        return totals

    def _layer_loss(self, logits, boxes, targets, indices, num_boxes: int):
        """logits [B, Q, K], boxes [B, Q, 4] -> (classification, L1, GIoU) losses of one layer."""
        B, Q, K = logits.shape
        device = logits.device
        batch_idx = torch.cat([torch.full_like(i, b) for b, (i, _) in enumerate(indices)])  # [M]
        batch_idx, query_idx = batch_idx.to(device), torch.cat([i for i, _ in indices]).to(device)
        labels = torch.cat([t["labels"][j.to(device)] for t, (_, j) in zip(targets, indices)])
        gt = torch.cat([t["boxes"][j.to(device)] for t, (_, j) in zip(targets, indices)])  # [M, 4]
        pred = boxes[batch_idx, query_idx].float()  # [M, 4] cxcywh
        l1 = F.l1_loss(pred, gt, reduction="sum") / num_boxes
        pred_xyxy, gt_xyxy = box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(gt)
        giou = generalized_box_iou_loss(pred_xyxy, gt_xyxy, reduction="sum") / num_boxes

        spec, kwargs = self.cls_loss.spec, self.cls_loss.kwargs()
        if self.softmax:
            target = torch.full((B, Q), K - 1, dtype=torch.long, device=device)  # no-object
            target[batch_idx, query_idx] = labels
            loss = spec.fn(logits.flatten(0, 1), target.flatten(), reduction="none", **kwargs)
            weight = torch.where(target.flatten() == K - 1, self.noobj_weight, 1.0).to(loss.dtype)
            return (loss * weight).sum() / weight.sum(), l1, giou  # DETR: CE's weighted mean
        target = torch.zeros(B, Q, K, dtype=torch.float32, device=device)
        if spec.target == "iou":  # QFL/VFL: the quality of the matched box is the soft target
            value = elementwise_iou(pred_xyxy.detach(), gt_xyxy).clamp(min=1e-6)
        else:
            value = torch.ones_like(pred[:, 0])
        target[batch_idx, query_idx, labels] = value
        loss = spec.fn(logits, target, reduction="none", **kwargs)  # [B, Q, K]
        if self.cls_loss.normalization == "num_pos_per_image":
            per_image = torch.tensor([len(t["labels"]) for t in targets], device=device)
            return (loss.sum((1, 2)) / per_image.clamp(min=1)).mean(), l1, giou
        return loss.sum() / num_boxes, l1, giou

    # ---- inference -------------------------------------------------------------------------
    def postprocess(self, logits: Tensor, boxes: Tensor, size) -> list[dict[str, Tensor]]:
        """Top-k over queries x classes (Deformable DETR) for sigmoid and softmax models alike.

        logits [B, Q, K], boxes [B, Q, 4] -> per image "boxes" [k, 4] xyxy pixels, "scores" [k],
        "labels" [k], k = min(detections_per_img, Q * C). Softmax models score the C foreground
        probabilities (no-object dropped) so that both kinds are evaluated on the same rule.
        """
        H, W = size
        C = self.num_classes
        prob = logits.float().softmax(-1)[..., :C] if self.softmax else logits.float().sigmoid()
        scores, flat = prob.flatten(1).topk(min(self.detections_per_img, prob[0].numel()), dim=1)
        query, labels = flat // C, flat % C  # [B, k]
        scale = torch.tensor([W, H, W, H], dtype=torch.float32, device=boxes.device)
        xyxy = box_cxcywh_to_xyxy(boxes.float()) * scale  # [B, Q, 4]
        xyxy = torch.gather(xyxy, 1, query[..., None].expand(-1, -1, 4))  # [B, k, 4]
        xyxy = torch.minimum(xyxy.clamp(min=0), scale)  # inside the image
        return [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(xyxy, scores, labels)]

    # ---- matching audit --------------------------------------------------------------------
    @torch.no_grad()
    def matching_audit(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict:
        """Agreement, regret and instability of the matching on a fixed probe batch (issue 6;
        definitions in focalbench.matching.audit). Eval mode, so BatchNorm statistics are
        neither used from the batch nor updated. match_stability is DN-DETR's instability
        (fraction of ground truths whose query changed since the previous call; NaN at first)."""
        was_training = self.training
        self.eval()
        try:
            logits, boxes = self.head_outputs(images)
            logits, boxes = logits[-1].float(), boxes[-1].float()  # the final layer's
        finally:
            self.train(was_training)
        gts = self.normalized_targets(targets, images[0].shape[-2:])
        indices = self.matcher(logits, boxes, gts)
        instability = self._instability.update(indices, [len(t["labels"]) for t in gts])
        m = self.matcher
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
        spec, kwargs = self.cls_loss.spec, self.cls_loss.kwargs()

        def loss(x: Tensor, y: Tensor) -> Tensor:
            return spec.fn(x, y, reduction="none", **kwargs)

        if self.softmax:
            return softmax_pair_cost(loss, logits, target["labels"], self.noobj_weight)
        positive: Tensor | float = 1.0
        if spec.target == "iou":  # the soft target the pair would get: its IoU
            iou, _ = box_iou_giou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target["boxes"]))
            positive = iou.clamp(min=1e-6)
        return sigmoid_pair_cost(loss, logits, target["labels"], positive)


def cost_alpha_gamma(loss_cfg, matcher_cfg) -> tuple[float | None, float]:
    """The focal costs' alpha and gamma: matcher.alpha/gamma when set, else the loss's.

    gamma: the loss's focusing exponent (gamma; QFL's beta; 0 for bce/ce, which have none).
    alpha: the loss's alpha for sigmoid losses with binary targets (focal; bce -> None, no
    balancing), so that the focal cost is exactly the loss-optimal one; 0.25 otherwise: VFL's alpha
    weighs its negatives (the opposite role) and softmax losses have per-class alphas.
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


def build_detr(model_cfg, loss_cfg, matcher_cfg, num_classes: int, image_size: int) -> SmallDETR:
    """SmallDETR from the config dataclasses (ModelCfg, LossCfg, MatcherCfg)."""
    cls_loss = ClsLoss(
        loss_cfg.name, loss_cfg.alpha, loss_cfg.gamma, loss_cfg.beta, loss_cfg.normalization
    )
    if cls_loss.spec.kind == "box":
        raise ValueError(f"loss {loss_cfg.name!r} is a box loss, not a classification loss")
    alpha, gamma = cost_alpha_gamma(loss_cfg, matcher_cfg)
    mc = matcher_cfg
    matcher = HungarianMatcher(
        mc.name, mc.weight_class, mc.weight_bbox, mc.weight_giou,
        alpha=alpha, gamma=gamma, softmax=cls_loss.softmax,
    )  # fmt: skip
    backbone = ResNetBody(model_cfg.backbone)
    if model_cfg.weights_path:
        load_backbone_weights(backbone.net, model_cfg.weights_path)
    m = model_cfg
    return SmallDETR(
        backbone, num_classes, cls_loss, matcher, d_model=m.d_model, nheads=m.nheads,
        enc_layers=m.enc_layers, dec_layers=m.dec_layers, dim_feedforward=m.dim_feedforward,
        num_queries=m.num_queries, dropout=m.dropout, aux_loss=m.aux_loss,
        noobj_weight=m.noobj_weight, weight_class=m.weight_class, weight_bbox=m.weight_bbox,
        weight_giou=m.weight_giou, detections_per_img=m.detections_per_img,
    )  # fmt: skip
