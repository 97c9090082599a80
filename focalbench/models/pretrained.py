"""Backbone state dicts for a warm start (`model.weights=`, issue 14): torchvision's weights by
name, or the backbone that `focalbench pretrain` trained on the embedded shapes.

Both return a plain ResNet state dict in torchvision's parameter names, without the classifier
(`fc.*`) and BatchNorm's `num_batches_tracked`, checked against the architecture first; the model
builders load it into their ResNet body with `strict=False` (a body cut after layer3 ignores the
layer4 keys). Nothing here trains or downloads on its own beyond what torchvision's weights API
does: `focalbench pretrain` (focalbench/pretrain.py) writes the synthetic cache.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import torch
import torchvision
from torch import Tensor

from focalbench.errors import InputError

BACKBONES = ("resnet18", "resnet50")
# Keys a backbone never needs: the ImageNet (or shape) classifier, and BatchNorm's step counter,
# which FrozenBatchNorm2d lacks and BatchNorm2d only uses with momentum=None.
_IGNORED_SUFFIXES = (".num_batches_tracked",)
_IGNORED_PREFIXES = ("fc.",)
SYNTHETIC_FORMAT = "focalbench-pretrained/1"


def _ignored(key: str) -> bool:
    return key.startswith(_IGNORED_PREFIXES) or key.endswith(_IGNORED_SUFFIXES)


def _first_line(exc: BaseException) -> str:
    """An exception as one short line (unpickling errors run over many lines)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:120]}" if text else type(exc).__name__


def _check_backbone_name(backbone: str) -> None:
    if backbone not in BACKBONES:
        raise InputError(f"model.backbone={backbone!r} is unknown; choose from {list(BACKBONES)}")


def check_backbone_state(state: object, backbone: str, weights: str) -> dict[str, Tensor]:
    """The backbone part of `state`, in the architecture's key order, once it fits `backbone`.

    `weights` is the model.weights value, for the message. A missing or unexpected key, or a shape
    that differs, is a one-line InputError naming the first such key (in the architecture's order).
    """
    _check_backbone_name(backbone)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a checkpoint that wraps its state dict
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"model.weights={weights!r} is not a state dict of tensors")
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        reference = getattr(torchvision.models, backbone)().state_dict()
    wanted = {k: v.shape for k, v in reference.items() if not _ignored(k)}
    for key, shape in wanted.items():
        if key not in state:
            raise InputError(
                f"model.weights={weights!r} does not fit model.backbone={backbone}: "
                f"missing key {key!r}"
            )
        if tuple(state[key].shape) != tuple(shape):
            raise InputError(
                f"model.weights={weights!r} does not fit model.backbone={backbone}: {key!r} has "
                f"shape {tuple(state[key].shape)}, expected {tuple(shape)}"
            )
    unexpected = [k for k in state if k not in wanted and not _ignored(k)]
    if unexpected:
        raise InputError(
            f"model.weights={weights!r} does not fit model.backbone={backbone}: "
            f"unexpected key {unexpected[0]!r}"
        )
    return {k: state[k] for k in wanted}


def torchvision_weights_names(backbone: str) -> list[str]:
    """The names model.weights accepts for torchvision's weights of `backbone` (DEFAULT too)."""
    _check_backbone_name(backbone)
    return list(torchvision.models.get_model_weights(backbone).__members__)


def hub_cache_file(url: str) -> Path:
    """Where torch's hub keeps the download of `url`: $TORCH_HOME/hub/checkpoints/<file name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def torchvision_backbone_state(backbone: str, name: str) -> dict[str, Tensor]:
    """torchvision's pretrained weights `name` (IMAGENET1K_V1, DEFAULT, ...) of resnet18/resnet50.

    Loaded through torchvision's weights API: a file already in torch's hub cache loads with no
    network (and, as torchvision does, no hash check); otherwise it is downloaded there with a
    progress bar. Also accepts the qualified form `ResNet18_Weights.IMAGENET1K_V1`.
    """
    _check_backbone_name(backbone)
    enum = torchvision.models.get_model_weights(backbone)
    short = name.split(".", 1)[1] if name.startswith(f"{enum.__name__}.") else name
    if short not in enum.__members__:
        raise InputError(
            f"model.weights={name!r} is not a torchvision weights name of {backbone}; choose from "
            f"{list(enum.__members__)}, a file path, or 'synthetic'"
        )
    entry = enum[short]
    path = hub_cache_file(entry.url)
    try:
        state = entry.get_state_dict(progress=True)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(
            f"model.weights={name!r}: {path} is not in torch's hub cache and downloading "
            f"{entry.url} failed ({reason}); without network, download that file on another "
            f"machine and copy it to {path} (TORCH_HOME moves the cache)"
        ) from exc
    except Exception as exc:  # a truncated or foreign file under the cache name
        raise InputError(
            f"model.weights={name!r}: the cached file {path} is corrupt ({_first_line(exc)}); "
            f"delete it to download it again"
        ) from exc
    return check_backbone_state(state, backbone, name)


def synthetic_cache_path(
    results_dir: str | Path, backbone: str, seed: int = 0, tag: str = ""
) -> Path:
    """The file `focalbench pretrain` writes and `model.weights=synthetic` reads:
    <results_dir>/pretrained/synthetic-<backbone>-seed<seed>[-<tag>].pt (tag: a non-default
    recipe's hash)."""
    suffix = f"-{tag}" if tag else ""
    return Path(results_dir) / "pretrained" / f"synthetic-{backbone}-seed{seed}{suffix}.pt"


def synthetic_backbone_state(
    backbone: str, results_dir: str | Path, seed: int = 0, tag: str = ""
) -> dict[str, Tensor]:
    """The backbone that `focalbench pretrain` trained on the embedded shapes, from its cache.

    A missing file is an InputError that says how to make it; it is not trained here, so that a
    run never spends minutes on it unannounced (the caller may run models/pretrain.py first).
    """
    _check_backbone_name(backbone)
    path = synthetic_cache_path(results_dir, backbone, seed, tag)
    if not path.is_file():
        raise InputError(
            f"model.weights=synthetic: no pretrained {backbone} at {path}; run `focalbench "
            f"pretrain --backbone {backbone} --seed {seed} --results-dir {results_dir}` first"
        )
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("format") != SYNTHETIC_FORMAT or saved.get("backbone") != backbone:
            raise ValueError(f"format {saved.get('format')!r}, backbone {saved.get('backbone')!r}")
        state = saved["state_dict"]
    except Exception as exc:
        raise InputError(
            f"model.weights=synthetic: the cached backbone {path} is corrupt "
            f"({_first_line(exc)}); delete it and run `focalbench pretrain` again"
        ) from exc
    return check_backbone_state(state, backbone, "synthetic")
