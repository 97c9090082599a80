"""The loss registry: name -> LossSpec (function, kind, target layout, defaults, paper).

A loss's kind, target layout and parameters are its row of `params.LOSS_TABLE` (torch-free, so that
the config reads the same table); this module adds the function, the paper and a summary.

Configs and the CLI choose a loss by name (`loss=qfl`); `get_loss` resolves it and lists the valid
names when it cannot.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import Tensor

from focalbench.losses.focal import bce_loss, ce_loss, sigmoid_focal_loss, softmax_focal_loss
from focalbench.losses.gfl import distribution_focal_loss, quality_focal_loss
from focalbench.losses.ghm import ghmc_loss
from focalbench.losses.params import KINDS, LOSS_TABLE, TARGETS
from focalbench.losses.poly import poly1_focal_loss
from focalbench.losses.varifocal import varifocal_loss

FOCAL_PAPER = "Focal Loss for Dense Object Detection (Lin et al., 2017), arXiv:1708.02002"
GFL_PAPER = (
    "Generalized Focal Loss: Learning Qualified and Distributed Bounding Boxes for Dense Object "
    "Detection (Li et al., 2020), arXiv:2006.04388"
)
VFL_PAPER = (
    "VarifocalNet: An IoU-aware Dense Object Detector (Zhang et al., 2021), arXiv:2008.13367"
)
POLY_PAPER = (
    "PolyLoss: A Polynomial Expansion Perspective of Classification Loss Functions "
    "(Leng et al., 2022), arXiv:2204.12511"
)
GHM_PAPER = "Gradient Harmonized Single-stage Detector (Li et al., 2019), arXiv:1811.05181"
BASELINE = "baseline (no paper)"


@dataclass(frozen=True)
class LossSpec:
    """One registered loss.

    kind: how the head's scores are read: "sigmoid" (one independent score per class, no
        background class), "softmax" (the head also predicts a background class), "box" (a
        box-side distribution, not a classification loss).
    target: what the loss is given: "binary" ([N, C] one-hot / soft in [0, 1]), "iou" ([N, C] IoU
        at the gt class), "label" ([N] class indices), "distance" ([N] float in [0, B-1]).
    params: the tunable hyperparameters (what config `loss.*` may set) -> default; read-only.
    """

    name: str
    fn: Callable[..., Tensor]
    kind: str
    target: str
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    paper: str = BASELINE
    summary: str = ""

    def __post_init__(self) -> None:
        if self.name != self.name.lower() or not self.name:
            raise ValueError(f"loss name must be non-empty lowercase, got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {list(TARGETS)}, got {self.target!r}")
        signature = inspect.signature(self.fn).parameters
        unknown = sorted(set(self.params) - set(signature))
        if unknown:
            raise ValueError(f"loss {self.name!r}: params {unknown} are not arguments of its fn")
        # frozen dataclass: bypass __setattr__ once to store a read-only copy of params
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


LOSSES: dict[str, LossSpec] = {}


def register_loss(spec: LossSpec) -> LossSpec:
    """Add `spec` to LOSSES; a name that is already taken raises ValueError."""
    if spec.name in LOSSES:
        raise ValueError(f"loss {spec.name!r} is already registered")
    LOSSES[spec.name] = spec
    return spec


def get_loss(name: str) -> LossSpec:
    """The LossSpec registered under `name` (case-insensitive)."""
    spec = LOSSES.get(name.lower())
    if spec is None:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}")
    return spec


# name -> (function, paper, summary); kind, target and params come from params.LOSS_TABLE
_ENTRIES: dict[str, tuple[Callable[..., Tensor], str, str]] = {
    "focal": (
        sigmoid_focal_loss,
        FOCAL_PAPER,
        "sigmoid focal loss, torchvision semantics (alpha < 0 or None: no alpha-balancing)",
    ),
    "softmax_focal": (
        softmax_focal_loss,
        FOCAL_PAPER,
        "multi-class focal loss on a softmax with a background class; per-class alpha allowed",
    ),
    "bce": (bce_loss, BASELINE, "binary cross-entropy on logits (focal with gamma=0, alpha off)"),
    "ce": (ce_loss, BASELINE, "softmax cross-entropy (softmax focal with gamma=0)"),
    "qfl": (
        quality_focal_loss,
        GFL_PAPER,
        "quality focal loss: |IoU - p|^beta * BCE(x, IoU) with the IoU as a soft target",
    ),
    "vfl": (
        varifocal_loss,
        VFL_PAPER,
        "varifocal loss: IoU-weighted BCE for positives, alpha * p^gamma * BCE for negatives",
    ),
    "dfl": (
        distribution_focal_loss,
        GFL_PAPER,
        "distribution focal loss on B bins of a box side, target in [0, B-1] inclusive",
    ),
    "poly1": (
        poly1_focal_loss,
        POLY_PAPER,
        "Poly-1 focal loss: sigmoid focal + epsilon (1 - p_t)^(gamma + 1), poly term not "
        "alpha-weighted",
    ),
    "ghmc": (
        ghmc_loss,
        GHM_PAPER,
        "GHM-C: BCE weighted by the inverse density of |sigmoid(x) - t| over bins, mmdet's GHMC "
        "(momentum > 0 needs acc_sum state from ghmc_init_state)",
    ),
}
if set(_ENTRIES) != set(LOSS_TABLE):  # a loss added to one table only: fail at import, not later
    raise ImportError(f"losses: {sorted(set(_ENTRIES) ^ set(LOSS_TABLE))} are in one table only")
for _name, (_fn, _paper, _summary) in _ENTRIES.items():
    register_loss(LossSpec(_name, _fn, *LOSS_TABLE[_name], paper=_paper, summary=_summary))
