"""Import a Pascal VOC or YOLO detection set as COCO jsons (one per split), images left in place.

Box conventions (the part converters get wrong):
- VOC: the devkit gives boxes as 1-based, inclusive pixel indices, so (1, 1, W, H) is the whole
  image: x0 = xmin - 1, y0 = ymin - 1, x1 = xmax, y1 = ymax in COCO's continuous coordinates
  (detectron2's pascal_voc.py reads them the same way). A box with xmax <= xmin or ymax <= ymin
  in the file is empty (a click without a drag), though the convention would make xmax == xmin a
  1 px wide box.
- YOLO: `class cx cy w h`, normalised by the image's width and height (read from the image file's
  header); a line with more than 5 numbers is a polygon (`class x1 y1 x2 y2 ...`), whose bounds
  are the box. Label files sit where ultralytics looks for them: the image path with its last
  `images` folder replaced by `labels` and the suffix by `.txt`; no label file = no objects.
`globox` was tried for the parsing and is not used: it reads VOC boxes without the -1 (one pixel
off), stops the whole set with a bare AssertionError on an inverted box, names no file in its
parse errors and finds YOLO images by one suffix only (tests/data/test_convert.py shows each).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from focalbench.data.coco import BOX_TOLERANCE_PX, check_data
from focalbench.data.layouts import (
    BAD_BOXES,
    FORMATS,
    ImportReport,
    SourceImage,
    read_source,
)
from focalbench.errors import InputError
from focalbench.utils import atomic_write_text


# ---- both ------------------------------------------------------------------------------------
def _clean_box(im: SourceImage, cls: str, box, bad_boxes: str, report: ImportReport):
    """COCO xywh of a box clipped to its image, or None when it is dropped (counted)."""
    x0, y0, x1, y1 = box
    kind = None
    if x1 <= x0 or y1 <= y0:
        kind = "empty_box"
    elif (
        min(x0, y0) < -BOX_TOLERANCE_PX
        or x1 > im.width + BOX_TOLERANCE_PX
        or (y1 > im.height + BOX_TOLERANCE_PX)
    ):
        kind = "box_outside_image"
    if kind:
        example = (
            f"{im.where}: {cls} box xyxy {[round(c, 2) for c in box]} in a "
            f"{im.width}x{im.height} image"
        )
        if bad_boxes == "error":
            raise InputError(f"{example}: {kind}; bad_boxes=fix clips/drops such boxes instead")
        report.add(kind, example)
    # within the tolerance overhang is rounding: clipped silently, as the loader does
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, im.width), min(y1, im.height)
    if x1 <= x0 or y1 <= y0:
        return None
    return [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)]


def _to_coco(
    images: dict[str, SourceImage], names: list[str], bad_boxes: str, report: ImportReport
):
    """COCO image and annotation entries per image key; ids follow the sorted keys, so an image
    and its boxes have the same ids in every split."""
    cat_id = {name: i for i, name in enumerate(names, 1)}
    report.class_counts = dict.fromkeys(names, 0)
    coco_images, coco_anns = {}, {}
    for image_id, (key, im) in enumerate(sorted(images.items()), 1):
        rel = Path(os.path.relpath(os.path.abspath(im.path), report.images_dir)).as_posix()
        coco_images[key] = {
            "id": image_id,
            "file_name": rel,
            "width": im.width,
            "height": im.height,
        }
        coco_anns[key] = []
        for cls, box in im.objects:
            if cls not in cat_id:
                report.add("unknown_class", f"{im.where}: class {cls!r} not in {names}")
                continue
            xywh = _clean_box(im, cls, box, bad_boxes, report)
            if xywh is not None:
                report.class_counts[cls] += 1
                coco_anns[key].append(
                    {
                        "image_id": image_id,
                        "category_id": cat_id[cls],
                        "bbox": xywh,
                        "area": round(xywh[2] * xywh[3], 3),
                        "iscrowd": 0,
                    }
                )
    for ann_id, ann in enumerate((a for k in sorted(coco_anns) for a in coco_anns[k]), 1):
        ann["id"] = ann_id
    return coco_images, coco_anns


def import_dataset(
    fmt: str,
    src: Path | str,
    out: Path | str,
    *,
    val_frac: float = 0.2,
    seed: int = 0,
    classes: list[str] | None = None,
    bad_boxes: str = "fix",
) -> ImportReport:
    """Write `out/<split>.json` (COCO) for each split of a VOC or YOLO set; return the report.

    Splits: VOC's ImageSets/Main/{train,val,trainval,test}.txt that exist, YOLO's data.yaml
    train/val/test. Without train and val (VOC) or without val (YOLO), val is a seeded draw of
    val_frac of trainval, else all but test images (VOC), or of train (YOLO); no val with
    val_frac=0. Images stay where they are: every `file_name` is relative to
    `report.images_dir` (JPEGImages for VOC, the folder holding all split images for YOLO),
    which `data.images` must name. Category ids are 1.. in the order of `classes`, else sorted
    VOC class names, else data.yaml's names; image and box ids are the same in every split.
    Degenerate/outside boxes: bad_boxes=fix drops/clips and counts them, error raises. Unknown
    classes, unparsable files, missing images are always counted and left out.
    InputError: bad option, a folder of neither layout, no image imported, or (with
    bad_boxes=error) the first bad box, naming its file.
    """
    src, out = Path(src), Path(out)
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose from {list(FORMATS)}")
    if bad_boxes not in BAD_BOXES:
        raise InputError(f"bad_boxes={bad_boxes!r}; choose from {list(BAD_BOXES)}")
    if (
        isinstance(val_frac, bool)
        or not isinstance(val_frac, int | float)
        or not (0 <= val_frac < 1)
    ):
        raise InputError(f"val_frac={val_frac!r} must be a number in [0, 1)")
    if classes is not None and (not classes or len(set(classes)) != len(classes)):
        raise InputError(f"classes={classes!r} must be a non-empty list of distinct names")
    if not src.exists():
        raise InputError(f"{src}: source folder not found")
    report = ImportReport(fmt, src, out)
    names, splits, images = read_source(fmt, src, val_frac, seed, classes, report)
    if not images:
        first = next(iter(report.examples.values()), ["no images listed"])[0]
        raise InputError(f"{src}: no image could be imported; {first}")
    names = list(classes) if classes is not None else names
    # absolute, but symlinks not followed: a symlinked image stays under the images folder
    parents = [os.path.abspath(im.path.parent) for im in images.values()]
    report.images_dir = Path(os.path.commonpath(parents))
    coco_images, coco_anns = _to_coco(images, names, bad_boxes, report)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    categories = [{"id": i, "name": n, "supercategory": "none"} for i, n in enumerate(names, 1)]
    for split, keys in splits.items():
        keys = sorted({k for k in keys if k in images})
        info = {
            "focalbench_import": {
                "format": fmt,
                "source": str(src.resolve()),
                "split": split,
                "images_dir": str(report.images_dir),
                "val_frac": val_frac,
                "seed": seed,
            }
        }
        data = {
            "info": info,
            "licenses": [],
            "images": [coco_images[k] for k in keys],
            "annotations": [a for k in keys for a in coco_anns[k]],
            "categories": categories,
        }
        path = out / f"{split}.json"
        check = check_data(data, path, report.images_dir)
        assert check.ok, f"import wrote a json that fails data check: {check.to_lines()}"
        atomic_write_text(path, json.dumps(data, separators=(",", ":")))
        report.splits[split] = path
        report.split_sizes[split] = (len(data["images"]), len(data["annotations"]))
    return report
