"""COCO json loading, the checker (one hand-broken file per problem kind) and seeded subsets."""

import copy
import json
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO

from focalbench.data import check_coco, load_coco_json, subset_coco, synthesize
from focalbench.errors import InputError

GOOD = {
    "images": [
        {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
        {"id": 2, "file_name": "b.png", "width": 20, "height": 20},
    ],
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 30], "area": 1200},
        {"id": 11, "image_id": 1, "category_id": 2, "bbox": [5, 5, 10, 10], "area": 100},
        {
            "id": 12,
            "image_id": 2,
            "category_id": 2,
            "bbox": [1.5, 2, 3, 4],
            "area": 12,
            "iscrowd": 1,
        },
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
}


@pytest.fixture
def coco_dir(tmp_path) -> Path:
    """Image files for GOOD in tmp_path/images."""
    (tmp_path / "images").mkdir()
    for im in GOOD["images"]:
        Image.new("RGB", (im["width"], im["height"])).save(tmp_path / "images" / im["file_name"])
    return tmp_path


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_good_file_is_ok(coco_dir):
    report = check_coco(_write(coco_dir / "good.json", GOOD), coco_dir / "images")
    assert report.ok and report.counts == {} and report.examples == {}
    assert (report.n_images, report.n_annotations, report.n_categories) == (2, 3, 2)
    assert report.to_lines()[-1] == "ok: no problems found"


def _set(section, i, key, value):
    def edit(d):
        d[section][i][key] = value

    return edit


def _dup(section):
    def edit(d):
        d[section].append(copy.deepcopy(d[section][0]))

    return edit


