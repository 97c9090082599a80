"""COCO json files: loading with one-line errors, a checker counting problems, seeded subsets.

A COCO dataset file is a JSON object with `images`, `annotations` and `categories` lists
(https://cocodataset.org/#format-data). Image `file_name`s are relative to an images folder that
the caller passes separately, as with the official COCO downloads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from focalbench.errors import InputError
from focalbench.utils import atomic_write_text

MAX_EXAMPLES = 3
# COCO boxes are floats taken from polygon extremes; overhanging the image by less than a pixel is
# rounding, not a labelling error, so it is not reported.
BOX_TOLERANCE_PX = 1.0
# Problem kinds in report order, with the one-line meaning printed by `data check`.
PROBLEM_KINDS: dict[str, str] = {
    "schema": "missing keys or wrong types",
    "duplicate_image_id": "image ids used more than once",
    "duplicate_annotation_id": "annotation ids used more than once",
    "duplicate_category_id": "category ids used more than once",
    "unknown_image_id": "annotations whose image_id is not an image",
    "unknown_category_id": "annotations whose category_id is not a category",
    "missing_image_file": "images whose file is not in the images folder",
    "box_outside_image": f"boxes reaching more than {BOX_TOLERANCE_PX:g} px outside their image",
    "empty_box": "boxes with zero or negative width or height",
}
# Kinds a loader can repair on its own (clip to the image, drop empty boxes); the others are fatal.
REPAIRABLE_KINDS = frozenset({"box_outside_image", "empty_box"})


def load_coco_json(path: Path | str) -> dict[str, Any]:
    """Read a COCO dataset json. InputError (naming the file) if it is missing, unreadable, not
    valid JSON (e.g. truncated), or not a JSON object with at least one of images/annotations/
    categories (a COCO *results* file is a list, and is refused here).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: annotation file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, expected a COCO annotation .json file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read annotation file ({e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            f"{path}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno}); truncated file?"
        ) from None
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} & data.keys():
        got = "a list (a COCO results file?)" if isinstance(data, list) else type(data).__name__
        raise InputError(
            f"{path}: not a COCO dataset: expected an object with images/annotations/categories, "
            f"got {got}"
        )
    return data


class ProblemTally:
    """What a report of problems has: counts[kind] and the first examples[kind], one line each;
    `kinds` (a class attribute) names the valid kinds in report order. Shared by CheckReport and
    the importers' ImportReport."""

    kinds: ClassVar[Mapping[str, str]]
    counts: dict[str, int]
    examples: dict[str, list[str]]

    @property
    def ok(self) -> bool:
        return not self.counts

    def add(self, kind: str, example: str) -> None:
        assert kind in self.kinds, f"unknown problem kind {kind!r}"
        self.counts[kind] = self.counts.get(kind, 0) + 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append(example)


@dataclass
class CheckReport(ProblemTally):
    """What `check_coco` found. `counts[kind]` is the number of problems of that kind (kinds are
    the keys of PROBLEM_KINDS; absent means none), `examples[kind]` the first few, one line each.
    """

    path: Path
    n_images: int = 0
    n_annotations: int = 0
    n_categories: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    kinds: ClassVar[Mapping[str, str]] = PROBLEM_KINDS

    def first_problem(self, skip: frozenset[str] = frozenset()) -> str | None:
        """'kind (n): first example' for the first kind (in PROBLEM_KINDS order) not in skip."""
        for kind in PROBLEM_KINDS:
            if kind in self.counts and kind not in skip:
                return f"{kind} ({self.counts[kind]}): {self.examples[kind][0]}"
        return None

    def to_lines(self) -> list[str]:
        lines = [
            f"{self.path}: {self.n_images} images, {self.n_annotations} annotations, "
            f"{self.n_categories} categories"
        ]
        if self.ok:
            return [*lines, "ok: no problems found"]
        lines.append(f"{sum(self.counts.values())} problems:")
        for kind, meaning in PROBLEM_KINDS.items():
            if kind in self.counts:
                lines.append(f"  {kind}: {self.counts[kind]} ({meaning})")
                lines += [f"    e.g. {ex}" for ex in self.examples[kind]]
        return lines


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _where(section: str, i: int, item: Any) -> str:
    """'annotations[4] (id 17)': position plus id when there is one, for example lines."""
    item_id = item.get("id") if isinstance(item, dict) else None
    return f"{section}[{i}]" + (f" (id {item_id})" if item_id is not None else "")


