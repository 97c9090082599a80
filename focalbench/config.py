"""Typed run configuration: Hydra composes conf/, this module turns the result into frozen
dataclasses once.

Code below the entry points sees only `RunConfig`. Every range check lives in a `__post_init__` and
raises `InputError` naming the option, the value and the valid choices. This module imports neither
torch nor the registries (of the losses only their torch-free table, focalbench.losses.params), so
the CLI can validate a config without paying for torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from focalbench.errors import InputError
from focalbench.losses.params import LOSS_TABLE

CONFIG_MODULE = "focalbench.conf"
GROUPS = ("model", "loss", "matcher", "data", "train", "logger", "experiment", "hparams_search")


def group_options(group: str) -> list[str]:
    """Names of the yaml files in conf/<group>/ — the choices a user can write as `group=name`."""
    folder = resources.files(CONFIG_MODULE) / group
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _check_choice(option: str, value: Any, choices: list[str] | tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{option}={value!r} is not valid; choose from {sorted(choices)}")


def _check_range(
    option: str, value: float, lo: float | None = None, hi: float | None = None
) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise InputError(f"{option}={value!r} is out of range; expected a value in {span}")


NORMS = ("auto", "bn", "frozen_bn")
# the embedded dataset's presets: focalbench.data.synthetic.DIFFICULTIES (a test keeps them equal)
DIFFICULTIES = ("easy", "hard")
# a torchvision weights name as torchvision spells it (IMAGENET1K_V1, DEFAULT); anything else but
# `synthetic` is a file path
_TORCHVISION_WEIGHTS = re.compile(r"[A-Z][A-Z0-9_]*")


def weights_kind(weights: str | None) -> str:
    """What model.weights names, as the run id records it: "scratch" (None), "synthetic",
    "torchvision:<NAME>", or "file" (a path: where a file lies is not science, so the path is left
    out of the run id like every other path)."""
    if weights is None:
        return "scratch"
    if weights == "synthetic":
        return "synthetic"
    if _TORCHVISION_WEIGHTS.fullmatch(weights):
        return f"torchvision:{weights}"
    return "file"


@dataclass(frozen=True)
class ModelCfg:
    """What every detector has; RetinaNetCfg and DetrCfg add their own fields (MODEL_CFGS)."""

    name: str
    backbone: str = "resnet18"
    # None: from scratch; a torchvision weights name (IMAGENET1K_V1, DEFAULT); a local file of a
    # torchvision ResNet state dict; or `synthetic` (see weights_kind, models/weights.py)
    weights: str | None = None
    # BatchNorm of the backbone: bn (trained, right from scratch) | frozen_bn (torchvision's
    # FrozenBatchNorm2d: the loaded statistics stay, right for pretrained weights at small batches)
    # | auto: bn from scratch, frozen_bn with any weights
    norm: str = "auto"
    # ResNet stages that train, counted from the top (layer4, layer3, layer2, layer1, the stem), as
    # torchvision's trainable_backbone_layers: 5 = all, 0 = the whole backbone frozen. None (auto):
    # 5 from scratch, 3 with weights (torchvision's default for pretrained detection backbones)
    trainable_layers: int | None = None
    detections_per_img: int = 100

    def __post_init__(self) -> None:
        own = [name for name, cls in MODEL_CFGS.items() if cls is type(self)]
        _check_choice("model.name", self.name, own or sorted(MODEL_CFGS))
        _check_choice("model.backbone", self.backbone, ("resnet18", "resnet50"))
        if self.weights is not None and not (isinstance(self.weights, str) and self.weights):
            raise InputError(
                f"model.weights={self.weights!r} must be null, a torchvision weights name such as "
                "IMAGENET1K_V1, a file path, or synthetic"
            )
        _check_choice("model.norm", self.norm, NORMS)
        if self.trainable_layers is not None:
            _check_range("model.trainable_layers", self.trainable_layers, 0, 5)
        _check_range("model.detections_per_img", self.detections_per_img, 1)

    @property
    def weights_kind(self) -> str:
        return weights_kind(self.weights)

    @property
    def norm_layer(self) -> str:
        """model.norm with auto resolved: bn | frozen_bn."""
        if self.norm != "auto":
            return self.norm
        return "bn" if self.weights is None else "frozen_bn"

    @property
    def trainable(self) -> int:
        """model.trainable_layers with auto resolved: 5 from scratch, 3 with weights."""
        if self.trainable_layers is not None:
            return self.trainable_layers
        return 5 if self.weights is None else 3

    def science(self) -> dict[str, Any]:
        """The fields that decide the numbers. weights (its kind), norm and trainable_layers enter
        only where they differ from what the first schema, which had none of them, always did
        (from scratch, BatchNorm, everything trained), so that those run ids keep their shape."""
        science = dataclasses.asdict(self)
        del science["weights"], science["norm"], science["trainable_layers"]
        if self.weights_kind != "scratch":
            science["weights"] = self.weights_kind
        if self.norm_layer != "bn":
            science["norm"] = self.norm_layer
        if self.trainable != 5:
            science["trainable_layers"] = self.trainable
        return science


@dataclass(frozen=True)
class RetinaNetCfg(ModelCfg):
    name: str = "retinanet"
    box_head: str = "l1"
    reg_max: int = 8
    fpn_channels: int = 256  # FPN and head width (torchvision: 256); 128 trains ~3x faster on a CPU
    head_convs: int = 4  # convs per head branch before the predictor (torchvision: 4)
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)
    score_thresh: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("model.box_head", self.box_head, ("l1", "dfl"))
        _check_range("model.reg_max", self.reg_max, 1)
        if self.fpn_channels < 32 or self.fpn_channels % 32:
            raise InputError(
                f"model.fpn_channels={self.fpn_channels} must be a positive multiple of 32 "
                "(the heads' GroupNorm has 32 groups)"
            )
        _check_range("model.head_convs", self.head_convs, 0, 4)
        _check_range("model.score_thresh", self.score_thresh, 0.0, 1.0)
        if len(self.anchor_sizes) != 5 or min(self.anchor_sizes) < 1:
            raise InputError(
                f"model.anchor_sizes={list(self.anchor_sizes)} must be 5 positive sizes (P3..P7)"
            )


@dataclass(frozen=True)
class DetrCfg(ModelCfg):
    name: str = "detr"
    d_model: int = 128
    nheads: int = 8
    enc_layers: int = 2
    dec_layers: int = 2
    dim_feedforward: int = 512
    num_queries: int = 50
    dropout: float = 0.0
    aux_loss: bool = True
    noobj_weight: float = 0.1  # DETR's weight of the no-object class in CE
    weight_class: float = 2.0
    weight_bbox: float = 5.0
    weight_giou: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("d_model", "nheads", "enc_layers", "dec_layers", "dim_feedforward",
                     "num_queries"):  # fmt: skip
            _check_range(f"model.{name}", getattr(self, name), 1)
        if self.d_model % self.nheads:
            raise InputError(
                f"model.d_model={self.d_model} must be divisible by model.nheads={self.nheads}"
            )
        _check_range("model.dropout", self.dropout, 0.0, 1.0)
        _check_range("model.noobj_weight", self.noobj_weight, 0.0)
        for name in ("weight_class", "weight_bbox", "weight_giou"):
            _check_range(f"model.{name}", getattr(self, name), 0.0)


# model.name -> its dataclass; conf/model/<name>.yaml gives its fields
MODEL_CFGS: dict[str, type[ModelCfg]] = {"retinanet": RetinaNetCfg, "detr": DetrCfg}

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


def _legacy_model_science(model: ModelCfg) -> dict[str, Any] | None:
    """The model part of the first schema's science dict, or None where that schema could not
    express this config (it knew only from-scratch or local-file weights, always with BatchNorm)."""
    if model.weights_kind not in ("scratch", "file") or model.norm_layer != "bn":
        return None
    if model.trainable != 5:  # it trained every stage
        return None
    science = dict(_LEGACY_MODEL_DEFAULTS)
    for f in dataclasses.fields(model):
        if f.name not in ("weights", "norm", "trainable_layers"):
            science[f.name] = getattr(model, f.name)
    return science


# The hyper-parameters each loss takes, from the loss table the registry reads (torch-free). Only
# these enter the run id, so `loss=bce,focal loss.gamma=1,2` runs bce once per seed, not once per
# gamma. The box loss (dfl) has no config group.
LOSS_PARAMS: dict[str, tuple[str, ...]] = {
    name: tuple(p for p in info.params if p in ("alpha", "gamma", "beta"))
    for name, info in LOSS_TABLE.items()
    if info.kind != "box"
}


# loss.alpha words, resolved to a per-class list before the run id is computed
# (engine/alpha.py: resolve_alpha): inverse_freq -> inverse_freq_alpha(training class counts)
ALPHA_WORDS = ("inverse_freq",)
# the mean alpha of inverse_freq: Lin et al.'s 0.25, so a balanced training set gets 0.25 each
INVERSE_FREQ_MEAN = 0.25
# losses that take a per-class alpha list: focal one weight per class, softmax_focal one per class
# and then the background
PER_CLASS_ALPHA_LOSSES = ("focal", "softmax_focal")


def inverse_freq_alpha(counts: list[int] | tuple[int, ...]) -> tuple[float, ...]:
    """loss.alpha=inverse_freq: alpha_c = min(1, 0.25 * (1 / n_c) / mean_k(1 / n_k)).

    counts [C]: the training annotations of each class (non-crowd, in label order). The classic
    inverse-frequency class weight (scikit-learn's class_weight="balanced" is n / (C n_c), the
    same up to scale) rescaled so the mean alpha is INVERSE_FREQ_MEAN, the focal loss paper's
    default: a balanced set gets exactly 0.25 per class, a class k times rarer than another a k
    times larger alpha. Clipped to 1, which a class reaches once its 1 / n_c is 4x the mean (one
    rare class among many; the mean is then below 0.25); a class without annotations counts as 1
    (it has no positives, so its alpha only weighs its negatives). Per-class focal alpha is the
    request of ultralytics#10406; class-balanced loss (Cui et al. 2019, arXiv 1901.05555) would
    use the effective number (1 - beta^n_c) / (1 - beta) instead of n_c: not done here. Rounded
    to 4 significant digits, so the list reads well in config.yaml and the CSV.
    """
    if not counts:
        raise InputError("loss.alpha=inverse_freq: the training set has no classes")
    inverse = [1.0 / max(int(n), 1) for n in counts]
    mean = sum(inverse) / len(inverse)
    return tuple(float(f"{min(1.0, INVERSE_FREQ_MEAN * w / mean):.4g}") for w in inverse)


@dataclass(frozen=True)
class LossCfg:
    name: str = "focal"
    # None: no alpha-balancing; a float; a tuple: per class (focal: C weights, softmax_focal: C + 1,
    # the background last); a word of ALPHA_WORDS (focal): resolved to the tuple from the training
    # annotations before the run id is computed (with_class_counts), so it is the list, not the
    # word, that the run id, config.yaml and the CSV record
    alpha: float | tuple[float, ...] | str | None = 0.25
    gamma: float = 2.0
    beta: float = 2.0  # QFL's exponent
    normalization: str = "num_pos_batch"
    # the word a per-class alpha was resolved from (inverse_freq), None for a number or a list the
    # user gave. Not in the run id: the resolved list is, so inverse_freq and its list given by
    # hand are one config
    alpha_from: str | None = None

    @property
    def params(self) -> dict[str, Any]:
        """The hyper-parameters this loss actually takes (bce ignores alpha/gamma, qfl has only
        beta)."""
        return {k: getattr(self, k) for k in LOSS_PARAMS[self.name]}

    def with_class_counts(self, counts: list[int] | tuple[int, ...]) -> LossCfg:
        """This config with an alpha word resolved from the training set's per-class annotation
        counts [C] (inverse_freq_alpha); itself when alpha is no word."""
        if not isinstance(self.alpha, str):
            return self
        return dataclasses.replace(self, alpha=inverse_freq_alpha(counts), alpha_from=self.alpha)

    def __post_init__(self) -> None:
        _check_choice("loss", self.name, group_options("loss"))
        if isinstance(self.alpha, str):
            if self.alpha not in ALPHA_WORDS:
                raise InputError(
                    f"loss.alpha={self.alpha!r} is not valid; give a number in [0, 1], null, a "
                    f"list of one weight per class or one of {list(ALPHA_WORDS)}"
                )
            if self.name != "focal":
                raise InputError(
                    f"loss.alpha={self.alpha} is supported by loss=focal only, not {self.name!r}"
                )
        elif isinstance(self.alpha, tuple):
            if self.name not in PER_CLASS_ALPHA_LOSSES:
                raise InputError(
                    f"loss.alpha as a per-class list is supported by "
                    f"{' and '.join(PER_CLASS_ALPHA_LOSSES)} only, not {self.name!r}"
                )
            for i, a in enumerate(self.alpha):
                if isinstance(a, bool) or not isinstance(a, (int, float)):
                    raise InputError(
                        f"loss.alpha[{i}]={a!r} is not a number; per-class weights lie in [0, 1]"
                    )
                _check_range(f"loss.alpha[{i}]", a, 0.0, 1.0)
                if a != a:  # NaN compares false with both bounds
                    raise InputError(f"loss.alpha[{i}]=nan; per-class weights lie in [0, 1]")
        elif self.alpha is not None:
            _check_range("loss.alpha", self.alpha, 0.0, 1.0)
        if self.alpha_from is not None and (
            self.alpha_from not in ALPHA_WORDS or not isinstance(self.alpha, tuple)
        ):
            raise InputError(
                f"loss.alpha_from={self.alpha_from!r} records how a per-class loss.alpha was "
                f"resolved: one of {list(ALPHA_WORDS)}, with alpha a list"
            )
        _check_range("loss.gamma", self.gamma, 0.0)
        _check_range("loss.beta", self.beta, 0.0)
        _check_choice(
            "loss.normalization", self.normalization, ("num_pos_batch", "num_pos_per_image")
        )


@dataclass(frozen=True)
class MatcherCfg:
    name: str = "focal"
    # None: derived from the loss (see models/detr.py): gamma = the loss's gamma (QFL: beta; bce/ce:
    # 0); alpha = the loss's alpha for focal/bce (bce: none), else 0.25
    alpha: float | None = None
    gamma: float | None = None  # None: the loss's gamma
    weight_class: float = 2.0
    weight_bbox: float = 5.0
    weight_giou: float = 2.0

    def __post_init__(self) -> None:
        _check_choice("matcher", self.name, group_options("matcher"))
        if self.alpha is not None:
            _check_range("matcher.alpha", self.alpha, 0.0, 1.0)
        if self.gamma is not None:
            _check_range("matcher.gamma", self.gamma, 0.0)
        for name in ("weight_class", "weight_bbox", "weight_giou"):
            _check_range(f"matcher.{name}", getattr(self, name), 0.0)


@dataclass(frozen=True)
class DataCfg:
    name: str = "synthetic"
    train_images: int = 400
    val_images: int = 100
    image_size: int = 256
    synth_seed: int = 0
    ann: str | None = None
    images: str | None = None
    val_ann: str | None = None
    val_image_dir: str | None = None
    categories: tuple[str, ...] | None = None
    bad_boxes: str = "error"  # error | fix (clip to the image, drop empty ones, with a warning)
    # the embedded dataset's preset (data/synthetic.py DIFFICULTIES): easy (learnable in a few CPU
    # minutes) | hard (the images of every run before the presets existed)
    difficulty: str = "easy"

    def __post_init__(self) -> None:
        _check_choice("data", self.name, group_options("data"))
        _check_choice("data.bad_boxes", self.bad_boxes, ("error", "fix"))
        _check_choice("data.difficulty", self.difficulty, DIFFICULTIES)
        minimum = 1 if self.name == "synthetic" else 0  # 0 = all images of a COCO file
        _check_range("data.train_images", self.train_images, minimum)
        _check_range("data.val_images", self.val_images, minimum)
        _check_range("data.image_size", self.image_size, 32)
        if self.name == "coco":
            for option in ("ann", "images"):
                if not getattr(self, option):
                    raise InputError(f"data=coco needs data.{option}=PATH")

    def science(self) -> dict[str, Any]:
        """The data fields that decide the numbers. difficulty enters only where it is not `hard`,
        the images every run before the presets was trained on, so that those run ids stay; and
        only for the embedded dataset (a COCO file has no presets)."""
        science = dataclasses.asdict(self)
        if self.difficulty == "hard" or self.name != "synthetic":
            del science["difficulty"]
        return science


# torch.compile backends: inductor generates kernels; aot_eager traces forward and backward the same
# way without generating code (seconds instead of minutes on a CPU: for checking graph capture)
COMPILE_BACKENDS = ("inductor", "aot_eager")


# train options that decide how a run executes, not what it computes: left out of the run id
EXECUTION_OPTIONS = ("device", "threads", "num_workers", "eval_batch_size", "progress", "compile",
                     "compile_backend")  # fmt: skip


@dataclass(frozen=True)
class TrainCfg:
    epochs: int = 12
    batch_size: int = 8
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_iters: int = 50
    clip_grad: float = 1.0
    amp: bool = True
    device: str = "auto"
    threads: int = 0
    num_workers: int = 0
    eval_batch_size: int = 8
    progress: bool = True
    compile: bool = False
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        _check_range("train.epochs", self.epochs, 1)
        _check_range("train.batch_size", self.batch_size, 1)
        _check_range("train.eval_batch_size", self.eval_batch_size, 1)
        _check_choice("train.optimizer", self.optimizer, ("adamw", "sgd"))
        if not self.lr > 0:
            raise InputError(f"train.lr={self.lr!r} is out of range; expected a value > 0")
        _check_range("train.weight_decay", self.weight_decay, 0.0)
        _check_range("train.warmup_iters", self.warmup_iters, 0)
        _check_range("train.clip_grad", self.clip_grad, 0.0)
        _check_choice("train.device", self.device, ("auto", "cpu", "cuda"))
        _check_range("train.threads", self.threads, 0)
        _check_range("train.num_workers", self.num_workers, 0)
        _check_choice("train.compile_backend", self.compile_backend, COMPILE_BACKENDS)


@dataclass(frozen=True)
class WandbCfg:
    enabled: bool = False
    mode: str = "disabled"
    project: str = "focalbench"
    entity: str | None = None

    def __post_init__(self) -> None:
        _check_choice("logger.wandb.mode", self.mode, ("auto", "online", "offline", "disabled"))


@dataclass(frozen=True)
class RunConfig:
    model: ModelCfg = field(default_factory=RetinaNetCfg)  # a RetinaNetCfg or a DetrCfg
    loss: LossCfg = field(default_factory=LossCfg)
    matcher: MatcherCfg = field(default_factory=MatcherCfg)
    data: DataCfg = field(default_factory=DataCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    wandb: WandbCfg = field(default_factory=WandbCfg)
    seed: int = 0
    results_dir: str = "results"
    sweep_id: str | None = None
    job_name: str | None = None

    def science(self) -> dict[str, Any]:
        """The config that decides the numbers: what the run id hashes. Paths, logging, device,
        compilation and progress settings are left out, so moving a results folder or switching
        W&B or torch.compile on keeps the id."""
        return self._science(self.model.science())

    def _science(self, model: dict[str, Any]) -> dict[str, Any]:
        train = dataclasses.asdict(self.train)
        for key in EXECUTION_OPTIONS:
            train.pop(key)
        science = {
            "model": model,
            "loss": {
                "name": self.loss.name,
                "normalization": self.loss.normalization,
                **self.loss.params,
            },
            "data": self.data.science(),
            "train": train,
            "seed": self.seed,
        }
        if self.model.name == "detr":
            science["matcher"] = dataclasses.asdict(self.matcher)
        return science

    @property
    def run_id(self) -> str:
        return run_id(self.science())

    @property
    def run_ids(self) -> tuple[str, ...]:
        """Every id this config's rows and run folders may carry: the run id first, then the id the
        first schema gave it (see _LEGACY_MODEL_DEFAULTS), where that schema could express it."""
        legacy = _legacy_model_science(self.model)
        if legacy is None or "difficulty" in self.data.science():  # that schema had hard images
            return (self.run_id,)
        return (self.run_id, run_id(self._science(legacy)))

    @property
    def config_id(self) -> str:
        """What the leaderboard groups by: the run id's hash without the seed."""
        return config_id(self.science())


