"""The two layouts `focalbench data import` reads, Pascal VOC and YOLO, as (class names, split ->
image keys, image key -> SourceImage), and the ImportReport that counts what was wrong on the way.
convert.py turns them into COCO jsons. Box conventions: see convert.py.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import yaml
from PIL import Image

from focalbench.data.coco import BOX_TOLERANCE_PX, ProblemTally
from focalbench.errors import InputError

FORMATS = ("voc", "yolo")
BAD_BOXES = ("fix", "error")
VOC_SPLITS = ("train", "val", "trainval", "test")  # ImageSets/Main/<split>.txt
YOLO_SPLITS = ("train", "val", "test")  # keys of data.yaml
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Problem kinds in report order. Boxes ones: bad_boxes=fix clips/drops, error raises. The others
# are always counted and skipped (an image whose labels cannot all be read is left out whole).
IMPORT_PROBLEMS: dict[str, str] = {
    "unparsable_file": "annotation files that do not parse (their image is left out)",
    "missing_image_file": "annotations whose image file is missing or unreadable (left out)",
    "missing_annotation_file": "split entries with no annotation file (left out)",
    "size_mismatch": "XML <size> differs from the image file (the file's size is used)",
    "unknown_class": "boxes of a class not in the class list (dropped)",
    "empty_box": "boxes with zero or negative width or height (dropped)",
    "box_outside_image": f"boxes reaching more than {BOX_TOLERANCE_PX:g} px outside (clipped)",
}
BOX_KINDS = frozenset({"empty_box", "box_outside_image"})


@dataclass
class ImportReport(ProblemTally):
    """What import_dataset wrote and found. `splits[name]` is the json of that split,
    `split_sizes[name]` its (images, boxes); `class_counts` the boxes written per category over all
    distinct images; `counts`/`examples` as in coco.CheckReport, with kinds from IMPORT_PROBLEMS."""

    fmt: str
    src: Path
    out: Path
    images_dir: Path | None = None
    splits: dict[str, Path] = field(default_factory=dict)
    split_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    class_counts: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    kinds: ClassVar[Mapping[str, str]] = IMPORT_PROBLEMS

    def overrides(self) -> str:
        """The overrides that train on the import: `data=coco data.ann=... data.images=...`."""
        words = ["data=coco", f"data.ann={self.splits.get('train', self.splits.get('trainval'))}"]
        if "val" in self.splits:
            words.append(f"data.val_ann={self.splits['val']}")
        return " ".join([*words, f"data.images={self.images_dir}"])

    def to_lines(self) -> list[str]:
        total = sum(self.class_counts.values())
        lines = [f"{self.src} ({self.fmt}): {total} boxes in {len(self.class_counts)} classes"]
        for name, (n_img, n_box) in self.split_sizes.items():
            lines.append(f"  {name}: {self.splits[name]} ({n_img} images, {n_box} boxes)")
        lines += [f"  class {name}: {n}" for name, n in self.class_counts.items()]
        lines.append(f"images folder: {self.images_dir}")
        if self.counts:
            lines.append(f"{sum(self.counts.values())} problems:")
        for kind, meaning in IMPORT_PROBLEMS.items():
            if kind in self.counts:
                lines.append(f"  {kind}: {self.counts[kind]} ({meaning})")
                lines += [f"    e.g. {ex}" for ex in self.examples[kind]]
        return [*lines, f"train with: {self.overrides()}"]


@dataclass
class SourceImage:
    path: Path
    width: int
    height: int
    objects: list[tuple[str, tuple[float, float, float, float]]]  # (class, xyxy in pixels)
    where: str  # the annotation file, for messages


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as im:  # reads the header only
            return im.size
    except OSError:  # missing, unreadable or not an image (PIL.UnidentifiedImageError)
        return None


def _find_layout(src: Path, marker: str) -> Path | None:
    """src itself or the one folder up to two levels down (VOCdevkit/VOC2007) holding marker."""
    if (src / marker).exists():
        return src
    found = sorted(
        {p.parent for p in src.glob(f"*/{marker}")} | {p.parent for p in src.glob(f"*/*/{marker}")}
    )
    return found[0] if len(found) == 1 else None


def _yolo_yaml(src: Path) -> Path | None:
    if src.is_file() and src.suffix in (".yaml", ".yml"):
        return src
    for name in ("data.yaml", "data.yml"):
        if (src / name).is_file():
            return src / name
    yamls = sorted(src.glob("*.yaml"))
    return yamls[0] if len(yamls) == 1 else None


def _draw_val(keys: list[str], val_frac: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded train/val split of keys (sorted first, so the file order does not matter)."""
    keys = sorted(keys)
    n_val = round(len(keys) * val_frac)
    if val_frac > 0 and len(keys) >= 2:
        n_val = min(max(n_val, 1), len(keys) - 1)
    val = {keys[i] for i in np.random.default_rng(seed).permutation(len(keys))[:n_val]}
    return [k for k in keys if k not in val], [k for k in keys if k in val]