# (edit of GOOD, expected counts, text in the first example)
CASES = {
    "no_categories": (
        lambda d: d.pop("categories"),
        {"schema": 1, "unknown_category_id": 3},
        "'categories' is missing",
    ),
    "images_not_list": (
        lambda d: d.update(images={}),
        {"schema": 1, "unknown_image_id": 3},
        "expected a list",
    ),
    "image_no_width": (
        lambda d: d["images"][1].pop("width"),
        {"schema": 1, "unknown_image_id": 1},
        "images[1] (id 2): missing 'width'",
    ),
    "bbox_is_string": (
        _set("annotations", 0, "bbox", "0,0,4,3"),
        {"schema": 1},
        "annotations[0] (id 10): 'bbox'",
    ),
    "bbox_three_numbers": (
        _set("annotations", 1, "bbox", [1, 2, 3]),
        {"schema": 1},
        "'bbox' is [1, 2, 3]",
    ),
    "no_area": (lambda d: d["annotations"][0].pop("area"), {"schema": 1}, "missing 'area'"),
    "iscrowd_2": (_set("annotations", 0, "iscrowd", 2), {"schema": 1}, "'iscrowd' is 2"),
    "bool_id": (
        _set("categories", 0, "id", True),
        {"schema": 1, "unknown_category_id": 1},
        "categories[0]",
    ),
    "dup_image": (_dup("images"), {"duplicate_image_id": 1}, "image id 1"),
    "dup_annotation": (_dup("annotations"), {"duplicate_annotation_id": 1}, "annotation id 10"),
    "dup_category": (_dup("categories"), {"duplicate_category_id": 1}, "category id 1"),
    "unknown_image": (
        _set("annotations", 1, "image_id", 99),
        {"unknown_image_id": 1},
        "annotation id 11: image_id 99",
    ),
    "unknown_category": (
        _set("annotations", 0, "category_id", 42),
        {"unknown_category_id": 1},
        "category_id 42",
    ),
    "box_outside_right": (
        _set("annotations", 1, "bbox", [35, 5, 10, 10]),
        {"box_outside_image": 1},
        "[35, 5, 10, 10] in a 40x30 image",
    ),
    "box_outside_top": (
        _set("annotations", 1, "bbox", [5, -3, 10, 10]),
        {"box_outside_image": 1},
        "annotation id 11",
    ),
    "zero_width": (
        _set("annotations", 0, "bbox", [1, 1, 0, 5]),
        {"empty_box": 1},
        "bbox [1, 1, 0, 5]",
    ),
    "negative_height": (
        _set("annotations", 2, "bbox", [1, 1, 2, -1]),
        {"empty_box": 1},
        "annotation id 12 (image 2)",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_each_problem_kind(coco_dir, case):
    edit, counts, text = CASES[case]
    data = copy.deepcopy(GOOD)
    edit(data)
    report = check_coco(_write(coco_dir / "bad.json", data), coco_dir / "images")
    assert not report.ok
    assert report.counts == counts
    kind = next(iter(counts))
    assert text in report.examples[kind][0], report.examples
    lines = report.to_lines()
    assert any(line.startswith(f"  {kind}: {counts[kind]} (") for line in lines), lines
    assert all("\n" not in line for line in lines)


def test_missing_image_file_only_checked_with_images(coco_dir):
    (coco_dir / "images" / "b.png").unlink()
    path = _write(coco_dir / "good.json", GOOD)
    assert check_coco(path).ok
    report = check_coco(path, coco_dir / "images")
    assert report.counts == {"missing_image_file": 1}
    assert report.examples["missing_image_file"] == [f"image id 2: {coco_dir / 'images' / 'b.png'}"]


def test_small_overhang_is_rounding_not_a_problem(coco_dir):
    data = copy.deepcopy(GOOD)
    data["annotations"][1]["bbox"] = [-0.5, 0, 40.9, 30.5]
    assert check_coco(_write(coco_dir / "x.json", data)).ok


def test_examples_are_capped_but_counts_are_not(coco_dir):
    data = copy.deepcopy(GOOD)
    data["annotations"] = [
        {"id": k, "image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 1], "area": 0}
        for k in range(5)
    ]
    report = check_coco(_write(coco_dir / "x.json", data))
    assert report.counts == {"empty_box": 5}
    assert len(report.examples["empty_box"]) == 3


def test_images_folder_missing_is_bad_input(coco_dir):
    with pytest.raises(InputError, match="nowhere"):
        check_coco(_write(coco_dir / "good.json", GOOD), coco_dir / "nowhere")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "not found"),
        ('{"images": [{"id": 1, "file_na', "invalid JSON .* line 1 column"),
        ("[]", "not a COCO dataset.*list"),
        ('{"model": "retinanet"}', "not a COCO dataset"),
        ("", "invalid JSON"),
    ],
)
def test_load_bad_files(tmp_path, content, match):
    path = tmp_path / "instances.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=match) as err:
        load_coco_json(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="instances.json"):
        check_coco(path)


def test_load_folder_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        load_coco_json(tmp_path)


# --- subset ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("synth"), n_images=30, image_size=64, seed=1)


def test_subset_keeps_n_images_and_only_their_annotations(synth, tmp_path):
    src = json.loads(synth.read_text())
    out = subset_coco(synth, synth.parent / "images", tmp_path, n=10, seed=0)
    assert out == tmp_path / "annotations.json"
    sub = json.loads(out.read_text())
    kept = {im["id"] for im in sub["images"]}
    assert len(kept) == 10 and kept <= {im["id"] for im in src["images"]}
    assert [im["id"] for im in sub["images"]] == sorted(kept)
    assert sub["annotations"] == [a for a in src["annotations"] if a["image_id"] in kept]
    assert sub["categories"] == src["categories"]
    assert sub["info"]["focalbench_subset"]["images_dir"] == str(
        (synth.parent / "images").resolve()
    )
    assert len(COCO(str(out)).getImgIds()) == 10
    assert check_coco(out, synth.parent / "images").ok


