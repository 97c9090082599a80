"""What a COCO dataset looks like to the bench: class balance, objects per image, box sizes at the
run's image size, how many boxes RetinaNet's anchors reach, and the settings that follows.

Boxes are measured as CocoDetection delivers them (dataset.py): crowd annotations left out, each
box clipped to its image, then x scaled by S/width and y by S/height (the aspect ratio is not
kept), and boxes left with no area dropped. Sizes "at original resolution" use the json as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from focalbench.data.anchors import (
    DEFAULT_ANCHOR_SIZES,
    fit_anchor_sizes,
    unreached_share,
)
from focalbench.data.coco import REPAIRABLE_KINDS, check_data, load_coco_json
from focalbench.errors import InputError
from focalbench.utils import atomic_write

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
# COCOeval's area ranges (pycocotools cocoeval.Params: small < 32^2 <= medium < 96^2 <= large)
SMALL_AREA, LARGE_AREA = 32**2, 96**2
# Advice thresholds (conventions of this tool, not results of a paper):
# loss.alpha=inverse_freq when the largest class has >= 3x the boxes of the smallest: below that
# the imbalance is mild next to the background/foreground one that focal loss already handles.
INVERSE_FREQ_RATIO = 3.0
# fitted anchors are advised when they reach at least 1 % more of the boxes than the given ones.
ANCHOR_GAIN = 0.01


@dataclass
class ClassCount:
    id: int
    name: str
    count: int  # non-crowd boxes
    share: float  # of all non-crowd boxes


@dataclass
class Stats:
    """dataset_stats' result. Box fields are None without image_size (anchors need the run's size).
    `sides` holds sqrt(w * h) of every box at the run's size (or original size)  # [N]"""

    path: Path
    image_size: int | None
    n_images: int
    n_boxes: int  # non-crowd annotations
    n_crowd: int
    classes: list[ClassCount]
    head_tail_ratio: float  # largest class count / smallest (inf when a class has no box)
    objects_mean: float
    objects_median: float
    objects_max: int
    empty_image_share: float  # images without a non-crowd box
    side_quantiles: dict[str, list[float]]  # width/height/side -> values at QUANTILES
    size_shares_coco: dict[str, float]  # small/medium/large by the json's `area`, as COCOeval
    size_shares_run: dict[str, float] | None  # by w * h at the run's size
    anchor_sizes: tuple[int, ...]
    unreached: float | None  # share of boxes with best anchor IoU < 0.5 (anchors.FG_IOU)
    fitted_anchor_sizes: tuple[int, ...] | None
    fitted_unreached: float | None
    advice: list[str] = field(default_factory=list)
    sides: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def class_table(self) -> tuple[list[str], list[list[str]]]:
        """(header, rows) of the class counts, for a rich Table in the CLI."""
        rows = [[str(c.id), c.name, str(c.count), f"{c.share:.1%}"] for c in self.classes]
        return ["id", "class", "boxes", "share"], rows

    def to_lines(self) -> list[str]:
        where = f"at {self.image_size}x{self.image_size}" if self.image_size else "original size"
        ratio = f"{self.head_tail_ratio:.1f}" if math.isfinite(self.head_tail_ratio) else "inf"
        lines = [
            f"{self.path}: {self.n_images} images, {self.n_boxes} boxes (+{self.n_crowd} crowd), "
            f"{len(self.classes)} classes; head/tail ratio {ratio}",
            *(f"  {c.name} (id {c.id}): {c.count} ({c.share:.1%})" for c in self.classes),
            f"objects per image: mean {self.objects_mean:.2f}, median {self.objects_median:g}, "
            f"max {self.objects_max}, images with none {self.empty_image_share:.1%}",
            f"box pixels {where}, quantiles {list(QUANTILES)}:",
            *(f"  {k}: {[round(v, 1) for v in q]}" for k, q in self.side_quantiles.items()),
            "small/medium/large (COCOeval: json area, original size): "
            + _shares(self.size_shares_coco),
        ]
        if self.size_shares_run is not None:
            lines.append(f"small/medium/large (box area {where}): " + _shares(self.size_shares_run))
        if self.unreached is not None:
            lines.append(
                f"boxes no anchor reaches at IoU >= 0.5: {self.unreached:.1%} with "
                f"model.anchor_sizes={list(self.anchor_sizes)}, {self.fitted_unreached:.1%} with "
                f"the fitted {list(self.fitted_anchor_sizes or ())}"
            )
        return [*lines, *(f"advice: {a}" for a in self.advice)]


def _shares(shares: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1%}" for k, v in shares.items())


def _size_shares(area: np.ndarray) -> dict[str, float]:
    n = max(len(area), 1)
    return {
        "small": float((area < SMALL_AREA).sum() / n),
        "medium": float(((area >= SMALL_AREA) & (area < LARGE_AREA)).sum() / n),
        "large": float((area >= LARGE_AREA).sum() / n),
    }


def run_size_boxes(data: dict, image_size: int | None) -> np.ndarray:
    """Non-crowd boxes as CocoDetection delivers them: xyxy clipped to the image, scaled to
    image_size x image_size (None: original size), no-area ones dropped.  # [N, 4]"""
    size = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    anns = [a for a in data["annotations"] if not a.get("iscrowd", 0) and a["image_id"] in size]
    xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    wh = np.array([size[a["image_id"]] for a in anns], np.float64).reshape(-1, 2)  # [N, 2]
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1).clip(0, np.tile(wh, 2))
    if image_size is not None:
        xyxy = xyxy * np.tile(image_size / wh, 2)
    return xyxy[(xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])]


