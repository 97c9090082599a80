"""The backbone's starting point: `model.weights` loaded into a ResNet body, and `model.norm`'s
BatchNorm layer."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from focalbench.config import weights_kind
from focalbench.errors import InputError

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


def load_backbone_weights(body: nn.Module, weights: str | None, backbone: str) -> None:
    """Load `model.weights` into `body`, a torchvision ResNet (or one cut short: keys of stages it
    dropped are ignored), in place. None: nothing to load (from scratch)."""
    kind = weights_kind(weights)
    if kind == "scratch":
        return
    if kind != "file":  # torchvision's weights by name and `synthetic`: issue 14
        raise InputError(f"model.weights={weights!r}: not yet supported")
    state = _read_state_dict(str(weights))
    try:
        missing, _ = body.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that differ, e.g. a resnet50 file for resnet18
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise InputError(
            f"model.weights={weights!r} does not fit model.backbone={backbone} ({lines[-1][:160]})"
        ) from exc
    if missing:
        raise InputError(
            f"model.weights={weights!r} does not fit model.backbone={backbone} "
            f"(missing e.g. {missing[0]!r})"
        )


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