# Required fields per section: name -> (test, expected-type words for the message).
_IS_POS_INT = (lambda v: _is_int(v) and v > 0, "a positive int")
_FIELDS: dict[str, dict[str, tuple[Any, str]]] = {
    "images": {
        "id": (_is_int, "an int"),
        "file_name": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
        "width": _IS_POS_INT,
        "height": _IS_POS_INT,
    },
    "annotations": {
        "id": (_is_int, "an int"),
        "image_id": (_is_int, "an int"),
        "category_id": (_is_int, "an int"),
        "bbox": (
            lambda v: isinstance(v, list) and len(v) == 4 and all(_is_num(x) for x in v),
            "[x, y, w, h] numbers",
        ),
        # COCOeval reads `area` to sort ground truth into small/medium/large.
        "area": (_is_num, "a number"),
    },
    "categories": {"id": (_is_int, "an int"), "name": (lambda v: isinstance(v, str), "a string")},
}


def _valid_items(data: dict[str, Any], section: str, report: CheckReport) -> list[dict[str, Any]]:
    """The items of one top-level list that pass the schema; the others are reported."""
    if section not in data:
        report.add("schema", f"top-level key {section!r} is missing")
        return []
    items = data[section]
    if not isinstance(items, list):
        report.add("schema", f"{section!r} is {type(items).__name__}, expected a list")
        return []
    good = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            report.add("schema", f"{section}[{i}] is {type(item).__name__}, expected an object")
            continue
        bad = None
        for key, (test, expected) in _FIELDS[section].items():
            if key not in item:
                bad = f"{_where(section, i, item)}: missing {key!r}"
            elif not test(item[key]):
                bad = f"{_where(section, i, item)}: {key!r} is {item[key]!r}, expected {expected}"
            if bad:
                break
        if bad is None and section == "annotations" and item.get("iscrowd", 0) not in (0, 1):
            bad = f"{_where(section, i, item)}: 'iscrowd' is {item['iscrowd']!r}, expected 0 or 1"
        if bad:
            report.add("schema", bad)
        else:
            good.append(item)
    return good


def _duplicates(items: list[dict[str, Any]], kind: str, section: str, report: CheckReport) -> None:
    seen: set[int] = set()
    for item in items:
        if item["id"] in seen:
            report.add(kind, f"{section} id {item['id']} used again")
        seen.add(item["id"])


def check_data(data: dict[str, Any], path: Path, images: Path | None = None) -> CheckReport:
    """check_coco on an already loaded json (the loader and subset_coco load it only once)."""
    report = CheckReport(path=Path(path))
    imgs = _valid_items(data, "images", report)
    anns = _valid_items(data, "annotations", report)
    cats = _valid_items(data, "categories", report)
    report.n_images, report.n_annotations, report.n_categories = len(imgs), len(anns), len(cats)
    _duplicates(imgs, "duplicate_image_id", "image", report)
    _duplicates(anns, "duplicate_annotation_id", "annotation", report)
    _duplicates(cats, "duplicate_category_id", "category", report)

    img_by_id = {im["id"]: im for im in imgs}
    cat_ids = {c["id"] for c in cats}
    for ann in anns:
        where = f"annotation id {ann['id']} (image {ann['image_id']})"
        if ann["category_id"] not in cat_ids:
            report.add("unknown_category_id", f"{where}: category_id {ann['category_id']}")
        im = img_by_id.get(ann["image_id"])
        if im is None:
            report.add("unknown_image_id", f"annotation id {ann['id']}: image_id {ann['image_id']}")
        x, y, w, h = ann["bbox"]
        if w <= 0 or h <= 0:
            report.add("empty_box", f"{where}: bbox {ann['bbox']}")
        elif im is not None and (
            x < -BOX_TOLERANCE_PX
            or y < -BOX_TOLERANCE_PX
            or x + w > im["width"] + BOX_TOLERANCE_PX
            or y + h > im["height"] + BOX_TOLERANCE_PX
        ):
            report.add(
                "box_outside_image",
                f"{where}: bbox {ann['bbox']} in a {im['width']}x{im['height']} image",
            )

    if images is not None:
        images = Path(images)
        if not images.is_dir():
            raise InputError(f"{images}: images folder not found")
        for im in imgs:
            if not (images / im["file_name"]).is_file():
                report.add("missing_image_file", f"image id {im['id']}: {images / im['file_name']}")
    return report


