"""Config words resolved from the training annotations, before the run id is computed:
`loss.alpha=inverse_freq` (one alpha per class) and `model.anchor_sizes=auto` (five anchor sizes
fitted to the training boxes at the run's image size, data/anchors.py).

A word in loss.alpha stands for a per-class list that only the data can tell
(config.inverse_freq_alpha gives the formula); likewise the anchor word for sizes. `engine.run.run`
resolves it first thing, so the run id, the run folder, config.yaml, metrics.json and the CSV row
all carry the list itself, and `loss.alpha=inverse_freq` and the same list typed by hand are one
config. The embedded dataset is synthesized on first use and a COCO subset cut (both cached under
<results_dir>/data/, exactly as the run itself would, and reused by it); counting is then a json
read.

A sweep plans its jobs with config.compose, which does not resolve the word (config imports no data
code): a planner that wants the run ids its jobs will record calls `resolve_alpha` on each composed
config, as `run` does (`resolve_words`: both words).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from focalbench.config import RunConfig


def class_counts(ann_file: str | Path) -> list[int]:
    """Annotations per class [C] of a COCO json, counted as data.CocoDetection labels them:
    categories sorted by id (label k = the k-th), crowd annotations and annotations of unknown
    images or categories left out. (Boxes that clipping would empty still count: with
    data.bad_boxes=error the dataset refuses them anyway.)"""
    from focalbench.data import load_coco_json

    data = load_coco_json(ann_file)

    def items(section: str) -> list[dict[str, Any]]:
        # malformed entries are skipped: the dataset's own checks name them right after this
        return [x for x in data.get(section) or [] if isinstance(x, dict)]

    cat_ids = sorted({c["id"] for c in items("categories") if isinstance(c.get("id"), int)})
    label_of = {cid: k for k, cid in enumerate(cat_ids)}
    images = {im.get("id") for im in items("images")}
    counts = [0] * len(cat_ids)
    for ann in items("annotations"):
        label = label_of.get(ann.get("category_id"))
        if label is None or ann.get("iscrowd", 0) or ann.get("image_id") not in images:
            continue
        counts[label] += 1
    return counts


def training_annotations(cfg: RunConfig) -> Path:
    """The training json of cfg.data, made (and cached) as build_datasets makes it."""
    from focalbench.engine.datasets import coco_files, synthetic_files

    files = synthetic_files if cfg.data.name == "synthetic" else coco_files
    (train_ann, _), _ = files(cfg.data, cfg.results_dir)
    return train_ann


def resolve_alpha(cfg: RunConfig, say: Callable[..., Any] | None = None) -> RunConfig:
    """cfg with a loss.alpha word (inverse_freq) replaced by its per-class list; cfg itself when
    loss.alpha is a number, a list or null. `say` gets one line with the counts and the list."""
    if not isinstance(cfg.loss.alpha, str):
        return cfg
    counts = class_counts(training_annotations(cfg))
    loss = cfg.loss.with_class_counts(counts)
    if say is not None:
        say(
            f"loss.alpha={cfg.loss.alpha}: training annotations per class {counts} -> "
            f"alpha {list(loss.alpha)}"  # type: ignore[arg-type]
        )
    return dataclasses.replace(cfg, loss=loss)


def resolve_anchors(cfg: RunConfig, say: Callable[..., Any] | None = None) -> RunConfig:
    """cfg with model.anchor_sizes=auto replaced by the five sizes fitted to the training boxes at
    data.image_size (data/anchors.fit_anchor_sizes: k-means of the box sides, then each level
    searched on the real anchor grid for the most boxes reached at IoU 0.5, never fewer than the
    default sizes reach); cfg itself when the sizes are given. `say` gets one line with the
    fit and the share of boxes no anchor reaches, before and after."""
    if not isinstance(getattr(cfg.model, "anchor_sizes", None), str):
        return cfg
    train_ann = training_annotations(cfg)
    fitted, line = _fit_anchors(str(train_ann), train_ann.stat().st_mtime_ns, cfg.data.image_size)
    if say is not None:
        say(f"model.anchor_sizes={cfg.model.anchor_sizes}: {line}")
    model = dataclasses.replace(
        cfg.model, anchor_sizes=fitted, anchor_sizes_from=cfg.model.anchor_sizes
    )
    return dataclasses.replace(cfg, model=model)


@functools.lru_cache(maxsize=8)
def _fit_anchors(train_ann: str, mtime_ns: int, size: int) -> tuple[tuple[int, ...], str]:
    """(fitted sizes, a line on the fit) of one training json at one image size: a sweep or race
    plans every config and seed with the same data, so the fit runs once (mtime_ns: a rewritten
    file is fitted again)."""
    import torch

    from focalbench.config import RetinaNetCfg
    from focalbench.data import load_coco_json
    from focalbench.data.anchors import fit_anchor_sizes, unreached_share
    from focalbench.data.stats import run_size_boxes

    boxes = run_size_boxes(load_coco_json(train_ann), size)  # [N, 4] xyxy at the run's size
    sides = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) ** 0.5
    default = RetinaNetCfg.anchor_sizes
    fitted = fit_anchor_sizes(
        sides, 5, boxes=boxes, image_size=size, start=default, source=train_ann
    )
    xyxy = torch.from_numpy(boxes).float()
    before, after = unreached_share(xyxy, size, default), unreached_share(xyxy, size, fitted)
    line = (
        f"{len(boxes)} training boxes at {size} px -> {list(fitted)}; boxes no anchor reaches at "
        f"IoU 0.5: {before:.1%} with {list(default)}, {after:.1%} with these"
    )
    return fitted, line


def resolve_words(cfg: RunConfig, say: Callable[..., Any] | None = None) -> RunConfig:
    """cfg with every data-dependent word resolved (loss.alpha, model.anchor_sizes)."""
    return resolve_anchors(resolve_alpha(cfg, say), say)