def dataset_stats(
    ann_path: Path | str,
    image_size: int | None = None,
    anchor_sizes: tuple[int, ...] | None = None,
) -> Stats:
    """Statistics of a COCO dataset json, measured at the run's image_size (data.image_size).

    Without image_size, box pixels are at the original resolution and the anchor fields are None.
    anchor_sizes: model.anchor_sizes (default DEFAULT_ANCHOR_SIZES). Advice: the fitted anchor
    sizes when they reach ANCHOR_GAIN more boxes; loss.alpha=inverse_freq when the head/tail ratio
    is >= INVERSE_FREQ_RATIO. InputError: not a COCO dataset json, or fatal check problems.
    """
    ann_path = Path(ann_path)
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise InputError(f"image_size must be a positive integer, got {image_size!r}")
    anchor_sizes = tuple(anchor_sizes or DEFAULT_ANCHOR_SIZES)
    data = load_coco_json(ann_path)
    problem = check_data(data, ann_path).first_problem(skip=REPAIRABLE_KINDS)
    if problem:
        raise InputError(f"{ann_path}: {problem}; run `focalbench data check {ann_path}`")

    anns = [a for a in data["annotations"] if not a.get("iscrowd", 0)]
    cats = sorted(data["categories"], key=lambda c: c["id"])
    per_cat = dict.fromkeys((c["id"] for c in cats), 0)
    per_image = dict.fromkeys((im["id"] for im in data["images"]), 0)
    for a in anns:
        per_cat[a["category_id"]] += 1
        per_image[a["image_id"]] += 1
    n = max(len(anns), 1)
    classes = [ClassCount(c["id"], c["name"], per_cat[c["id"]], per_cat[c["id"]] / n) for c in cats]
    counts = [c.count for c in classes]
    ratio = max(counts) / min(counts) if counts and min(counts) else math.inf
    objects = np.array(list(per_image.values()) or [0])

    boxes = run_size_boxes(data, image_size)  # [N, 4]
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    sides = np.sqrt(w * h)
    quantiles = {
        k: np.quantile(v, QUANTILES).tolist() if len(v) else []
        for k, v in (("width", w), ("height", h), ("side", sides))
    }
    stats = Stats(
        path=ann_path,
        image_size=image_size,
        n_images=len(data["images"]),
        n_boxes=len(anns),
        n_crowd=len(data["annotations"]) - len(anns),
        classes=classes,
        head_tail_ratio=ratio,
        objects_mean=float(objects.mean()),
        objects_median=float(np.median(objects)),
        objects_max=int(objects.max()),
        empty_image_share=float((objects == 0).mean()) if per_image else 0.0,
        side_quantiles=quantiles,
        size_shares_coco=_size_shares(np.array([a["area"] for a in anns], np.float64)),
        size_shares_run=None if image_size is None else _size_shares(w * h),
        anchor_sizes=anchor_sizes,
        unreached=None,
        fitted_anchor_sizes=None,
        fitted_unreached=None,
        sides=sides,
    )
    if image_size is not None and len(boxes):
        xyxy = torch.from_numpy(boxes).float()
        stats.unreached = unreached_share(xyxy, image_size, anchor_sizes)
        stats.fitted_anchor_sizes = fit_anchor_sizes(
            sides,
            len(anchor_sizes),
            boxes=xyxy,
            image_size=image_size,
            start=anchor_sizes,
            source=ann_path,
        )
        stats.fitted_unreached = unreached_share(xyxy, image_size, stats.fitted_anchor_sizes)
        if stats.unreached - stats.fitted_unreached >= ANCHOR_GAIN:
            stats.advice.append(
                f"model.anchor_sizes={list(stats.fitted_anchor_sizes)}: unreached boxes "
                f"{stats.unreached:.1%} -> {stats.fitted_unreached:.1%}"
            )
    if ratio >= INVERSE_FREQ_RATIO:
        stats.advice.append(
            f"loss.alpha=inverse_freq: the largest class has {ratio:.1f}x the boxes of the "
            f"smallest (advised from {INVERSE_FREQ_RATIO:g}x)"
        )
    return stats


def plot_stats(stats: Stats, path: Path | str) -> Path:
    """PNG: class counts (bars) and box sides (histogram, log x) with the anchor sizes as vertical
    lines (solid: model.anchor_sizes, dashed: the fitted ones; a level's scales reach 1.59x its
    size)."""
    from matplotlib.figure import Figure  # here, so that importing stats stays light

    fig = Figure(figsize=(10, 4))
    ax_cls, ax_side = fig.subplots(1, 2)
    ax_cls.bar([c.name for c in stats.classes], [c.count for c in stats.classes])
    ax_cls.set(title=f"boxes per class (head/tail {stats.head_tail_ratio:.1f})", ylabel="boxes")
    ax_cls.tick_params(axis="x", labelrotation=45)
    sides = stats.sides[stats.sides > 0]
    if len(sides):
        bins = np.geomspace(sides.min(), sides.max() * 1.0001, 40)
        ax_side.hist(sides, bins=bins, color="0.6")
    ax_side.set_xscale("log")
    where = f"at {stats.image_size} px" if stats.image_size else "original size"
    ax_side.set(title=f"box side sqrt(w*h) {where}", xlabel="pixels", ylabel="boxes")
    if stats.image_size is not None:
        for sizes, style, label in (
            (stats.anchor_sizes, "-", "anchor sizes"),
            (stats.fitted_anchor_sizes, "--", "fitted"),
        ):
            for i, size in enumerate(sizes or ()):
                ax_side.axvline(size, color="C3", ls=style, label=label if i == 0 else None)
        ax_side.legend()
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return path
