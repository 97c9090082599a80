"""Detectors by name. A builder takes (model_cfg, loss_cfg, matcher_cfg, num_classes,
image_size)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def _retinanet(model_cfg, loss_cfg, matcher_cfg, num_classes: int, image_size: int) -> nn.Module:
    from focalbench.models.retinanet import build_retinanet

    return build_retinanet(model_cfg, loss_cfg, num_classes, image_size)


def _detr(model_cfg, loss_cfg, matcher_cfg, num_classes: int, image_size: int) -> nn.Module:
    from focalbench.models.detr import build_detr

    return build_detr(model_cfg, loss_cfg, matcher_cfg, num_classes, image_size)


MODELS: dict[str, Callable[..., nn.Module]] = {"retinanet": _retinanet, "detr": _detr}


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}") from None


def build_model(model_cfg, loss_cfg, matcher_cfg, num_classes: int, image_size: int) -> nn.Module:
    return get_model_builder(model_cfg.name)(
        model_cfg, loss_cfg, matcher_cfg, num_classes, image_size
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