# ---- VOC -------------------------------------------------------------------------------------
def _read_voc(
    root: Path, val_frac: float, seed: int, report: ImportReport
) -> tuple[dict[str, list[str]], dict[str, SourceImage]]:
    ann_dir, img_dir = root / "Annotations", root / "JPEGImages"
    if not img_dir.is_dir():
        raise InputError(f"{img_dir}: VOC images folder not found (beside {ann_dir})")
    xmls = {p.stem: p for p in ann_dir.glob("*.xml")}
    by_stem: dict[str, Path] = {}
    for p in sorted(img_dir.iterdir(), key=lambda p: p.suffix.lower() != ".jpg"):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(p.stem, p)  # <id>.jpg first, as the devkit names them
    main = root / "ImageSets" / "Main"
    splits = {}
    for name in VOC_SPLITS:
        if (main / f"{name}.txt").is_file():
            lines = (main / f"{name}.txt").read_text().split("\n")
            splits[name] = [line.split()[0] for line in lines if line.strip()]
    if "train" not in splits and "val" not in splits:
        test = set(splits.get("test", []))
        base = splits.get("trainval") or [s for s in xmls if s not in test]
        splits["train"], val = _draw_val(base, val_frac, seed)
        splits.update({"val": val} if val else {})
    images: dict[str, SourceImage] = {}
    for stem in sorted({s for ids in splits.values() for s in ids}):
        if stem not in xmls:
            report.add("missing_annotation_file", f"{ann_dir / stem}.xml (listed in a split)")
            continue
        im = _read_voc_xml(xmls[stem], by_stem.get(stem, img_dir), report)
        if im is not None:
            images[stem] = im
    return splits, images


def _read_voc_xml(xml: Path, image: Path, report: ImportReport) -> SourceImage | None:
    try:
        root = ET.parse(xml).getroot()
        objects = []
        for obj in root.findall("object"):
            box = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (
                float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")
            )
            if xmax > xmin and ymax > ymin:  # 1-based inclusive -> continuous (module docstring)
                xmin, ymin = xmin - 1, ymin - 1
            objects.append(((obj.findtext("name") or "").strip(), (xmin, ymin, xmax, ymax)))
    except (ET.ParseError, OSError, AttributeError, TypeError, ValueError) as e:
        # AttributeError/TypeError: an object without bndbox or one of its corners
        report.add("unparsable_file", f"{xml}: {type(e).__name__}: {e}")
        return None
    filename = (root.findtext("filename") or "").strip()
    if image.is_dir() and filename:  # no <id>.<image suffix> in the folder: try <filename>
        image = image / filename
    size = _image_size(image) if image.is_file() else None
    if size is None:
        report.add("missing_image_file", f"{xml}: image {image} missing or unreadable")
        return None
    try:  # a missing or zero <size> is common and harmless: the file's size is used anyway
        xml_size = int(float(root.findtext("size/width"))), int(float(root.findtext("size/height")))
    except (TypeError, ValueError):
        xml_size = (0, 0)
    if xml_size not in ((0, 0), size):
        report.add("size_mismatch", f"{xml}: <size> is {xml_size}, image {image} is {size}")
    return SourceImage(image, size[0], size[1], objects, str(xml))


# ---- YOLO ------------------------------------------------------------------------------------
def _yolo_names(data: dict[str, Any], yaml_path: Path) -> list[str]:
    names = data.get("names")
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        return [str(names.get(i, f"class{i}")) for i in range(max(names) + 1)]
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    raise InputError(f"{yaml_path}: 'names' must be a list or an {{id: name}} dict, got {names!r}")


