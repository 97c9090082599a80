"""Identity: the run id (a hash of the science config), the config id (the same without the seed),
and the ids the first schema gave the same configs, so that rows and run folders written then still
count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from focalbench.config.models import ModelCfg

# The first schema had one flat ModelCfg with the fields of both models (and weights_path, which the
# run id left out), so its run ids hashed the other model's fields at these defaults.
# RunConfig.run_ids recomputes those ids, so that rows and run folders written then still count
# (tests/test_config.py pins ids computed by that code). Frozen here: never edit these values.
_LEGACY_MODEL_DEFAULTS: dict[str, Any] = {
    "name": "retinanet", "backbone": "resnet18", "box_head": "l1", "reg_max": 8,
    "fpn_channels": 256, "head_convs": 4, "anchor_sizes": (16, 32, 64, 128, 256),
    "score_thresh": 0.01, "detections_per_img": 100, "d_model": 128, "nheads": 8, "enc_layers": 2,
    "dec_layers": 2, "dim_feedforward": 512, "num_queries": 50, "dropout": 0.0, "aux_loss": True,
    "noobj_weight": 0.1, "weight_class": 2.0, "weight_bbox": 5.0, "weight_giou": 2.0,
}  # fmt: skip


def legacy_model_science(model: ModelCfg) -> dict[str, Any] | None:
    """The model part of the first schema's science dict, or None where that schema could not
    express this config (it knew only from-scratch or local-file weights, always with BatchNorm)."""
    if model.weights_kind not in ("scratch", "file") or model.norm_layer != "bn":
        return None
    if model.trainable != 5:  # it trained every stage
        return None
    science = dict(_LEGACY_MODEL_DEFAULTS)
    for f in dataclasses.fields(model):
        if f.name not in ("weights", "norm", "trainable_layers", "anchor_sizes_from"):
            science[f.name] = getattr(model, f.name)
    return science


def run_id(science: dict[str, Any]) -> str:
    """A short stable hash of the science config (sorted JSON, sha1, 10 hex digits)."""
    blob = json.dumps(science, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def config_id(science: dict[str, Any]) -> str:
    """run_id of the science config with the seed left out: the seeds of one config share it."""
    return run_id({k: v for k, v in science.items() if k != "seed"})
