"""The one loader for every COCO-format dataset, synthetic or real: a torch Dataset + collate."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from focalbench.data.coco import REPAIRABLE_KINDS, check_data, load_coco_json
from focalbench.errors import InputError

Target = dict[str, Any]


class CocoDetection(torch.utils.data.Dataset):
    """Images resized to S x S with their boxes, from a COCO json and an images folder.

    Each item is (image, target):
      image   float32 [3, S, S] in [0, 1]
      target  {"boxes": float32 [N, 4] xyxy in resized pixels, "labels": int64 [N] in 0..C-1,
               "image_id": int (the COCO id), "orig_size": (h, w) of the original image}

    Resizing does not keep the aspect ratio (x and y scale separately): every image of a batch has
    the same shape, and a prediction maps back to the original image by multiplying x by w/S and
    y by h/S. Labels are contiguous: label k is COCO category `cat_ids[k]` (categories sorted by
    id). Items follow `image_ids` (sorted by id); images without annotations are kept (N = 0).

    Targets leave out crowd annotations (iscrowd=1: COCOeval reads them from the json as ignore
    regions) and boxes left with no width or height once clipped to the image. With train=True the
    image and boxes are flipped left-right with probability 1/2, drawn from torch's global RNG
    (torch.manual_seed makes it repeatable; DataLoader workers get seeds derived from it).

    cache=True keeps each decoded, resized uint8 image in memory (3*S*S bytes per image) after its
    first use. The cache lives in the process that reads the item: with DataLoader workers, use
    persistent_workers=True or it is rebuilt every epoch.

    validate=True runs the checks of check_coco (including that every image file exists) and raises
    InputError on the first fatal problem. Boxes reaching outside their image or with no area are
    fatal too unless repair_boxes=True: then they are clipped or dropped, with a warning (real COCO
    files hold a handful of such boxes; `data.bad_boxes=fix` turns this on).
    """

    def __init__(
        self,
        ann_file: Path | str,
        images_dir: Path | str,
        image_size: int,
        train: bool = False,
        cache: bool = True,
        validate: bool = True,
        repair_boxes: bool = False,
    ) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise InputError(f"image_size must be a positive integer, got {image_size!r}")
        self.ann_file = Path(ann_file)
        self.images_dir = Path(images_dir)
        self.image_size = image_size
        self.train = train
        self.cache = cache
        data = load_coco_json(self.ann_file)
        if validate:
            report = check_data(data, self.ann_file, self.images_dir)
            problem = report.first_problem(skip=REPAIRABLE_KINDS if repair_boxes else ())
            if problem:
                hint = f"run `focalbench data check {self.ann_file}`"
                if any(report.counts.get(k) for k in REPAIRABLE_KINDS) and not repair_boxes:
                    hint += "; data.bad_boxes=fix clips/drops bad boxes instead"
                raise InputError(f"{self.ann_file}: {problem}; {hint}")
            repaired = {k: n for k, n in report.counts.items() if k in REPAIRABLE_KINDS}
            if repaired:
                warnings.warn(
                    f"{self.ann_file}: boxes clipped to their image or dropped: {repaired}",
                    stacklevel=2,
                )

        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.cat_ids: list[int] = [c["id"] for c in cats]
        self.cat_names: list[str] = [c["name"] for c in cats]
        self.num_classes = len(cats)
        images = sorted(data["images"], key=lambda im: im["id"])
        self.image_ids: list[int] = [im["id"] for im in images]
        self._files = [im["file_name"] for im in images]
        self._sizes = [(im["height"], im["width"]) for im in images]  # (h, w)

        label_of = {cid: k for k, cid in enumerate(self.cat_ids)}
        index_of = {iid: i for i, iid in enumerate(self.image_ids)}
        per_image: list[list[tuple[list[float], int]]] = [[] for _ in images]
        for ann in data["annotations"]:
            i = index_of.get(ann["image_id"])
            # Unknown ids only get here with validate=False; such annotations cannot be placed.
            if i is None or ann["category_id"] not in label_of or ann.get("iscrowd", 0):
                continue
            per_image[i].append((ann["bbox"], label_of[ann["category_id"]]))

        S = image_size
        self._boxes: list[np.ndarray] = []  # per image: float32 [N, 4] xyxy in resized pixels
        self._labels: list[np.ndarray] = []  # per image: int64 [N]
        for (h, w), objs in zip(self._sizes, per_image, strict=True):
            xywh = np.array([b for b, _ in objs], np.float64).reshape(-1, 4)
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)  # [N, 4]
            xyxy = xyxy.clip(0, [w, h, w, h]) * [S / w, S / h, S / w, S / h]
            keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
            self._boxes.append(xyxy[keep].astype(np.float32))
            self._labels.append(np.array([lab for _, lab in objs], np.int64)[keep])
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.image_ids)

    def _load(self, i: int) -> np.ndarray:
        """Decode image i and resize it: uint8 [S, S, 3]."""
        path = self.images_dir / self._files[i]
        h, w = self._sizes[i]
        S = self.image_size
        try:
            with Image.open(path) as im:
                if im.size != (w, h):
                    raise InputError(
                        f"{path}: image is {im.size[0]}x{im.size[1]} but {self.ann_file} "
                        f"says {w}x{h} (image id {self.image_ids[i]})"
                    )
                # JPEG only: decode at 1/2, 1/4 or 1/8 scale when that still covers S x S. It makes
                # COCO photos several times faster to read and changes nothing for PNGs.
                im.draft("RGB", (S, S))
                return np.array(im.convert("RGB").resize((S, S), Image.BILINEAR))
        except FileNotFoundError:
            raise InputError(f"{path}: image file not found (listed in {self.ann_file})") from None
        except OSError as e:  # includes PIL.UnidentifiedImageError and truncated files
            raise InputError(f"{path}: cannot decode image ({e})") from None

    def __getitem__(self, i: int) -> tuple[Tensor, Target]:
        arr = self._cache.get(i)
        if arr is None:
            arr = self._load(i)
            if self.cache:
                self._cache[i] = arr
        # The conversion copies, so in-place changes by the caller never reach the cache.
        image = torch.from_numpy(arr).permute(2, 0, 1).contiguous().float().div_(255)  # [3, S, S]
        boxes = torch.tensor(self._boxes[i])  # [N, 4]
        if self.train and torch.rand(()) < 0.5:
            S = self.image_size
            image = image.flip(-1)
            boxes = torch.stack([S - boxes[:, 2], boxes[:, 1], S - boxes[:, 0], boxes[:, 3]], dim=1)
        target = {
            "boxes": boxes,
            "labels": torch.tensor(self._labels[i]),
            "image_id": self.image_ids[i],
            "orig_size": self._sizes[i],
        }
        return image, target


def collate(batch: list[tuple[Tensor, Target]]) -> tuple[list[Tensor], list[Target]]:
    """Keep images and targets as lists (boxes differ in number per image), as detection models
    such as torchvision's RetinaNet take them.
    """
    return [image for image, _ in batch], [target for _, target in batch]