def _yolo_images(entry: Any, key: str, root: Path, yaml_path: Path) -> list[Path]:
    """Image paths of one data.yaml split entry: folders, list files, or a list of them."""
    paths: list[Path] = []
    for e in entry if isinstance(entry, list) else [entry]:
        p = root / str(e)  # an absolute e stays absolute
        if p.is_dir():
            paths += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file() and p.suffix == ".txt":  # ultralytics: lines relative to the list file
            paths += [p.parent / line.strip() for line in p.read_text().split("\n") if line.strip()]
        else:
            raise InputError(f"{yaml_path}: {key}: {e} is neither an image folder nor a .txt list")
    return [Path(os.path.normpath(p)) for p in paths]


def _label_path(image: Path) -> Path:
    s = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"  # as ultralytics
    return Path(sb.join(s.rsplit(sa, 1))).with_suffix(".txt")


def _read_yolo_labels(image: Path, names: list[str], report: ImportReport) -> SourceImage | None:
    size = _image_size(image)
    if size is None:
        report.add("missing_image_file", f"{image}: missing or unreadable")
        return None
    W, H = size
    label = _label_path(image)
    lines = label.read_text().split("\n") if label.is_file() else []
    objects = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            cls, *v = line.split()
            k, v = int(cls), [float(x) for x in v]
            if len(v) == 4:  # cx, cy, w, h
                box = (
                    (v[0] - v[2] / 2) * W,
                    (v[1] - v[3] / 2) * H,
                    (v[0] + v[2] / 2) * W,
                    (v[1] + v[3] / 2) * H,
                )
            elif len(v) >= 6 and len(v) % 2 == 0:  # polygon x1 y1 x2 y2 ...
                box = (min(v[0::2]) * W, min(v[1::2]) * H, max(v[0::2]) * W, max(v[1::2]) * H)
            else:
                raise ValueError(f"{len(v)} numbers after the class, expected 4 or a polygon")
        except ValueError as e:
            report.add("unparsable_file", f"{label}:{n}: {e}")
            return None
        if not 0 <= k < len(names):
            report.add("unknown_class", f"{label}:{n}: class id {k}, names has {len(names)}")
            continue
        objects.append((names[k], box))
    return SourceImage(image, W, H, objects, str(label))


def _read_yolo(
    yaml_path: Path, val_frac: float, seed: int, report: ImportReport
) -> tuple[list[str], dict[str, list[str]], dict[str, SourceImage]]:
    try:
        data = yaml.safe_load(yaml_path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"{yaml_path}: cannot read data.yaml ({e})") from None
    if not isinstance(data, dict) or not data.get("train"):
        raise InputError(f"{yaml_path}: expected a mapping with train (and val, test, names)")
    names = _yolo_names(data, yaml_path)
    root = yaml_path.parent / str(data.get("path") or ".")
    files = {k: _yolo_images(data[k], k, root, yaml_path) for k in YOLO_SPLITS if data.get(k)}
    splits = {k: [str(p) for p in ps] for k, ps in files.items()}
    if "val" not in splits:
        splits["train"], val = _draw_val(splits["train"], val_frac, seed)
        splits.update({"val": val} if val else {})
    images = {}
    for key in sorted({p for ps in splits.values() for p in ps}):
        im = _read_yolo_labels(Path(key), names, report)
        if im is not None:
            images[key] = im
    return names, splits, images


def read_source(
    fmt: str, src: Path, val_frac: float, seed: int, classes: list[str] | None, report
) -> tuple[list[str], dict[str, list[str]], dict[str, SourceImage]]:
    """(class names, split -> image keys, image key -> SourceImage) of a VOC or YOLO folder."""
    voc_root, yaml_path = _find_layout(src, "Annotations"), _yolo_yaml(src)
    if fmt == "voc":
        if voc_root is None:
            hint = " (it holds a YOLO data.yaml: format yolo)" if yaml_path else ""
            raise InputError(f"{src}: not a VOC folder: no Annotations/ here or below{hint}")
        splits, images = _read_voc(voc_root, val_frac, seed, report)
        names = sorted({c for im in images.values() for c, _ in im.objects})
    else:
        if yaml_path is None:
            hint = " (it holds VOC Annotations/: format voc)" if voc_root else ""
            raise InputError(f"{src}: not a YOLO folder: no data.yaml{hint}")
        names, splits, images = _read_yolo(yaml_path, val_frac, seed, report)
        if classes is not None and set(classes) - set(names):
            raise InputError(
                f"classes {sorted(set(classes) - set(names))} not in {yaml_path}; "
                f"choose from {names}"
            )
    return names, splits, images
