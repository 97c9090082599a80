"""Anchor reach: the grid is the model's own, best IoUs equal a brute force, and fitted sizes reach
the tiny boxes the default sizes miss (worked out by hand)."""

import numpy as np
import pytest
import torch

from focalbench.data import anchors
from focalbench.data.anchors import (
    DEFAULT_ANCHOR_SIZES,
    anchor_grid,
    best_anchor_iou,
    feature_shapes,
    fit_anchor_sizes,
    unreached_share,
)
from focalbench.errors import InputError


def _random_boxes(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, generator=g) * size
    wh = torch.exp(torch.rand(n, 2, generator=g) * np.log(size / 2)) + 1  # 2 .. size/2 px
    return torch.cat([centre - wh / 2, centre + wh / 2], 1).clamp(0, size)  # [N, 4]


@pytest.mark.parametrize("size", [64, 100, 160])
def test_grid_is_the_models(size):
    """The anchors FocalRetinaNet matches against, from a real forward of its transform, backbone
    and anchor generator (at 160 px P6/P7 have strides 53 and 80, not 64 and 128)."""
    from focalbench.config import LossCfg, RetinaNetCfg
    from focalbench.models.retinanet import build_retinanet

    sizes = (10, 21, 40, 80, 150)
    cfg = RetinaNetCfg(backbone="resnet18", fpn_channels=32, head_convs=0, anchor_sizes=sizes)
    model = build_retinanet(cfg, LossCfg(), 2, size).eval()
    with torch.no_grad():
        images, _ = model.transform([torch.rand(3, size, size)])
        features = list(model.backbone(images.tensors).values())
        expected = model.anchor_generator(images, features)[0]
    assert [f.shape[-1] for f in features] == feature_shapes(size)
    assert torch.equal(anchor_grid(size, sizes), expected)


def _brute_best_iou(boxes: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Best IoU per box, one box at a time, by the textbook formula."""
    best = []
    for x0, y0, x1, y1 in boxes:
        iw = np.clip(np.minimum(x1, grid[:, 2]) - np.maximum(x0, grid[:, 0]), 0, None)
        ih = np.clip(np.minimum(y1, grid[:, 3]) - np.maximum(y0, grid[:, 1]), 0, None)
        inter = iw * ih
        union = (x1 - x0) * (y1 - y0) + (grid[:, 2] - grid[:, 0]) * (grid[:, 3] - grid[:, 1])
        best.append((inter / (union - inter)).max())
    return np.array(best)


def test_best_iou_matches_brute_force_across_chunks(monkeypatch):
    size, sizes = 96, (12, 24, 48, 96, 192)
    boxes = _random_boxes(300, size)
    monkeypatch.setattr(anchors, "IOU_CHUNK", 7 * len(anchor_grid(size, sizes)))  # 43 chunks
    got = best_anchor_iou(boxes, size, sizes)
    brute = _brute_best_iou(boxes.double().numpy(), anchor_grid(size, sizes).double().numpy())
    np.testing.assert_allclose(got.numpy(), brute, atol=1e-5)
    assert unreached_share(boxes, size, sizes) == pytest.approx((brute < 0.5).mean())
    assert np.isnan(unreached_share(torch.zeros(0, 4), size, sizes))


@pytest.mark.parametrize("size, sizes", [(64, (5, 9, 17, 33, 64)), (160, DEFAULT_ANCHOR_SIZES)])
def test_fast_level_search_equals_the_grid(size, sizes):
    """The fit's shortcut (nearest grid point per level) gives the grid's best IoU."""
    boxes = _random_boxes(400, size, seed=1)
    padded = -(-size // 32) * 32
    per_level = [
        torch.from_numpy(anchors._level_best_iou(boxes.double().numpy(), s, padded // n, n))
        for s, n in zip(sizes, feature_shapes(size), strict=True)
    ]
    torch.testing.assert_close(
        torch.stack(per_level).amax(0).float(),
        best_anchor_iou(boxes, size, sizes),
        atol=1e-5,
        rtol=0,
    )


def test_fitted_sizes_reach_tiny_boxes_the_default_misses():
    """64 px images, 8 x 8 boxes centred on P3 grid points (multiples of 8).
    Default sizes: P3's smallest anchors have area 16^2 (all ratios), so the best IoU is
    64/256 = 0.25 and no box is reached. k-means: every side is 8, so the centre is 8 and the
    level size 8 / 2^(1/3) = 6.3 -> 6, then 7, 8, 9, 10 to stay increasing. P3 then has scales
    6, int(7.56) = 7, int(9.52) = 9; torchvision rounds the 7 px square to +-round(3.5) = +-4:
    an 8 x 8 anchor on each grid point, IoU 1, nothing unreached."""
    centres = torch.tensor([[8.0, 8.0], [16.0, 40.0], [48.0, 24.0], [56.0, 56.0]])
    boxes = torch.cat([centres - 4, centres + 4], 1)
    sides = np.full(len(boxes), 8.0)
    assert unreached_share(boxes, 64) == 1.0
    assert best_anchor_iou(boxes, 64).tolist() == pytest.approx([0.25] * 4)
    fitted = fit_anchor_sizes(sides)
    assert fitted == (6, 7, 8, 9, 10)
    assert unreached_share(boxes, 64, fitted) == 0.0
    searched = fit_anchor_sizes(sides, boxes=boxes, image_size=64)
    assert unreached_share(boxes, 64, searched) == 0.0


def test_search_never_reaches_fewer_boxes_than_its_start():
    size = 160
    boxes = _random_boxes(500, size, seed=2)
    side = ((boxes[:, 2:] - boxes[:, :2]).prod(1)).sqrt().numpy()
    for start in (DEFAULT_ANCHOR_SIZES, (8, 16, 32, 64, 128)):
        fitted = fit_anchor_sizes(side, boxes=boxes, image_size=size, start=start)
        assert list(fitted) == sorted(set(fitted)) and min(fitted) >= 1
        assert unreached_share(boxes, size, fitted) <= unreached_share(boxes, size, start) + 1e-9
    assert fitted == fit_anchor_sizes(side, boxes=boxes, image_size=size, start=start)


@pytest.mark.parametrize(
    "sides, expected",
    [([3.0] * 5, (2, 3, 4, 5, 6)), ([0.2, 0.3], (1, 2, 3, 4, 5)), ([10, 20, 40, 80, 160], None)],
)
def test_fit_gives_increasing_ints(sides, expected):
    fitted = fit_anchor_sizes(sides)
    assert all(isinstance(s, int) and s >= 1 for s in fitted)
    assert all(b > a for a, b in zip(fitted, fitted[1:]))
    if expected:
        assert fitted == expected
    else:  # one cluster per side: side / 2^(1/3)
        assert fitted == tuple(round(s / 2 ** (1 / 3)) for s in sides)


def test_fit_without_boxes_names_the_file():
    with pytest.raises(InputError, match=r"model\.anchor_sizes=auto: train\.json has no boxes"):
        fit_anchor_sizes([], source="train.json")
    with pytest.raises(InputError, match="n_levels must be a positive integer, got 0"):
        fit_anchor_sizes([4.0], n_levels=0)