def check_coco(ann: Path | str, images: Path | str | None = None) -> CheckReport:
    """Check a COCO dataset json (and, given the images folder, that every image file exists).

    Reports schema errors, duplicate image/annotation/category ids, annotations with unknown image
    or category ids, missing image files, boxes outside their image and zero/negative-size boxes.
    InputError only when the file itself cannot be used (see load_coco_json) or `images` is not a
    folder; everything else is counted in the report (`report.ok` is False when anything was found).
    """
    return check_data(load_coco_json(ann), Path(ann), None if images is None else Path(images))


def _subset_out_path(out: Path) -> Path:
    """`out` may be a folder (annotations.json is written inside, as synthesize does) or a .json."""
    return out if out.suffix == ".json" else out / "annotations.json"


def subset_coco(
    ann: Path | str,
    images: Path | str,
    out: Path | str,
    n: int,
    categories: list[str] | None = None,
    seed: int = 0,
) -> Path:
    """Write a COCO json holding a seeded random subset of n images; return its path.

    Semantics:
    - Without `categories`: n images drawn from all images, including those without annotations
      (as in COCO val, they count as false-positive-only images in evaluation).
    - With `categories` (names): n images drawn from those with at least one non-crowd annotation
      of these categories; only their annotations (crowd ones too: COCOeval uses them as ignore
      regions) and only these categories are kept. Category ids stay the original COCO ids.
    - The draw depends only on (seed, set of eligible image ids), not on the file's order; images
      are written in id order.
    - Images are referenced, not copied: `file_name` stays relative to `images`, which the caller
      passes again to the loader; the folder is also recorded in info.focalbench_subset for
      provenance. The chosen images must exist there.
    - `out` is a folder (annotations.json is written in it) or a path ending in .json.
    InputError: unknown category name (lists the valid ones), n < 1 or more than the eligible
    images, an empty result, fatal check_coco problems in the source, or missing image files.
    """
    ann, images, out = Path(ann), Path(images), Path(out)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"subset n must be an integer >= 1, got {n!r}")
    if not images.is_dir():
        raise InputError(f"{images}: images folder not found")
    data = load_coco_json(ann)
    problem = check_data(data, ann).first_problem(skip=REPAIRABLE_KINDS)
    if problem:
        raise InputError(f"{ann}: {problem}; run `focalbench data check {ann}` for the report")

    cats = sorted(data["categories"], key=lambda c: c["id"])
    if categories is not None:
        by_name = {c["name"]: c for c in cats}
        wanted = [name.strip() for name in categories]
        unknown = [name for name in wanted if name not in by_name]
        if unknown or not wanted:
            what = f"unknown categories {unknown}" if unknown else "empty category list"
            raise InputError(f"{ann}: {what}; choose from {[c['name'] for c in cats]}")
        cats = [c for c in cats if c["name"] in set(wanted)]
    keep_cats = {c["id"] for c in cats}
    anns = [a for a in data["annotations"] if a["category_id"] in keep_cats]
    if categories is None:
        eligible = sorted(im["id"] for im in data["images"])
    else:
        eligible = sorted({a["image_id"] for a in anns if not a.get("iscrowd", 0)})
    if not eligible:
        what = "no images" if categories is None else f"no images with {[c['name'] for c in cats]}"
        raise InputError(f"{ann}: {what}; nothing to subset")
    if n > len(eligible):
        raise InputError(f"subset n={n} but {ann} has only {len(eligible)} eligible images")

    rng = np.random.default_rng(seed)
    chosen = {eligible[i] for i in rng.permutation(len(eligible))[:n]}
    imgs = sorted((im for im in data["images"] if im["id"] in chosen), key=lambda im: im["id"])
    missing = [im["file_name"] for im in imgs if not (images / im["file_name"]).is_file()]
    if missing:
        raise InputError(
            f"{images}: {len(missing)} of the {n} chosen image files are missing, e.g. {missing[0]}"
        )
    info = dict(data.get("info") or {})
    info["focalbench_subset"] = {
        "source": str(ann.resolve()),
        "images_dir": str(images.resolve()),
        "n": n,
        "categories": None if categories is None else [c["name"] for c in cats],
        "seed": seed,
    }
    result = {
        "info": info,
        "licenses": data.get("licenses", []),
        "images": imgs,
        "annotations": sorted((a for a in anns if a["image_id"] in chosen), key=lambda a: a["id"]),
        "categories": cats,
    }
    path = _subset_out_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    # written then renamed, so a reader never sees a half-written json
    atomic_write_text(path, json.dumps(result, separators=(",", ":")))
    return path
