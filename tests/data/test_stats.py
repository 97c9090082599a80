"""dataset_stats on a hand-built json: counts recounted here, box sizes resized by hand as
CocoDetection does, COCOeval's size classes from `area`, the advice thresholds, the plot."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from focalbench.data.anchors import unreached_share
from focalbench.data.stats import dataset_stats, plot_stats
from focalbench.errors import InputError

S = 100
# image 1 is 200 x 100 (x scales by 0.5 at S = 100), image 2 is 50 x 80 (x by 2, y by 1.25)
IMAGES = [
    {"id": 1, "file_name": "a.png", "width": 200, "height": 100},
    {"id": 2, "file_name": "b.png", "width": 50, "height": 80},
    {"id": 3, "file_name": "c.png", "width": 100, "height": 100},  # no objects
]
# (image, category, xywh, w x h at S = 100 worked out by hand)
BOXES = [
    (1, 1, [0, 0, 40, 30], (20, 30)),
    (1, 1, [100, 50, 60, 40], (30, 40)),
    (1, 1, [10, 10, 20, 20], (10, 20)),
    (1, 2, [50, 20, 100, 60], (50, 60)),
    (1, 3, [150, 0, 50, 100], (25, 100)),
    (2, 1, [0, 0, 10, 8], (20, 10)),
    (2, 1, [5, 5, 20, 16], (40, 20)),
    (2, 1, [20, 40, 25, 40], (50, 50)),
    (2, 2, [0, 0, 50, 80], (100, 100)),
]


def _data(boxes=BOXES):
    anns = [
        {"id": i, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
        for i, (im, c, b, _) in enumerate(boxes, 1)
    ]
    anns.append(
        {"id": 99, "image_id": 2, "category_id": 3, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 1}
    )
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "fish"}]
    return {"images": IMAGES, "annotations": anns, "categories": cats}


@pytest.fixture
def ann(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(_data()))
    return path


def test_counts_objects_and_sizes(ann):
    stats = dataset_stats(ann, image_size=S)
    data = json.loads(ann.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    recount = Counter(names[a["category_id"]] for a in data["annotations"] if not a["iscrowd"])
    assert {c.name: c.count for c in stats.classes} == recount == {"cat": 6, "dog": 2, "fish": 1}
    assert [round(c.share, 4) for c in stats.classes] == [round(n / 9, 4) for n in (6, 2, 1)]
    assert stats.head_tail_ratio == 6.0 and stats.n_boxes == 9 and stats.n_crowd == 1
    assert (stats.objects_mean, stats.objects_median, stats.objects_max) == (3.0, 4.0, 5)
    assert stats.empty_image_share == pytest.approx(1 / 3)

    wh = np.array([r for *_, r in BOXES], float)
    sides = np.sqrt(wh.prod(1))
    assert sorted(stats.sides) == pytest.approx(sorted(sides))
    assert stats.side_quantiles["width"] == pytest.approx(
        np.quantile(wh[:, 0], [0, 0.05, 0.25, 0.5, 0.75, 0.95, 1])
    )
    assert stats.side_quantiles["side"][0] == pytest.approx(200**0.5)
    # COCOeval: the json's area at the original size: 400, 80, 320, 1000 are < 32^2
    assert stats.size_shares_coco == pytest.approx({"small": 4 / 9, "medium": 5 / 9, "large": 0})
    # at 100 px: 600, 200, 200, 800 small; 10000 large
    assert stats.size_shares_run == pytest.approx({"small": 4 / 9, "medium": 4 / 9, "large": 1 / 9})

    corners = [
        (b[0] * S / IMAGES[i - 1]["width"], b[1] * S / IMAGES[i - 1]["height"])
        for i, _, b, _ in BOXES
    ]
    xyxy = torch.tensor([[x, y, x + w, y + h] for (x, y), (w, h) in zip(corners, wh)])
    assert stats.unreached == pytest.approx(unreached_share(xyxy, S))
    assert stats.fitted_unreached <= stats.unreached
    assert any(a.startswith("loss.alpha=inverse_freq") for a in stats.advice)
    assert stats.class_table()[1][0] == ["1", "cat", "6", "66.7%"]
    assert any("head/tail ratio 6.0" in line for line in stats.to_lines())


def test_inverse_freq_threshold_and_no_anchors_without_size(tmp_path):
    boxes = BOXES[:4] + [(2, 2, [1, 1, 4, 4], (8, 5))]  # 3 cats, 2 dogs, no fish
    data = _data(boxes)
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    stats = dataset_stats(path)
    assert stats.head_tail_ratio == float("inf")  # fish has no box: the thinnest tail there is
    assert any("inverse_freq" in a for a in stats.advice)
    data["categories"] = data["categories"][:2]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 3]
    path.write_text(json.dumps(data))
    stats = dataset_stats(path)
    assert stats.head_tail_ratio == 1.5 and stats.advice == []  # below 3
    assert stats.unreached is None and stats.size_shares_run is None
    assert stats.side_quantiles["width"][-1] == 100  # original pixels


def test_plot_is_a_png(ann, tmp_path):
    path = plot_stats(dataset_stats(ann, image_size=S), tmp_path / "stats.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 500


@pytest.mark.parametrize(
    "content, message",
    [
        ("[]", r"bad\.json: not a COCO dataset.*a list"),
        ("{", r"bad\.json: invalid JSON"),
        (json.dumps({**_data(), "categories": []}), r"bad\.json: unknown_category_id"),
    ],
)
def test_not_a_coco_dataset(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        dataset_stats(path, image_size=S)
