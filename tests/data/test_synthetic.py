"""The embedded dataset, checked from its files alone (json read back, pycocotools, check_coco)."""

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO

from focalbench.data import SYNTH_CATEGORIES, check_coco, synthesize
from focalbench.data.synthetic import PRESETS, draw
from focalbench.errors import InputError


@pytest.fixture(scope="module", params=["easy", "hard"])
def synth200(request, tmp_path_factory) -> Path:
    """200 images at 256 px of each preset: what long-tail and size claims are about."""
    out = tmp_path_factory.mktemp(f"synth-{request.param}")
    return synthesize(out, n_images=200, image_size=256, seed=0, difficulty=request.param)


def _preset(ann: Path):
    return PRESETS[ann.parent.name.split("-")[1].rstrip("0123456789")]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_valid_coco(synth200):
    coco = COCO(str(synth200))
    assert len(coco.getImgIds()) == 200
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == SYNTH_CATEGORIES
    assert all(c["supercategory"] for c in coco.dataset["categories"])
    report = check_coco(synth200, synth200.parent / "images")
    assert report.ok, report.to_lines()
    assert report.n_images == 200 and report.n_categories == len(SYNTH_CATEGORIES)
    assert len(list((synth200.parent / "images").glob("*.png"))) == 200


def test_long_tailed_categories(synth200):
    data = json.loads(synth200.read_text())
    counts = Counter(a["category_id"] for a in data["annotations"])
    assert set(counts) == set(range(1, len(SYNTH_CATEGORIES) + 1)), counts
    freq = _preset(synth200).category_freq  # head/tail 8x (easy), 20x (hard)
    assert max(counts.values()) >= 0.5 * max(freq) / min(freq) * min(counts.values()), counts


def test_sizes_cover_coco_small_medium_large(synth200):
    data = json.loads(synth200.read_text())
    areas = [a["bbox"][2] * a["bbox"][3] for a in data["annotations"]]
    for a, ann in zip(areas, data["annotations"], strict=True):
        assert ann["area"] == pytest.approx(a, abs=0.01)
    n = len(areas)
    small = sum(a < 32**2 for a in areas)
    large = sum(a > 96**2 for a in areas)
    # Each range holds a real share of the objects, not a stray one.
    assert small > 0.1 * n and large > 0.03 * n and n - small - large > 0.1 * n, (small, large, n)


def test_several_objects_per_image_and_partial_occlusion(synth200):
    data = json.loads(synth200.read_text())
    by_image: dict[int, list[list[float]]] = {}
    for a in data["annotations"]:  # written in drawing order
        by_image.setdefault(a["image_id"], []).append(a["bbox"])
    per_image = [len(by_image.get(im["id"], [])) for im in data["images"]]
    preset = _preset(synth200)
    assert min(per_image) >= 1 and preset.max_objects - 2 <= max(per_image) <= preset.max_objects
    overlapping, worst = 0, 0.0
    for boxes in by_image.values():
        for i, (x, y, w, h) in enumerate(boxes):
            hidden = 0.0  # share of box i under later objects' boxes
            for x2, y2, w2, h2 in boxes[i + 1 :]:
                iw = min(x + w, x2 + w2) - max(x, x2)
                ih = min(y + h, y2 + h2) - max(y, y2)
                if iw > 0 and ih > 0:
                    overlapping += 1
                    hidden += iw * ih / (w * h)
            worst = max(worst, hidden)
    assert overlapping >= (50 if preset.p_overlap > 0.3 else 10)  # occlusion is common ...
    assert worst < preset.max_occluded + 0.05  # ... but partial: no object is mostly hidden


def test_boxes_inside_image(synth200):
    data = json.loads(synth200.read_text())
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        assert w >= 3 and h >= 3 and x >= 0 and y >= 0 and x + w <= 256 and y + h <= 256, a


def test_same_args_byte_identical_other_seed_differs(tmp_path):
    a = _files(synthesize(tmp_path / "a", n_images=4, image_size=64, seed=3).parent)
    b = _files(synthesize(tmp_path / "b", n_images=4, image_size=64, seed=3).parent)
    c = _files(synthesize(tmp_path / "c", n_images=4, image_size=64, seed=4).parent)
    assert len(a) == 5 and a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a)


# sha256 over (relative path, bytes) of every file, in sorted order, computed from the generator as
# it was before presets (issue 14): `hard` must keep drawing exactly those files
HARD_HASHES = {
    (12, 160, 7): "64081f9b6ab02594542cc4fa44570ad447e512ac545b3afc904278858a692067",
    (5, 96, 10003): "5c42333c82f99acf456fd4828ed9d83ab6f2837f80c334f00096a7c46860cbdc",
}


@pytest.mark.parametrize(("n", "size", "seed"), sorted(HARD_HASHES))
def test_hard_is_the_original_set_byte_for_byte(tmp_path, n, size, seed):
    synthesize(tmp_path, n_images=n, image_size=size, seed=seed, difficulty="hard")
    digest = hashlib.sha256()
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(tmp_path)).encode())
            digest.update(path.read_bytes())
    assert digest.hexdigest() == HARD_HASHES[(n, size, seed)]


def test_easy_is_the_default_and_draw_matches_the_files(tmp_path):
    a = _files(synthesize(tmp_path / "a", n_images=2, image_size=64).parent)
    b = _files(synthesize(tmp_path / "b", n_images=2, image_size=64, difficulty="easy").parent)
    assert a == b
    hard = _files(synthesize(tmp_path / "c", n_images=2, image_size=64, difficulty="hard").parent)
    assert hard["images/000001.png"] != a["images/000001.png"]
    img, objects = draw(0, 1, 64)  # what focalbench pretrain crops from
    with Image.open(tmp_path / "a" / "images" / "000001.png") as written:
        assert img.tobytes() == written.tobytes()
    anns = json.loads((tmp_path / "a" / "annotations.json").read_text())["annotations"]
    assert [(c + 1, box) for c, box in objects] == [
        (a["category_id"], a["bbox"]) for a in anns if a["image_id"] == 2
    ]


def test_image_i_does_not_depend_on_n(tmp_path):
    few = synthesize(tmp_path / "few", n_images=2, image_size=64)
    many = synthesize(tmp_path / "many", n_images=5, image_size=64)
    for name in ("000000.png", "000001.png"):
        assert (few.parent / "images" / name).read_bytes() == (
            many.parent / "images" / name
        ).read_bytes()
    anns_few = json.loads(few.read_text())["annotations"]
    anns_many = json.loads(many.read_text())["annotations"]
    assert anns_few == [a for a in anns_many if a["image_id"] <= 2]


def test_image_size_is_a_parameter(tmp_path):
    path = synthesize(tmp_path, n_images=1, image_size=96)
    im = json.loads(path.read_text())["images"][0]
    assert (im["width"], im["height"]) == (96, 96)
    with Image.open(tmp_path / "images" / im["file_name"]) as img:
        assert img.size == (96, 96) and img.mode == "RGB"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_images": 0}, "n_images"),
        ({"image_size": 16}, "image_size"),
        ({"seed": -1}, "seed"),
        (
            {"difficulty": "medium"},
            r"difficulty='medium' is unknown; choose from \['easy', 'hard'\]",
        ),
    ],
)
def test_bad_arguments(tmp_path, kwargs, field):
    with pytest.raises(InputError, match=field):
        synthesize(tmp_path, **kwargs)
