"""The schema of every config group but the model's (config/models.py): one frozen dataclass per
group (LossCfg, MatcherCfg, DataCfg, TrainCfg, WandbCfg, PruneCfg) and RunConfig, which holds them
and knows its science config, run id and config id. Every range check lives in a `__post_init__`
and raises InputError naming the option, the value and the valid choices.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from focalbench.config.groups import check_choice, check_range, group_options
from focalbench.config.identity import config_id, legacy_model_science, run_id
from focalbench.config.models import ModelCfg, RetinaNetCfg
from focalbench.config.resolve import (
    ALPHA_WORD_LOSSES,
    ALPHA_WORDS,
    PER_CLASS_ALPHA_LOSSES,
    inverse_freq_alpha,
)
from focalbench.errors import InputError
from focalbench.losses.params import LOSS_TABLE

# the embedded dataset's presets: focalbench.data.synthetic.DIFFICULTIES (a test keeps them equal)
DIFFICULTIES = ("easy", "hard")


# The hyper-parameters each loss takes, from the loss table the registry reads (torch-free). Only
# these enter the run id, so `loss=bce,focal loss.gamma=1,2` runs bce once per seed, not once per
# gamma. The box loss (dfl) has no config group.
# GHM-C divides by the number of valid elements (mmdetection's GHMC): loss.normalization is not used
# and not in its run id
SELF_NORMALIZED_LOSSES = ("ghmc",)
# losses the DETR criterion refuses (RunConfig.__post_init__ says why)
DENSE_ONLY_LOSSES = ("ghmc",)
# (vfl's iou_weighted is an argument of its function, not a config option.)
LOSS_OPTIONS = ("alpha", "gamma", "beta", "epsilon", "bins", "momentum")
LOSS_PARAMS: dict[str, tuple[str, ...]] = {
    name: tuple(p for p in info.params if p in LOSS_OPTIONS)
    for name, info in LOSS_TABLE.items()
    if info.kind != "box"
}


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
    epsilon: float = 1.0  # Poly-1's coefficient of (1 - p_t)^(gamma + 1); may be negative
    bins: int = 30  # GHM-C: gradient-norm bins in [0, 1]
    momentum: float = 0.0  # GHM-C: running bin counts (0: this batch's counts alone)
    normalization: str = "num_pos_batch"
    # the word a per-class alpha was resolved from (inverse_freq), None for a number or a list the
    # user gave. Not in the run id: the resolved list is, so inverse_freq and its list given by
    # hand are one config
    alpha_from: str | None = None

    def _check_poly1_and_ghmc(self) -> None:
        eps = self.epsilon
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps):
            raise InputError(
                f"loss.epsilon={eps!r} is not a number; give a finite float (may be < 0)"
            )
        bins = self.bins
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise InputError(f"loss.bins={bins!r} is out of range; expected an integer >= 1")
        m = self.momentum
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m < 1.0:
            raise InputError(f"loss.momentum={m!r} is out of range; expected a value in [0, 1)")

    @property
    def params(self) -> dict[str, Any]:
        """The hyper-parameters this loss actually takes (bce ignores alpha/gamma, qfl has only
        beta)."""
        return {k: getattr(self, k) for k in LOSS_PARAMS[self.name]}

    def science(self) -> dict[str, Any]:
        """What the run id hashes of the loss: its name, its hyper-parameters and the
        normalization rule (but for ghmc, which normalizes by itself)."""
        science = {"name": self.name, **self.params}
        if self.name not in SELF_NORMALIZED_LOSSES:
            science["normalization"] = self.normalization
        return science

    def with_class_counts(self, counts: list[int] | tuple[int, ...]) -> LossCfg:
        """This config with an alpha word resolved from the training set's per-class annotation
        counts [C] (inverse_freq_alpha); itself when alpha is no word."""
        if not isinstance(self.alpha, str):
            return self
        return dataclasses.replace(self, alpha=inverse_freq_alpha(counts), alpha_from=self.alpha)

    def __post_init__(self) -> None:
        check_choice("loss", self.name, group_options("loss"))
        if isinstance(self.alpha, str):
            if self.alpha not in ALPHA_WORDS:
                raise InputError(
                    f"loss.alpha={self.alpha!r} is not valid; give a number in [0, 1], null, a "
                    f"list of one weight per class or one of {list(ALPHA_WORDS)}"
                )
            if self.name not in ALPHA_WORD_LOSSES:
                raise InputError(
                    f"loss.alpha={self.alpha} is supported by loss="
                    f"{' and '.join(ALPHA_WORD_LOSSES)} only, not {self.name!r}"
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
                check_range(f"loss.alpha[{i}]", a, 0.0, 1.0)
                if a != a:  # NaN compares false with both bounds
                    raise InputError(f"loss.alpha[{i}]=nan; per-class weights lie in [0, 1]")
        elif self.alpha is not None:
            check_range("loss.alpha", self.alpha, 0.0, 1.0)
        if self.alpha_from is not None and (
            self.alpha_from not in ALPHA_WORDS or not isinstance(self.alpha, tuple)
        ):
            raise InputError(
                f"loss.alpha_from={self.alpha_from!r} records how a per-class loss.alpha was "
                f"resolved: one of {list(ALPHA_WORDS)}, with alpha a list"
            )
        check_range("loss.gamma", self.gamma, 0.0)
        check_range("loss.beta", self.beta, 0.0)
        self._check_poly1_and_ghmc()
        check_choice(
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
        check_choice("matcher", self.name, group_options("matcher"))
        if self.alpha is not None:
            check_range("matcher.alpha", self.alpha, 0.0, 1.0)
        if self.gamma is not None:
            check_range("matcher.gamma", self.gamma, 0.0)
        for name in ("weight_class", "weight_bbox", "weight_giou"):
            check_range(f"matcher.{name}", getattr(self, name), 0.0)


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
        check_choice("data", self.name, group_options("data"))
        check_choice("data.bad_boxes", self.bad_boxes, ("error", "fix"))
        check_choice("data.difficulty", self.difficulty, DIFFICULTIES)
        minimum = 1 if self.name == "synthetic" else 0  # 0 = all images of a COCO file
        check_range("data.train_images", self.train_images, minimum)
        check_range("data.val_images", self.val_images, minimum)
        check_range("data.image_size", self.image_size, 32)
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
        check_range("train.epochs", self.epochs, 1)
        check_range("train.batch_size", self.batch_size, 1)
        check_range("train.eval_batch_size", self.eval_batch_size, 1)
        check_choice("train.optimizer", self.optimizer, ("adamw", "sgd"))
        if not self.lr > 0:
            raise InputError(f"train.lr={self.lr!r} is out of range; expected a value > 0")
        check_range("train.weight_decay", self.weight_decay, 0.0)
        check_range("train.warmup_iters", self.warmup_iters, 0)
        check_range("train.clip_grad", self.clip_grad, 0.0)
        check_choice("train.device", self.device, ("auto", "cpu", "cuda"))
        check_range("train.threads", self.threads, 0)
        check_range("train.num_workers", self.num_workers, 0)
        check_choice("train.compile_backend", self.compile_backend, COMPILE_BACKENDS)


@dataclass(frozen=True)
class WandbCfg:
    enabled: bool = False
    mode: str = "disabled"
    project: str = "focalbench"
    entity: str | None = None

    def __post_init__(self) -> None:
        check_choice("logger.wandb.mode", self.mode, ("auto", "online", "offline", "disabled"))


# the pruners of `focalbench sweep --search tpe --prune NAME` (engine/prune.py builds them; a test
# keeps the two lists equal). Optuna's wilcoxon pruner is left out: it compares per-instance values
# of one step, and a run's per-epoch values are not independent instances
PRUNERS = ("median", "percentile", "halving", "hyperband")


@dataclass(frozen=True)
class PruneCfg:
    """Early stopping of a search's trial (engine/prune.py): after each epoch but the last, the mAP
    on the first `images` validation images is reported to the Optuna trial, which may stop the run
    (status `pruned`). Set by `focalbench sweep --search tpe --prune NAME`, never by hand; off
    (pruner null) it costs nothing. How a run executes, not what it computes: not in the run id."""

    pruner: str | None = None  # one of PRUNERS; null: no per-epoch evaluation
    study: str | None = None  # the Optuna study's name
    storage: str | None = None  # its RDB URL, sqlite:///<results>/optuna/<study>.db
    trial: int | None = None  # the trial's id in the storage (not its number)
    images: int = 40  # the fixed validation subset judged every epoch
    startup: int = 1  # trials that must complete before any is pruned (median, percentile)
    warmup: int = 1  # the first epochs, never judged (halving, hyperband: at least 1)

    def __post_init__(self) -> None:
        if self.pruner is None:
            return
        check_choice("prune.pruner", self.pruner, PRUNERS)
        for option in ("study", "storage", "trial"):
            if getattr(self, option) is None:
                raise InputError(
                    f"prune.pruner={self.pruner} needs prune.{option} (--prune sets it)"
                )
        check_range("prune.images", self.images, 1)
        check_range("prune.startup", self.startup, 0)
        check_range("prune.warmup", self.warmup, 0)


@dataclass(frozen=True)
class RunConfig:
    model: ModelCfg = field(default_factory=RetinaNetCfg)  # a RetinaNetCfg or a DetrCfg
    loss: LossCfg = field(default_factory=LossCfg)
    matcher: MatcherCfg = field(default_factory=MatcherCfg)
    data: DataCfg = field(default_factory=DataCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    wandb: WandbCfg = field(default_factory=WandbCfg)
    prune: PruneCfg = field(default_factory=PruneCfg)  # not in science(): execution only
    seed: int = 0
    results_dir: str = "results"
    sweep_id: str | None = None
    job_name: str | None = None

    def __post_init__(self) -> None:
        if self.model.name == "detr" and self.loss.name in DENSE_ONLY_LOSSES:
            raise InputError(
                f"loss={self.loss.name} is for dense detectors (model=retinanet): its gradient "
                "density is a histogram over the many anchors of a batch, ignored ones left out; "
                "DETR scores a few queries, once per decoder layer. Choose another loss for "
                "model=detr"
            )

    def science(self) -> dict[str, Any]:
        """The config that decides the numbers: what the run id hashes. Paths, logging, device,
        compilation, progress and pruning settings are left out, so moving a results folder or
        switching W&B, torch.compile or a search's pruner on keeps the id."""
        return self._science(self.model.science())

    def _science(self, model: dict[str, Any]) -> dict[str, Any]:
        train = dataclasses.asdict(self.train)
        for key in EXECUTION_OPTIONS:
            train.pop(key)
        science = {
            "model": model,
            "loss": self.loss.science(),
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
        legacy = legacy_model_science(self.model)
        if legacy is None or "difficulty" in self.data.science():  # that schema had hard images
            return (self.run_id,)
        return (self.run_id, run_id(self._science(legacy)))

    @property
    def config_id(self) -> str:
        """What the leaderboard groups by: the run id's hash without the seed."""
        return config_id(self.science())
