"""RetinaNet anchors seen from the data: which boxes no anchor reaches, and anchor sizes fitted to
the boxes.

The anchor grid here is the one `models/retinanet.py` builds, recomputed without the model (data/
does not import models/; tests/data/test_anchors.py checks the two grids are identical):
- FPN levels P3..P7, one `anchor_sizes` entry per level, each with the scales s, int(s*2^(1/3)),
  int(s*2^(2/3)) and the aspect ratios (h/w) 0.5, 1, 2: 9 anchors per location;
- torchvision's AnchorGenerator places them at (0, stride, 2*stride, ...) on each feature map, with
  stride = padded image size // feature size; GeneralizedRCNNTransform pads the S x S batch to a
  multiple of 32, and each ResNet/FPN stage halves the size rounding up (P6, P7: 3x3 stride-2
  convs on P5), so at S = 160 the strides are 8, 16, 32, 53, 80 and not 8..128.
Every image of a run is S x S (dataset.py), so one grid serves all images; the training flip is
not modelled (the grid starts at 0, so a flipped box can fare slightly differently).
A box is "reached" when its best IoU with any anchor is >= 0.5, torchvision RetinaNet's foreground
threshold (Matcher(0.5, 0.4, allow_low_quality_matches=True)). An unreached box still gets a
positive through the low-quality rule (its best anchors, whatever their IoU), but only from
anchors that overlap it poorly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

from focalbench.errors import InputError

DEFAULT_ANCHOR_SIZES = (16, 32, 64, 128, 256)  # model.anchor_sizes default (RetinaNetCfg)
ASPECT_RATIOS = (0.5, 1.0, 2.0)
FG_IOU = 0.5  # torchvision RetinaNet's fg_iou_thresh: IoU >= 0.5 is foreground
SIZE_DIVISIBLE = 32  # GeneralizedRCNNTransform pads batches to a multiple of this
N_LEVELS = 5  # P3..P7
FIRST_LEVEL = 3  # P3: the C3 map, 2^3 times smaller than the padded image
IOU_CHUNK = 2**24  # box x anchor IoU entries per chunk (64 MiB of float32)
KMEANS_ITERS = 100
DESCENT_PASSES = 4
FIT_MAX_BOXES = 20_000  # boxes the grid search looks at (a seeded sample beyond)


def level_scales(anchor_sizes: Sequence[int]) -> tuple[tuple[int, int, int], ...]:
    """Per FPN level the three anchor scales, exactly as FocalRetinaNet builds them."""
    return tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in anchor_sizes)


def feature_shapes(image_size: int, n_levels: int = N_LEVELS) -> list[int]:
    """Side of the P3..P7 feature maps of an image_size x image_size input (maps are square)."""
    side = math.ceil(image_size / SIZE_DIVISIBLE) * SIZE_DIVISIBLE
    for _ in range(FIRST_LEVEL):  # conv1, maxpool, layer2: each k3/k7, stride 2, "same" padding
        side = (side + 1) // 2
    shapes = []
    for _ in range(n_levels):
        shapes.append(side)
        side = (side + 1) // 2
    return shapes


def anchor_grid(image_size: int, anchor_sizes: Sequence[int] = DEFAULT_ANCHOR_SIZES) -> Tensor:
    """Every anchor of an image_size x image_size image, xyxy pixels, in the model's order.
    # [A, 4], A = 9 * sum(side^2 over levels)

    Built by torchvision's own AnchorGenerator on empty feature maps of the model's shapes."""
    scales = level_scales(anchor_sizes)
    generator = AnchorGenerator(scales, (ASPECT_RATIOS,) * len(scales))
    padded = math.ceil(image_size / SIZE_DIVISIBLE) * SIZE_DIVISIBLE
    images = ImageList(torch.empty(1, 3, padded, padded), [(image_size, image_size)])
    maps = [torch.empty(1, 1, s, s) for s in feature_shapes(image_size, len(scales))]
    return generator(images, maps)[0]


def best_anchor_iou(
    boxes: Tensor, image_size: int, anchor_sizes: Sequence[int] = DEFAULT_ANCHOR_SIZES
) -> Tensor:
    """Best IoU of each box with any anchor of the grid.  boxes [N, 4] xyxy at the run's size
    (as CocoDetection delivers them) -> [N]. Chunked over boxes to bound memory."""
    anchors = anchor_grid(image_size, anchor_sizes)  # [A, 4]
    boxes = boxes.to(anchors.dtype).reshape(-1, 4)
    chunk = max(1, IOU_CHUNK // len(anchors))
    best = [box_iou(boxes[i : i + chunk], anchors).amax(1) for i in range(0, len(boxes), chunk)]
    return torch.cat(best) if best else boxes.new_zeros(0)


def unreached_share(
    boxes: Tensor, image_size: int, anchor_sizes: Sequence[int] = DEFAULT_ANCHOR_SIZES
) -> float:
    """Share of boxes [N, 4] (xyxy at the run's size) whose best anchor IoU is below FG_IOU; nan
    when there are no boxes."""
    if len(boxes) == 0:
        return float("nan")
    return (best_anchor_iou(boxes, image_size, anchor_sizes) < FG_IOU).double().mean().item()


@functools.lru_cache(maxsize=4096)
def _cell_anchors(size: int) -> np.ndarray:
    """The 9 anchors of one level around (0, 0), as torchvision rounds them.  # [9, 4]"""
    generator = AnchorGenerator(((size,),))
    return generator.generate_anchors(level_scales([size])[0], ASPECT_RATIOS).double().numpy()


def _level_best_iou(boxes: np.ndarray, size: int, stride: int, n: int) -> np.ndarray:
    """Best IoU of each box with the anchors of one level.  boxes [N, 4] -> [N]

    Only the grid point nearest the box centre (per axis) is tried: anchors sit centred on their
    grid point, and the overlap of two intervals only shrinks as their centres move apart, so that
    point is the best one for each of the 9 shapes. O(9 N) instead of O(N A); the tests check it
    against best_anchor_iou. numpy: on small arrays torch's thread pool costs more than the work."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # [N, 2]
    grid = np.clip(np.round(centre / stride), 0, n - 1) * stride  # [N, 2]
    anchors = np.tile(grid, 2)[:, None, :] + _cell_anchors(size)[None]  # [N, 9, 4]
    lt = np.maximum(boxes[:, None, :2], anchors[..., :2])
    rb = np.minimum(boxes[:, None, 2:], anchors[..., 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)  # [N, 9]
    area_b = (boxes[:, 2:] - boxes[:, :2]).prod(-1)[:, None]
    area_a = (anchors[..., 2:] - anchors[..., :2]).prod(-1)
    return (inter / (area_a + area_b - inter)).max(1)


def _fitness(best: np.ndarray) -> tuple[int, float]:
    """(boxes reached, summed best IoU): compared as a tuple, the IoU sum breaks ties."""
    return int((best >= FG_IOU).sum()), float(best.sum())


def _descend(boxes: np.ndarray, image_size: int, sizes: list[int]) -> tuple[list[int], tuple]:
    """Coordinate descent of each level's size on the grid, sizes kept strictly increasing."""
    side = math.ceil(image_size / SIZE_DIVISIBLE) * SIZE_DIVISIBLE
    grids = [(side // n, n) for n in feature_shapes(image_size, len(sizes))]  # (stride, n)
    best = [_level_best_iou(boxes, s, *g) for s, g in zip(sizes, grids)]  # per level [N]
    for _ in range(DESCENT_PASSES):
        moved = False
        for lvl, grid in enumerate(grids):
            others = [b for i, b in enumerate(best) if i != lvl]
            floor = np.max(others, axis=0) if others else np.zeros(len(boxes))
            lo = sizes[lvl - 1] + 1 if lvl else 1
            hi = sizes[lvl + 1] - 1 if lvl + 1 < len(sizes) else 2 * image_size
            cands = {min(max(round(2 ** (k / 8)), lo), hi) for k in range(8 * 12)} | {sizes[lvl]}
            scored = []
            for c in sorted(cands):
                iou = _level_best_iou(boxes, c, *grid)
                scored.append((_fitness(np.maximum(floor, iou)), -abs(c - sizes[lvl]), c, iou))
            _, _, c, iou = max(scored, key=lambda t: t[:3])
            if c != sizes[lvl]:
                sizes[lvl], best[lvl], moved = c, iou, True
        if not moved:
            break
    return sizes, _fitness(np.max(best, axis=0))


def fit_anchor_sizes(
    sides: Sequence[float] | np.ndarray,
    n_levels: int = N_LEVELS,
    *,
    boxes: Tensor | np.ndarray | None = None,
    image_size: int | None = None,
    start: Sequence[int] = DEFAULT_ANCHOR_SIZES,
    source: str | Path = "the training set",
) -> tuple[int, ...]:
    """Anchor sizes (one per FPN level, sorted, strictly increasing ints >= 1) fitted to box sides.

    sides: sqrt(w * h) of the training boxes at the run's image size  # [N]
    Method, as YOLO's autoanchor (k-means on the label sizes, then anchors evolved to reach more
    labels), in two steps:
    1. 1-D k-means with n_levels clusters on log(side), so that a box twice too big and one half
       too big weigh the same, as they do for IoU; started at the quantiles (i + 0.5) / n_levels,
       so deterministic without a seed; Lloyd iterations until no centre moves. A level spans the
       scales s, s*2^(1/3), s*2^(2/3): its size is the centre / 2^(1/3), putting the middle scale
       on the centre. Rounded, and raised where needed to stay strictly increasing.
    2. Only with `boxes` (xyxy at the run's size  # [N, 4]) and `image_size`: k-means ignores the
       strides (P6 at 160 px has one anchor every 53 px and reaches few 30 px boxes whatever its
       size), so each level's size is then searched in turn on the real anchor grid (sizes
       2^(k/8), kept strictly increasing), maximizing the boxes reached at IoU >= 0.5, then the
       summed best IoU; passes repeat until nothing moves. Started from the k-means sizes and
       from `start` (the config's sizes, if n_levels long); the better end wins, so the result
       never reaches fewer boxes than `start`. At most FIT_MAX_BOXES boxes
       (a seeded sample) are used.
    InputError when there are no boxes (source names the file in the message).
    """
    if isinstance(n_levels, bool) or not isinstance(n_levels, int) or n_levels < 1:
        raise InputError(f"n_levels must be a positive integer, got {n_levels!r}")
    sides = np.asarray(sides, np.float64).reshape(-1)
    log_sides = np.log(sides[sides > 0])  # a side of 0 carries no size
    if log_sides.size == 0:
        raise InputError(f"model.anchor_sizes=auto: {source} has no boxes")
    centres = np.quantile(log_sides, (np.arange(n_levels) + 0.5) / n_levels)
    for _ in range(KMEANS_ITERS):
        cluster = np.abs(log_sides[:, None] - centres[None, :]).argmin(1)  # [N]
        new = np.array(
            [
                log_sides[cluster == k].mean() if (cluster == k).any() else c
                for k, c in enumerate(centres)
            ]
        )
        if np.allclose(new, centres):
            break
        centres = new
    sizes: list[int] = []
    for c in np.sort(centres):
        size = max(1, round(math.exp(c) / 2 ** (1 / 3)))
        sizes.append(max(size, sizes[-1] + 1) if sizes else size)
    if boxes is None or image_size is None:
        return tuple(sizes)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) > FIT_MAX_BOXES:
        boxes = boxes[np.random.default_rng(0).permutation(len(boxes))[:FIT_MAX_BOXES]]
    starts = [sizes]
    if len(start) == n_levels and all(b > a for a, b in zip(start, start[1:])):
        starts.append(list(start))
    fits = [_descend(boxes, image_size, list(start)) for start in starts]
    return tuple(max(fits, key=lambda f: f[1])[0])
