"""The model sections: ModelCfg (what every detector has), RetinaNetCfg and DetrCfg, and MODEL_CFGS
(model.name -> its dataclass). `weights_kind`: what model.weights names, as the run id records it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from focalbench.config.groups import check_choice, check_range
from focalbench.errors import InputError

NORMS = ("auto", "bn", "frozen_bn", "adabn")
# model.anchor_sizes words, resolved from the training boxes before the run id is computed
ANCHOR_WORDS = ("auto",)
# a torchvision weights name as torchvision spells it (IMAGENET1K_V1, DEFAULT); anything else but
# `synthetic` is a file path
_TORCHVISION_WEIGHTS = re.compile(r"[A-Z][A-Z0-9_]*")


def weights_kind(weights: str | None) -> str:
    """What model.weights names, as the run id records it: "scratch" (None), "synthetic",
    "torchvision:<NAME>", or "file" (a path: where a file lies is not science, so the path is left
    out of the run id like every other path)."""
    if weights is None:
        return "scratch"
    if weights == "synthetic":
        return "synthetic"
    if _TORCHVISION_WEIGHTS.fullmatch(weights):
        return f"torchvision:{weights}"
    return "file"


@dataclass(frozen=True)
class ModelCfg:
    """What every detector has; RetinaNetCfg and DetrCfg add their own fields (MODEL_CFGS)."""

    name: str
    backbone: str = "resnet18"
    # None: from scratch; a torchvision weights name (IMAGENET1K_V1, DEFAULT); a local file of a
    # torchvision ResNet state dict; or `synthetic` (see weights_kind, models/weights.py)
    weights: str | None = None
    # BatchNorm of the backbone: bn (trained, right from scratch) | frozen_bn (torchvision's
    # FrozenBatchNorm2d: the loaded statistics stay, right for pretrained weights at small batches)
    # | adabn (frozen, with the statistics of the run's training images: weights from another
    # domain, engine/run.py) | auto: bn from scratch, frozen_bn with any weights
    norm: str = "auto"
    # ResNet stages that train, counted from the top (layer4, layer3, layer2, layer1, the stem), as
    # torchvision's trainable_backbone_layers: 5 = all, 0 = the whole backbone frozen. None (auto):
    # 5 from scratch, 3 with weights (torchvision's default for pretrained detection backbones)
    trainable_layers: int | None = None
    detections_per_img: int = 100

    def __post_init__(self) -> None:
        own = [name for name, cls in MODEL_CFGS.items() if cls is type(self)]
        check_choice("model.name", self.name, own or sorted(MODEL_CFGS))
        check_choice("model.backbone", self.backbone, ("resnet18", "resnet50"))
        if self.weights is not None and not (isinstance(self.weights, str) and self.weights):
            raise InputError(
                f"model.weights={self.weights!r} must be null, a torchvision weights name such as "
                "IMAGENET1K_V1, a file path, or synthetic"
            )
        check_choice("model.norm", self.norm, NORMS)
        if self.trainable_layers is not None:
            check_range("model.trainable_layers", self.trainable_layers, 0, 5)
        check_range("model.detections_per_img", self.detections_per_img, 1)

    @property
    def weights_kind(self) -> str:
        return weights_kind(self.weights)

    @property
    def norm_layer(self) -> str:
        """model.norm with auto resolved: bn | frozen_bn | adabn."""
        if self.norm != "auto":
            return self.norm
        return "bn" if self.weights is None else "frozen_bn"

    @property
    def trainable(self) -> int:
        """model.trainable_layers with auto resolved: 5 from scratch, 3 with weights."""
        if self.trainable_layers is not None:
            return self.trainable_layers
        return 5 if self.weights is None else 3

    def science(self) -> dict[str, Any]:
        """The fields that decide the numbers. weights (its kind), norm and trainable_layers enter
        only where they differ from what the first schema, which had none of them, always did
        (from scratch, BatchNorm, everything trained), so that those run ids keep their shape."""
        science = dataclasses.asdict(self)
        del science["weights"], science["norm"], science["trainable_layers"]
        if self.weights_kind != "scratch":
            science["weights"] = self.weights_kind
        if self.norm_layer != "bn":
            science["norm"] = self.norm_layer
        if self.trainable != 5:
            science["trainable_layers"] = self.trainable
        return science


@dataclass(frozen=True)
class RetinaNetCfg(ModelCfg):
    name: str = "retinanet"
    box_head: str = "l1"
    reg_max: int = 8
    fpn_channels: int = 256  # FPN and head width (torchvision: 256); 128 trains ~3x faster on a CPU
    head_convs: int = 4  # convs per head branch before the predictor (torchvision: 4)
    # one size per level P3..P7, or `auto`: fitted to the training boxes at the run's image size
    # (engine/resolve.py) before the run id is computed, so the run id records the sizes
    anchor_sizes: tuple[int, ...] | str = (16, 32, 64, 128, 256)
    score_thresh: float = 0.01
    # the word the sizes were resolved from (auto), None for sizes the user gave. Not in the run
    # id: the resolved sizes are
    anchor_sizes_from: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("model.box_head", self.box_head, ("l1", "dfl"))
        check_range("model.reg_max", self.reg_max, 1)
        if self.fpn_channels < 32 or self.fpn_channels % 32:
            raise InputError(
                f"model.fpn_channels={self.fpn_channels} must be a positive multiple of 32 "
                "(the heads' GroupNorm has 32 groups)"
            )
        check_range("model.head_convs", self.head_convs, 0, 4)
        check_range("model.score_thresh", self.score_thresh, 0.0, 1.0)
        if isinstance(self.anchor_sizes, str):
            if self.anchor_sizes not in ANCHOR_WORDS:
                raise InputError(
                    f"model.anchor_sizes={self.anchor_sizes!r} is not valid; give 5 positive "
                    f"sizes (P3..P7) or one of {list(ANCHOR_WORDS)}"
                )
        elif len(self.anchor_sizes) != 5 or min(self.anchor_sizes) < 1:
            raise InputError(
                f"model.anchor_sizes={list(self.anchor_sizes)} must be 5 positive sizes (P3..P7)"
            )
        if self.anchor_sizes_from is not None and (
            self.anchor_sizes_from not in ANCHOR_WORDS or isinstance(self.anchor_sizes, str)
        ):
            raise InputError(
                f"model.anchor_sizes_from={self.anchor_sizes_from!r} records how the sizes were "
                f"resolved: one of {list(ANCHOR_WORDS)}, with anchor_sizes a list"
            )

    def science(self) -> dict[str, Any]:
        science = super().science()
        del science["anchor_sizes_from"]  # the sizes are in the run id, not the word
        return science


@dataclass(frozen=True)
class DetrCfg(ModelCfg):
    name: str = "detr"
    d_model: int = 128
    nheads: int = 8
    enc_layers: int = 2
    dec_layers: int = 2
    dim_feedforward: int = 512
    num_queries: int = 50
    dropout: float = 0.0
    aux_loss: bool = True
    noobj_weight: float = 0.1  # DETR's weight of the no-object class in CE
    weight_class: float = 2.0
    weight_bbox: float = 5.0
    weight_giou: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("d_model", "nheads", "enc_layers", "dec_layers", "dim_feedforward",
                     "num_queries"):  # fmt: skip
            check_range(f"model.{name}", getattr(self, name), 1)
        if self.d_model % self.nheads:
            raise InputError(
                f"model.d_model={self.d_model} must be divisible by model.nheads={self.nheads}"
            )
        check_range("model.dropout", self.dropout, 0.0, 1.0)
        check_range("model.noobj_weight", self.noobj_weight, 0.0)
        for name in ("weight_class", "weight_bbox", "weight_giou"):
            check_range(f"model.{name}", getattr(self, name), 0.0)


# model.name -> its dataclass; conf/model/<name>.yaml gives its fields
MODEL_CFGS: dict[str, type[ModelCfg]] = {"retinanet": RetinaNetCfg, "detr": DetrCfg}
