"""`loss.alpha=inverse_freq` resolved from the training annotations, before the run id is computed.

A word in loss.alpha stands for a per-class list that only the data can tell
(config.inverse_freq_alpha gives the formula). `engine.run.run` resolves it first thing, so the run
id, the run folder, config.yaml, metrics.json and the CSV row all carry the list itself, and
`loss.alpha=inverse_freq` and the same list typed by hand are one config. The embedded dataset is
synthesized on first use and a COCO subset cut (both cached under <results_dir>/data/, exactly as
the run itself would, and reused by it); counting is then a json read.

A sweep plans its jobs with config.compose, which does not resolve the word (config imports no data
code): a planner that wants the run ids its jobs will record calls `resolve_alpha` on each
composed config, as `run` does.
"""

from __future__ import annotations

import dataclasses
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