def run_id(science: dict[str, Any]) -> str:
    """A short stable hash of the science config (sorted JSON, sha1, 10 hex digits)."""
    blob = json.dumps(science, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def config_id(science: dict[str, Any]) -> str:
    """run_id of the science config with the seed left out: the seeds of one config share it."""
    return run_id({k: v for k, v in science.items() if k != "seed"})


def _build(cls: type, section: Any, option: str) -> Any:
    """Build one frozen dataclass from a plain dict, naming unknown keys and the valid ones."""
    if section is None:
        return cls()
    if not isinstance(section, dict):
        raise InputError(f"{option} must be a mapping, got {section!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - names)
    if unknown:
        prefix, _, which = option.partition(" ")  # "model (model=detr)": name the model too
        where = f" for {which.strip('()')}" if which else ""
        raise InputError(
            f"unknown option {prefix}.{unknown[0]}; valid {prefix} options{where}: {sorted(names)}"
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
    return cls(**values)


def _build_model(section: Any) -> ModelCfg:
    """The dataclass of the model section's name (MODEL_CFGS), built from the section."""
    name = section.get("name", "retinanet") if isinstance(section, dict) else "retinanet"
    if name not in MODEL_CFGS:
        raise InputError(f"unknown model {name!r}; choose from {sorted(MODEL_CFGS)}")
    if isinstance(section, dict) and "weights_path" in section:
        section = _from_first_schema(section, MODEL_CFGS[name])
    return _build(MODEL_CFGS[name], section, f"model (model={name})")


def _from_first_schema(section: dict[str, Any], cls: type[ModelCfg]) -> dict[str, Any]:
    """A model section of the first schema (a config.yaml written before RetinaNetCfg/DetrCfg; its
    weights_path key marks it) in today's terms: weights_path becomes weights, with the BatchNorm
    and the stages that schema always trained, and the other model's fields, which changed
    nothing, are dropped."""
    own = {f.name for f in dataclasses.fields(cls)}
    today = {k: v for k, v in section.items() if k in own}
    return {**today, "weights": section["weights_path"], "norm": "bn", "trainable_layers": 5}


def _data_section(section: Any) -> Any:
    """A data section written before data.difficulty existed (a run folder's config.yaml) meant the
    images now called hard: without the key it reads as hard, not as today's default."""
    if isinstance(section, dict) and "difficulty" not in section:
        return {**section, "difficulty": "hard"}
    return section


def from_container(cfg: dict[str, Any]) -> RunConfig:
    """RunConfig from the resolved container of a composed Hydra config."""
    cfg = {k: v for k, v in cfg.items() if k != "hydra"}
    top = {"seed", "results_dir", "sweep_id", "job_name"}
    known = top | {"model", "loss", "matcher", "data", "train", "logger"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise InputError(f"unknown option {unknown[0]!r}; valid top-level options: {sorted(known)}")
    logger = cfg.get("logger") or {}
    seed = cfg.get("seed", 0)
    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed={seed!r} must be a non-negative integer")
    return RunConfig(
        model=_build_model(cfg.get("model")),
        loss=_build(LossCfg, cfg.get("loss"), "loss"),
        matcher=_build(MatcherCfg, cfg.get("matcher"), "matcher"),
        data=_build(DataCfg, _data_section(cfg.get("data")), "data"),
        train=_build(TrainCfg, cfg.get("train"), "train"),
        wandb=_build(WandbCfg, logger.get("wandb"), "logger.wandb"),
        seed=seed,
        results_dir=str(cfg.get("results_dir") or "results"),
        sweep_id=_name(cfg.get("sweep_id"), "sweep_id"),
        job_name=_name(cfg.get("job_name"), "job_name"),
    )


def _name(value: Any, option: str) -> str | None:
    """A folder name from the command line; Hydra reads `job_name=12e3` as a number if unquoted."""
    if value is None or isinstance(value, str):
        return value
    raise InputError(f"{option}={value!r} was read as a number; quote it: {option}='...'")


def from_dictconfig(cfg: Any) -> RunConfig:
    """RunConfig from Hydra's DictConfig (the `@hydra.main` entry point)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise InputError(_explain(exc)) from exc
    return from_container(container)


def check_group_overrides(overrides: list[str]) -> None:
    """`loss=foo` with no conf/loss/foo.yaml: say so with the choices, before Hydra's longer
    message."""
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or value in ("", "null"):
            continue
        choices = group_options(key)
        for name in value.split(","):  # multirun lists: loss=focal,bce
            if name.strip() not in choices:
                raise InputError(f"unknown {key} {name.strip()!r}; choose from {choices}")


def search_grid(name: str) -> list[str]:
    """The grid lines (`key=v1,v2`) of conf/hparams_search/NAME.yaml: its hydra.sweeper.params, the
    same ones Hydra's own multirun (`-m hparams_search=NAME`) reads."""
    import yaml

    choices = group_options("hparams_search")
    if name not in choices:
        raise InputError(f"unknown hparams_search {name!r}; choose from {choices}")
    text = (resources.files(CONFIG_MODULE) / "hparams_search" / f"{name}.yaml").read_text()
    params = yaml.safe_load(text)["hydra"]["sweeper"]["params"]
    return [f"{key}={_override_value(value)}" for key, value in params.items()]


def _override_value(value: Any) -> str:
    """A YAML scalar back in override syntax: null, true, 0.5, focal,bce."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def compose_dict(overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Compose conf/config.yaml with Hydra overrides; returns the DictConfig."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    check_group_overrides(overrides)
    errors = (HydraException, OmegaConfBaseException)
    GlobalHydra.instance().clear()
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        try:
            return compose("config", overrides=overrides)
        except errors as exc:
            error = exc
        # `model.d_model=64` with model=retinanet, `loss.gamma=1` with loss=qfl: the valid options
        # are the keys of the group option chosen, which the composition without the failing
        # override tells
        key = _unknown_key(error)
        rest = [o for o in overrides if o.lstrip("+~").partition("=")[0] != key]
        try:
            section = compose("config", overrides=rest).get(key.partition(".")[0]) if key else None
        except errors:
            section = None
    if not hasattr(section, "keys") or "." not in key:
        raise InputError(_explain(error)) from error
    group = key.partition(".")[0]
    chosen = f" for {group}={section['name']}" if "name" in section else ""
    raise InputError(
        f"unknown option {key}; valid {group} options{chosen}: {sorted(section.keys())}"
    ) from error


def _unknown_key(exc: BaseException) -> str:
    """The key of Hydra's "Could not override 'KEY'", or ""."""
    line = _first_line(exc)
    return line.split("'")[1] if line.startswith("Could not override '") else ""


_SECTIONS = {
    "loss": LossCfg,
    "matcher": MatcherCfg,
    "data": DataCfg,
    "train": TrainCfg,
}


def _explain(exc: BaseException) -> str:
    """One line for a Hydra/OmegaConf error, naming the option and, where known, the valid ones."""
    line = _first_line(exc)
    key = _unknown_key(exc)
    if key:
        section, _, name = key.partition(".")
        if section == "model":  # of any model (compose_dict names the chosen model's where it can)
            valid = sorted({f.name for cls in MODEL_CFGS.values() for f in dataclasses.fields(cls)})
            return f"unknown option {key}; valid model options: {valid}"
        if section in _SECTIONS:
            valid = sorted(f.name for f in dataclasses.fields(_SECTIONS[section]))
            return f"unknown option {key}; valid {section} options: {valid}"
        return f"unknown option {key!r}; add it with +{key}=... only if you mean to"
    full_key = getattr(exc, "full_key", None)
    if full_key and "Missing mandatory value" in line:
        return f"missing value for {full_key}: pass {full_key}=..."
    return line


def compose(overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """RunConfig for `focalbench train OVERRIDES...`."""
    return from_dictconfig(compose_dict(overrides))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def to_yaml(cfg: RunConfig) -> str:
    """The run's full config as YAML (written to the run folder as config.yaml)."""
    import yaml

    data = dataclasses.asdict(cfg)
    data["run_id"] = cfg.run_id
    return yaml.safe_dump(json.loads(json.dumps(data, default=list)), sort_keys=False)