def test_subset_is_seeded(synth, tmp_path):
    images = synth.parent / "images"
    a = subset_coco(synth, images, tmp_path / "a", n=10, seed=5).read_bytes()
    b = subset_coco(synth, images, tmp_path / "b", n=10, seed=5).read_bytes()
    c = subset_coco(synth, images, tmp_path / "c.json", n=10, seed=6).read_bytes()
    assert a == b
    ids = [{im["id"] for im in json.loads(x)["images"]} for x in (a, c)]
    assert ids[0] != ids[1]


def test_subset_category_filter(synth, tmp_path):
    src = json.loads(synth.read_text())
    out = subset_coco(synth, synth.parent / "images", tmp_path, n=5, categories=["ring", " star"])
    sub = json.loads(out.read_text())
    assert [(c["id"], c["name"]) for c in sub["categories"]] == [(4, "star"), (5, "ring")]
    assert sub["annotations"], "filter kept no annotations"
    assert {a["category_id"] for a in sub["annotations"]} <= {4, 5}
    for im in sub["images"]:  # each kept image holds a chosen category, with all of its instances
        mine = [
            a
            for a in src["annotations"]
            if a["image_id"] == im["id"] and a["category_id"] in (4, 5)
        ]
        assert mine and mine == [a for a in sub["annotations"] if a["image_id"] == im["id"]]
    assert sub["info"]["focalbench_subset"]["categories"] == ["star", "ring"]
    COCO(str(out))


def test_subset_without_filter_keeps_images_without_objects(coco_dir, tmp_path):
    data = copy.deepcopy(GOOD)
    data["annotations"] = data["annotations"][:2]  # image 2 now has no annotation
    out = subset_coco(_write(coco_dir / "x.json", data), coco_dir / "images", tmp_path / "o", n=2)
    assert [im["id"] for im in json.loads(out.read_text())["images"]] == [1, 2]
    # With a filter, only images holding a non-crowd instance of the categories are eligible.
    out = subset_coco(
        coco_dir / "x.json", coco_dir / "images", tmp_path / "o", n=1, categories=["dog"]
    )
    assert [im["id"] for im in json.loads(out.read_text())["images"]] == [1]


def test_subset_unknown_category_lists_valid_names(synth, tmp_path):
    with pytest.raises(
        InputError, match=r"unknown categories \['hexagon'\]; choose from \['circle'"
    ):
        subset_coco(synth, synth.parent / "images", tmp_path, n=5, categories=["hexagon", "ring"])


def test_subset_empty_result_is_an_error(coco_dir, tmp_path):
    data = copy.deepcopy(GOOD)
    data["categories"].append({"id": 3, "name": "bird"})
    path = _write(coco_dir / "x.json", data)
    with pytest.raises(InputError, match="no images with \\['bird'\\]"):
        subset_coco(path, coco_dir / "images", tmp_path, n=1, categories=["bird"])
    # crowd-only images are not eligible: image 2's only 'dog' is a crowd
    with pytest.raises(InputError, match="only 1 eligible"):
        subset_coco(path, coco_dir / "images", tmp_path, n=2, categories=["dog"])


@pytest.mark.parametrize("n", [0, 31])
def test_subset_bad_n(synth, tmp_path, n):
    with pytest.raises(InputError, match=f"n={n}|got {n}"):
        subset_coco(synth, synth.parent / "images", tmp_path, n=n)


def test_subset_refuses_broken_source_and_missing_images(coco_dir, tmp_path):
    data = copy.deepcopy(GOOD)
    data["annotations"][0]["category_id"] = 42
    with pytest.raises(InputError, match="unknown_category_id"):
        subset_coco(_write(coco_dir / "x.json", data), coco_dir / "images", tmp_path, n=1)
    (coco_dir / "images" / "a.png").unlink()
    with pytest.raises(InputError, match="missing, e.g. a.png"):
        subset_coco(_write(coco_dir / "y.json", GOOD), coco_dir / "images", tmp_path, n=2)
