"""The backbone's starting point: `model.weights` loaded into a ResNet body, and `model.norm`'s
BatchNorm layer."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from focalbench.config import weights_kind
from focalbench.errors import InputError
from focalbench.models.pretrained import (
    check_backbone_state,
    synthetic_backbone_state,
    torchvision_backbone_state,
)

# model.norm (resolved, ModelCfg.norm_layer) -> the ResNet's norm layer. torchvision's detection
# backbones use FrozenBatchNorm2d with ImageNet weights: batch statistics of a detection batch
# (a few images) are too noisy to train; from scratch there are no statistics to keep.
NORM_LAYERS: dict[str, type[nn.Module]] = {"bn": nn.BatchNorm2d, "frozen_bn": FrozenBatchNorm2d}


def norm_layer(name: str) -> type[nn.Module]:
    try:
        return NORM_LAYERS[name]
    except KeyError:
        raise ValueError(
            f"unknown model.norm {name!r}; choose from {sorted(NORM_LAYERS)}"
        ) from None


def load_backbone_weights(
    body: nn.Module, weights: str | None, backbone: str, results_dir: str | Path = "results"
) -> None:
    """Load `model.weights` into `body`, a torchvision ResNet (or one cut short: keys of stages it
    dropped are ignored), in place. None: nothing to load (from scratch). A torchvision weights
    name goes through torchvision's weights API (the hub cache, else a download); `synthetic` is
    the backbone `focalbench pretrain` cached under results_dir; anything else is a local file.
    Every state is checked against the architecture first (models/pretrained.py)."""
    kind = weights_kind(weights)
    if kind == "scratch":
        return
    assert weights is not None
    if kind == "file":
        state = _read_state_dict(weights)
    elif kind == "synthetic":
        state = synthetic_backbone_state(backbone, results_dir)
    else:
        state = torchvision_backbone_state(backbone, weights)
    state = check_backbone_state(state, backbone, weights)
    try:
        body.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that differ (check_backbone_state names them first)
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise InputError(
            f"model.weights={weights!r} does not fit model.backbone={backbone} ({lines[-1][:160]})"
        ) from exc


# ResNet stages from the top, as torchvision's trainable_backbone_layers counts them
STAGES = ("layer4", "layer3", "layer2", "layer1", "conv1")


def freeze_stages(body: nn.Module, trainable: int) -> None:
    """model.trainable_layers: the top `trainable` stages of a torchvision ResNet train, the rest
    (and the stem's BatchNorm with conv1) are frozen; stages a cut-short body dropped count too."""
    keep = STAGES[:trainable]
    for name, param in body.named_parameters():
        stage = "conv1" if name.startswith(("conv1.", "bn1.")) else name.partition(".")[0]
        if stage in STAGES and stage not in keep:
            param.requires_grad_(False)


def _read_state_dict(path: str) -> dict:
    """A torchvision ResNet state dict from a local file (nothing is downloaded); a checkpoint that
    wraps it under "state_dict" is unwrapped."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise InputError(f"model.weights={path!r}: no such file") from exc
    except Exception as exc:  # a truncated or foreign file; unpickling errors run over many lines
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"model.weights={path!r} is not a loadable state dict: {first}") from exc
    return state.get("state_dict", state) if isinstance(state, dict) else state
