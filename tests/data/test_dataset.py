"""CocoDetection on a hand-built 2-image json whose resized boxes are worked out by hand."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from focalbench.data import SYNTH_CATEGORIES, CocoDetection, collate, synthesize
from focalbench.errors import InputError

S = 100
# Image 1 is 200 wide x 100 high: x scales by 100/200 = 0.5, y by 100/100 = 1.
# Image 2 is 50 wide x 80 high: x scales by 100/50 = 2, y by 100/80 = 1.25.
DATA = {
    "images": [
        {"id": 5, "file_name": "wide.png", "width": 200, "height": 100},
        {"id": 2, "file_name": "sub/tall.png", "width": 50, "height": 80},
    ],
    "annotations": [
        # xywh [20,10,40,30] -> xyxy [20,10,60,40] -> x*0.5 -> [10,10,30,40]
        {"id": 1, "image_id": 5, "category_id": 7, "bbox": [20, 10, 40, 30], "area": 1200},
        # xywh [100,50,100,50] -> xyxy [100,50,200,100] -> [50,50,100,100]
        {"id": 2, "image_id": 5, "category_id": 3, "bbox": [100, 50, 100, 50], "area": 5000},
        # crowd: left out of the training targets
        {
            "id": 3,
            "image_id": 5,
            "category_id": 3,
            "bbox": [0, 0, 10, 10],
            "area": 100,
            "iscrowd": 1,
        },
        # xywh [5,8,10,40] -> xyxy [5,8,15,48] -> x*2, y*1.25 -> [10,10,30,60]
        {"id": 4, "image_id": 2, "category_id": 3, "bbox": [5, 8, 10, 40], "area": 400},
    ],
    # listed out of id order on purpose: labels follow sorted ids, 3 -> 0 and 7 -> 1
    "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}],
}


@pytest.fixture
def ds_dir(tmp_path) -> Path:
    """DATA with its images: 'wide' is red on its left half, blue on its right; 'tall' is grey."""
    (tmp_path / "images" / "sub").mkdir(parents=True)
    wide = Image.new("RGB", (200, 100), (0, 0, 255))
    wide.paste((255, 0, 0), (0, 0, 100, 100))
    wide.save(tmp_path / "images" / "wide.png")
    Image.new("RGB", (50, 80), (128, 128, 128)).save(tmp_path / "images" / "sub" / "tall.png")
    (tmp_path / "ann.json").write_text(json.dumps(DATA))
    return tmp_path


def _ds(root: Path, **kw) -> CocoDetection:
    return CocoDetection(root / "ann.json", root / "images", S, **kw)


def test_items_and_metadata(ds_dir):
    ds = _ds(ds_dir)
    assert len(ds) == 2 and ds.image_ids == [2, 5]  # sorted by id
    assert ds.cat_ids == [3, 7] and ds.cat_names == ["three", "seven"] and ds.num_classes == 2
    assert ds.ann_file == ds_dir / "ann.json"

    image, t = ds[1]  # image id 5
    assert image.shape == (3, S, S) and image.dtype == torch.float32
    assert t["image_id"] == 5 and t["orig_size"] == (100, 200)
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
    torch.testing.assert_close(t["boxes"], torch.tensor([[10.0, 10, 30, 40], [50, 50, 100, 100]]))
    assert t["labels"].tolist() == [1, 0]  # crowd annotation 3 is gone
    # red left half, blue right half (bilinear blends only the middle columns)
    assert (
        image[:, :, :45].tolist()
        == torch.tensor([1.0, 0, 0])[:, None, None].expand(3, S, 45).tolist()
    )
    assert (image[2, :, 55:] == 1).all() and (image[0, :, 55:] == 0).all()

    image, t = ds[0]  # image id 2
    assert t["image_id"] == 2 and t["orig_size"] == (80, 50)
    torch.testing.assert_close(t["boxes"], torch.tensor([[10.0, 10, 30, 60]]))
    assert t["labels"].tolist() == [0]
    torch.testing.assert_close(image, torch.full((3, S, S), 128 / 255))


def test_train_flip_is_seeded_and_mirrors_boxes(ds_dir):
    ds = _ds(ds_dir, train=True)
    plain_image, plain = _ds(ds_dir)[1]
    torch.manual_seed(0)
    draws = [ds[1] for _ in range(12)]
    torch.manual_seed(0)
    again = [ds[1] for _ in range(12)]
    flipped = [not torch.equal(t["boxes"], plain["boxes"]) for _, t in draws]
    assert 0 < sum(flipped) < 12
    for (image, t), (image2, t2), flip in zip(draws, again, flipped, strict=True):
        assert torch.equal(image, image2) and torch.equal(t["boxes"], t2["boxes"])
        if flip:  # x1' = S - x2, x2' = S - x1; y unchanged
            torch.testing.assert_close(
                t["boxes"], torch.tensor([[70.0, 10, 90, 40], [0, 50, 50, 100]])
            )
            assert torch.equal(image, plain_image.flip(-1))
        else:
            assert torch.equal(image, plain_image)
        assert t["labels"].tolist() == [1, 0]


def test_cache_keeps_decoded_images(ds_dir):
    cached, uncached = _ds(ds_dir), _ds(ds_dir, cache=False)
    first, _ = cached[0]
    first.mul_(0)  # a caller's in-place edit must not reach the cache
    uncached[0]
    (ds_dir / "images" / "sub" / "tall.png").unlink()
    image, _ = cached[0]
    torch.testing.assert_close(image, torch.full((3, S, S), 128 / 255))
    with pytest.raises(InputError, match="tall.png: image file not found"):
        uncached[0]


def test_collate_keeps_lists(ds_dir):
    loader = torch.utils.data.DataLoader(_ds(ds_dir), batch_size=2, collate_fn=collate)
    images, targets = next(iter(loader))
    assert [im.shape for im in images] == [(3, S, S)] * 2
    assert [t["boxes"].shape for t in targets] == [(1, 4), (2, 4)]
    assert [t["image_id"] for t in targets] == [2, 5]


def test_outside_boxes_clipped_and_empty_boxes_dropped(ds_dir):
    data = json.loads(json.dumps(DATA))
    data["annotations"][0]["bbox"] = [
        190,
        -5,
        30,
        15,
    ]  # xyxy [190,-5,220,10] -> clip [190,0,200,10]
    data["annotations"][1]["bbox"] = [10, 10, 0, 5]  # no width
    (ds_dir / "ann.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="data.bad_boxes=fix"):  # strict by default
        _ds(ds_dir)
    with pytest.warns(UserWarning, match="box_outside_image.*empty_box|empty_box.*box_outside"):
        ds = _ds(ds_dir, repair_boxes=True)
    _, t = ds[1]
    torch.testing.assert_close(t["boxes"], torch.tensor([[95.0, 0, 100, 10]]))
    assert t["labels"].tolist() == [1]


def test_synthetic_set_loads(tmp_path):
    ann = synthesize(tmp_path, n_images=3, image_size=64)
    ds = CocoDetection(ann, tmp_path / "images", 32)
    assert ds.cat_names == SYNTH_CATEGORIES and ds.cat_ids == list(range(1, 7))
    for image, t in ds:
        assert image.shape == (3, 32, 32) and len(t["boxes"]) >= 1
        assert ((t["boxes"] >= 0) & (t["boxes"] <= 32)).all()


def test_missing_or_truncated_json(tmp_path):
    with pytest.raises(InputError, match="nope.json: annotation file not found"):
        CocoDetection(tmp_path / "nope.json", tmp_path, S)
    (tmp_path / "cut.json").write_text(json.dumps(DATA)[:100])
    with pytest.raises(InputError, match="cut.json: invalid JSON"):
        CocoDetection(tmp_path / "cut.json", tmp_path, S)


def test_validate_names_the_first_problem(ds_dir):
    (ds_dir / "images" / "wide.png").unlink()
    with pytest.raises(
        InputError, match=r"ann.json: missing_image_file \(1\): image id 5: .*wide.png"
    ):
        _ds(ds_dir)
    _ds(ds_dir, validate=False)  # without validation the problem shows only on reading that image
    data = json.loads(json.dumps(DATA))
    data["annotations"][0]["category_id"] = 9
    (ds_dir / "ann.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="unknown_category_id"):
        CocoDetection(ds_dir / "ann.json", ds_dir / "images", S, validate=True)


def test_image_size_mismatch_and_bad_image(ds_dir):
    Image.new("RGB", (10, 10)).save(ds_dir / "images" / "wide.png")
    with pytest.raises(InputError, match="wide.png: image is 10x10 but .*ann.json says 200x100"):
        _ds(ds_dir)[1]
    (ds_dir / "images" / "wide.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="wide.png: cannot decode image"):
        _ds(ds_dir)[1]
    with pytest.raises(InputError, match="image_size"):
        CocoDetection(ds_dir / "ann.json", ds_dir / "images", 0)
