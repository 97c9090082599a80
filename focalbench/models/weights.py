"""The backbone's starting point: `model.weights` loaded into a ResNet body, and `model.norm`'s
BatchNorm layer."""

from __future__ import annotations

from collections.abc import Iterable
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
# adabn: frozen too, but with the statistics of the run's own training images
# (adapt_norm_statistics) in place of those the weights came with: weights from another domain.
NORM_LAYERS: dict[str, type[nn.Module]] = {
    "bn": nn.BatchNorm2d,
    "frozen_bn": FrozenBatchNorm2d,
    "adabn": FrozenBatchNorm2d,
}


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


@torch.no_grad()
def adapt_norm_statistics(model: nn.Module, batches: Iterable[tuple[list, list]]) -> int:
    """AdaBN (Li et al. 2016, "Revisiting Batch Normalization for Practical Domain Adaptation"):
    every FrozenBatchNorm2d of `model` gets the mean and variance of its input over `batches`
    ((images, targets) as the detector takes them in training), in place of the statistics the
    weights came with; its affine weight and bias stay. During the pass each layer normalizes with
    its batch's own statistics, as BatchNorm in training mode does, so that the layers after it see
    inputs like those they will see. The variance is unbiased (BatchNorm's running_var). Forward
    only, no gradients, torch's random state untouched. Returns the number of layers adapted."""
    layers = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    if not layers:
        return 0
    sums = {m: [0, 0.0, 0.0] for m in layers}  # pixels, sum x, sum x^2 (float64, per channel)

    def batch_norm(m: FrozenBatchNorm2d, x: torch.Tensor) -> torch.Tensor:
        x64 = x.double()
        acc = sums[m]
        acc[0] += x.numel() // x.shape[1]
        acc[1] = acc[1] + x64.sum((0, 2, 3))
        acc[2] = acc[2] + (x64 * x64).sum((0, 2, 3))
        var, mean = torch.var_mean(x, (0, 2, 3), correction=0)
        scale = m.weight * (var + m.eps).rsqrt()
        return x * scale[None, :, None, None] + (m.bias - mean * scale)[None, :, None, None]

    was_training = model.training
    model.train()
    try:
        for m in layers:
            m.forward = lambda x, m=m: batch_norm(m, x)
        device = next(model.parameters()).device
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            for images, targets in batches:
                model(images, targets)
    finally:
        for m in layers:
            del m.forward
        model.train(was_training)
    for m, (n, s1, s2) in sums.items():
        mean = s1 / n
        var = (s2 - n * mean * mean) / max(n - 1, 1)
        m.running_mean.copy_(mean)
        m.running_var.copy_(var.clamp_min(0))
    return len(layers)
