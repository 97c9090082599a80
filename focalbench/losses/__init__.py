"""Classification and box-distribution losses for dense detectors, as pure functions of tensors.

Every function takes `reduction` in {"none", "sum", "mean"}; normalizing by the number of positives
is the caller's job. This package imports only torch, and only when one of the names below is first
used: `focalbench.config` reads the torch-free `focalbench.losses.params` without paying for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names are, for type checkers and editors; loaded lazily at run time
    from focalbench.losses.focal import bce_loss, ce_loss, sigmoid_focal_loss, softmax_focal_loss
    from focalbench.losses.gfl import distribution_focal_loss, quality_focal_loss
    from focalbench.losses.ghm import ghmc_init_state, ghmc_loss
    from focalbench.losses.poly import poly1_focal_loss
    from focalbench.losses.registry import LOSSES, LossSpec, get_loss, register_loss
    from focalbench.losses.varifocal import varifocal_loss

# public name -> the module that defines it
_WHERE = {
    "LOSSES": "registry",
    "LossSpec": "registry",
    "get_loss": "registry",
    "register_loss": "registry",
    "bce_loss": "focal",
    "ce_loss": "focal",
    "sigmoid_focal_loss": "focal",
    "softmax_focal_loss": "focal",
    "distribution_focal_loss": "gfl",
    "quality_focal_loss": "gfl",
    "varifocal_loss": "varifocal",
    "poly1_focal_loss": "poly",
    "ghmc_loss": "ghm",
    "ghmc_init_state": "ghm",
}
__all__ = [
    "LOSSES",
    "LossSpec",
    "bce_loss",
    "ce_loss",
    "distribution_focal_loss",
    "get_loss",
    "ghmc_init_state",
    "ghmc_loss",
    "poly1_focal_loss",
    "quality_focal_loss",
    "register_loss",
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "varifocal_loss",
]


def __getattr__(name: str) -> Any:
    """`from focalbench.losses import X` imports X's module on first use (PEP 562)."""
    if name not in _WHERE:
        raise AttributeError(f"module 'focalbench.losses' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"focalbench.losses.{_WHERE[name]}"), name)
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
