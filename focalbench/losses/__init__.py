"""Classification and box-distribution losses for dense detectors, as pure functions of tensors.

Every function takes `reduction` in {"none", "sum", "mean"}; normalizing by the number of positives
is the caller's job. This package imports only torch.
"""

from focalbench.losses.focal import bce_loss, ce_loss, sigmoid_focal_loss, softmax_focal_loss
from focalbench.losses.gfl import distribution_focal_loss, quality_focal_loss
from focalbench.losses.registry import LOSSES, LossSpec, get_loss, register_loss
from focalbench.losses.varifocal import varifocal_loss

__all__ = [
    "LOSSES",
    "LossSpec",
    "bce_loss",
    "ce_loss",
    "distribution_focal_loss",
    "get_loss",
    "quality_focal_loss",
    "register_loss",
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "varifocal_loss",
]
