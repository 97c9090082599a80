"""Early stopping of a search's trial: Optuna's pruners, and the judge a run calls after each epoch.

`focalbench sweep --search tpe --prune NAME` gives each trial's run the `prune` config section
(config/schema.py PruneCfg): the study, its storage and the trial's id. After each epoch but the
last, the judge scores the model on a fixed validation subset (the first `prune.images` images, the
same every epoch), reports that mAP to the trial at step epoch - 1 (Optuna's pruners count steps
from 0) and raises Pruned when the study's pruner says so; the run then ends with status `pruned`.
The last epoch is not judged: the full evaluation follows it, and the trial completes with its real
value. The judge draws no random numbers (no DataLoader, whose iterator draws a seed), so a trial
trains exactly as the plain run of its config, whose run id it shares.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from focalbench.config import PRUNERS, PruneCfg
from focalbench.errors import InputError

# percentile: keep the best three quarters at each step (Optuna's PercentilePruner keeps the top
# `percentile`%): a gentler cut than the median's half, for searches where early mAPs are noisy
KEEP_PERCENTILE = 75.0
# halving, hyperband: keep the best third at each rung (Optuna's hyperband default). Rungs lie at
# steps r, 3r, 9r (r = max(1, warmup)): epochs 2, 4 and 10 by default; the halving default of 4
# would leave a 12-epoch search only two rungs, at epochs 2 and 5
REDUCTION_FACTOR = 3


def make_pruner(name: str, startup: int, warmup: int) -> Any:
    """The Optuna pruner called NAME (one of config.PRUNERS); an unknown name is an InputError.

    startup: trials that must complete before any is pruned (median, percentile; halving and
    hyperband have no start-up: the first trial to reach a rung always goes on, and hyperband waits
    for one completed trial to size its brackets). warmup: steps (epochs) never judged: median and
    percentile judge from step `warmup` on; halving and hyperband put their first rung there (at
    step 1 at least).
    """
    from optuna import pruners

    if name not in PRUNERS:
        raise InputError(
            f"--prune {name!r} is not a pruner; choose from {list(PRUNERS)} (wilcoxon is not "
            "offered: a run's per-epoch values are not independent instances)"
        )
    rung = max(1, warmup)  # a rung at step 0 would judge an epoch of learning-rate warm-up
    builders: dict[str, Callable[[], Any]] = {
        "median": lambda: pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup),
        "percentile": lambda: pruners.PercentilePruner(
            KEEP_PERCENTILE, n_startup_trials=startup, n_warmup_steps=warmup
        ),
        "halving": lambda: pruners.SuccessiveHalvingPruner(
            min_resource=rung, reduction_factor=REDUCTION_FACTOR
        ),
        "hyperband": lambda: pruners.HyperbandPruner(
            min_resource=rung, reduction_factor=REDUCTION_FACTOR
        ),
    }
    return builders[name]()


class Pruned(Exception):
    """The study's pruner stopped the run after `epoch` (1-based); the run ends `pruned`."""

    def __init__(self, epoch: int, value: float, cfg: PruneCfg, images: int) -> None:
        super().__init__(
            f"pruned after epoch {epoch} by the {cfg.pruner} pruner of study {cfg.study}: mAP "
            f"{value:.4f} on the first {images} validation images"
        )
        self.epoch, self.value = epoch, value


def epoch_judge(
    cfg: PruneCfg, epochs: int, model, val_ds, image_size: int, batch_size: int, device
) -> Callable[[int], None] | None:
    """judge(epoch) for fit's after_epoch, or None when pruning is off (nothing is imported or
    evaluated then). judge(epoch) reports the subset mAP of epochs 1..epochs-1 to the trial and
    raises Pruned when the pruner says so."""
    if cfg.pruner is None:
        return None
    import optuna

    from focalbench.engine.predict import predict
    from focalbench.metrics import evaluate

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = make_pruner(cfg.pruner, cfg.startup, cfg.warmup)
    study = optuna.load_study(study_name=cfg.study, storage=cfg.storage, pruner=pruner)
    trial = optuna.trial.Trial(study, cfg.trial)
    n = min(cfg.images, len(val_ds))
    gt = subset_ground_truth(json.loads(Path(val_ds.ann_file).read_text()), val_ds.image_ids[:n])

    def judge(epoch: int) -> None:
        if epoch >= epochs:  # the full evaluation follows the last epoch
            return
        batches = _batches(val_ds, n, batch_size)
        dets = predict(model, batches, val_ds.cat_ids, image_size, device)
        value = evaluate(gt, dets, calib_threshold="none")["mAP"]
        trial.report(value, epoch - 1)
        if trial.should_prune():
            raise Pruned(epoch, value, cfg, n)

    return judge


def subset_ground_truth(gt: dict[str, Any], image_ids: list[int]) -> dict[str, Any]:
    """The COCO ground truth of these images only (every category kept)."""
    keep = set(image_ids)
    return {
        **gt,
        "images": [im for im in gt["images"] if im["id"] in keep],
        "annotations": [a for a in gt["annotations"] if a["image_id"] in keep],
    }


def _batches(val_ds, n: int, batch_size: int) -> Iterator[tuple[list, list]]:
    """The first n items of val_ds in collated batches, in order."""
    from focalbench.data import collate

    for start in range(0, n, batch_size):
        yield collate([val_ds[i] for i in range(start, min(n, start + batch_size))])
