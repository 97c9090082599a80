"""Detectors by name. A builder takes (model_cfg, loss_cfg, matcher_cfg, num_classes,
image_size) and returns a `Detector`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from torch import Tensor, nn


class Audit(Protocol):
    """A measurement a detector takes of itself after each epoch, on a fixed probe batch of
    validation images (images [3, S, S], targets "boxes" xyxy pixels and "labels", as the detector
    takes them). Its keys become train_log.csv columns, the same every epoch."""

    def __call__(
        self, model: nn.Module, images: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> dict[str, float]: ...


class Detector(Protocol):
    """What the engine relies on, besides torchvision's detector call convention
    (model(images, targets) -> losses in train mode, model(images) -> detections in eval mode).

    compiled_parts: the submodules `train.compile` compiles (compile_model).
    audit: None, or the Audit the engine runs after each epoch (DETR's matching audit).
    """

    compiled_parts: tuple[str, ...]
    audit: Audit | None


def _retinanet(model_cfg, loss_cfg, matcher_cfg, num_classes: int, image_size: int,
               results_dir="results") -> nn.Module:  # fmt: skip
    from focalbench.models.retinanet import build_retinanet

    return build_retinanet(model_cfg, loss_cfg, num_classes, image_size, results_dir)


def _detr(model_cfg, loss_cfg, matcher_cfg, num_classes: int, image_size: int,
          results_dir="results") -> nn.Module:  # fmt: skip
    from focalbench.models.detr import build_detr

    return build_detr(model_cfg, loss_cfg, matcher_cfg, num_classes, image_size, results_dir)


MODELS: dict[str, Callable[..., nn.Module]] = {"retinanet": _retinanet, "detr": _detr}


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}") from None


def build_model(model_cfg, loss_cfg, matcher_cfg, num_classes: int, image_size: int,
                results_dir="results") -> nn.Module:  # fmt: skip
    """The Detector that model_cfg (a RetinaNetCfg or DetrCfg) names; results_dir is where a
    `model.weights=synthetic` backbone is cached (results/pretrained/)."""
    return get_model_builder(model_cfg.name)(
        model_cfg, loss_cfg, matcher_cfg, num_classes, image_size, results_dir
    )


def compile_model(model: nn.Module, backend: str = "inductor") -> nn.Module:
    """torch.compile, in place, the submodules a detector names in `compiled_parts`; returns model.

    Compiling parts rather than the whole detector keeps the data-dependent Python (anchor
    matching, the Hungarian matcher, losses, post-processing) out of the graphs, which would
    otherwise break and recompile with every batch's number of boxes. Module.compile keeps the
    state-dict keys, so checkpoints move freely between compiled and eager runs.
    """
    for name in model.compiled_parts:
        model.get_submodule(name).compile(backend=backend)
    return model
