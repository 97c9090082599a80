"""The embedded dataset: procedurally drawn shapes written as a COCO-format json plus PNG files.

It exists so that every command works without COCO, and it is built to exercise what the losses
under comparison care about (issue 3, item 2):

- class imbalance: a long-tailed category frequency (`Preset.category_freq`);
- scale: many objects are COCO-small (< 32^2 px), some medium and large;
- easy negatives: textured backgrounds (gradients, stripes, blotches, checkers, grain, lines);
- hard negatives: unannotated distractors in the same colours (outline-only polygons, pac-men,
  elongated ellipses, hexagons, lumpy blobs);
- partial occlusion: items overlap, but no item loses more than `Preset.max_occluded` of its box.

Two presets (`difficulty`, issue 14): `easy`, the default, is sized so that a warm-started
detector learns it well in a few CPU minutes (a milder tail, objects from 10 % of the image side
up, calmer textures, fewer distractors and overlaps); `hard` is the original set (head/tail 20x,
objects from 4.5 % of the side, busy textures), byte-identical to what focalbench drew before
presets existed.

Shapes are told apart by outline, never by colour (colours are random), and drawn without
anti-aliasing so edges stay clean enough for a small RetinaNet trained from scratch on CPU.

Every image draws from its own generator seeded with (seed, index), so image i is the same
whatever n_images is, and the same arguments give byte-identical files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from focalbench.data.presets import (  # noqa: F401  (DIFFICULTIES, PRESETS: part of this API)
    DEFAULT_DIFFICULTY,
    DIFFICULTIES,
    MIN_IMAGE_SIZE,
    PRESETS,
    SYNTH_CATEGORIES,
    Preset,
    get_preset,
)
from focalbench.data.shapes import (
    background,
    contrasting_colour,
    shape_outline,
    unit_polygon,
)
from focalbench.errors import InputError
from focalbench.utils import atomic_write_text


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _occlusion_ok(
    box: np.ndarray, boxes: list[np.ndarray], covered: list[float], max_occluded: float
) -> bool:
    """True if drawing `box` on top leaves every earlier box at most `max_occluded` covered.

    Boxes are xyxy; coverage is measured on boxes (a cheap, conservative proxy for pixels) and
    accumulated over later items.
    """
    for prev, cov in zip(boxes, covered, strict=True):
        iw = min(box[2], prev[2]) - max(box[0], prev[0])
        ih = min(box[3], prev[3]) - max(box[1], prev[1])
        if iw > 0 and ih > 0:
            area = (prev[2] - prev[0]) * (prev[3] - prev[1])
            if cov + iw * ih / area > max_occluded:
                return False
    return True


def _place(
    rng: np.random.Generator,
    w: float,
    h: float,
    size: int,
    boxes: list[np.ndarray],
    covered: list[float],
    near: bool,
    max_occluded: float,
) -> np.ndarray | None:
    """An xyxy w x h box inside the image, or None when no try keeps occlusion partial."""
    for _ in range(10):
        if near and boxes:
            # Centre the new box on a random point of an earlier box's border: a partial overlap.
            prev = boxes[int(rng.integers(len(boxes)))]
            cx = rng.uniform(prev[0], prev[2])
            cy = (
                rng.choice([prev[1], prev[3]])
                if rng.random() < 0.5
                else rng.uniform(prev[1], prev[3])
            )
            x0 = float(np.clip(cx - w / 2, 0, size - w))
            y0 = float(np.clip(cy - h / 2, 0, size - h))
        else:
            x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
        box = np.array([x0, y0, x0 + w, y0 + h])  # xyxy
        if _occlusion_ok(box, boxes, covered, max_occluded):
            return box
    return None


def _draw_image(
    rng: np.random.Generator, size: int, preset: Preset
) -> tuple[Image.Image, list[tuple[int, list]]]:
    """One image and its objects as (category index, bbox xywh) pairs; distractors go unlisted."""
    p = preset
    img = Image.fromarray(background(rng, size, p))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, p.max_lines + 1))):  # clutter: thin lines behind all
        pts = rng.uniform(0, size, 4)
        draw.line(pts.tolist(), fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=1)

    n_obj = int(rng.integers(1, p.max_objects + 1))
    n_dis = int(rng.integers(0, p.max_distractors + 1))
    # The first item is an object and is always placed (nothing to occlude yet): no image is empty.
    rest = rng.permutation(np.r_[np.ones(n_obj - 1, bool), np.zeros(n_dis, bool)])
    is_obj = np.r_[True, rest]
    boxes: list[np.ndarray] = []  # xyxy of every item drawn so far
    covered: list[float] = []
    objects: list[tuple[int, list]] = []
    for obj in is_obj:
        if obj:
            cat = int(rng.choice(len(SYNTH_CATEGORIES), p=np.array(p.category_freq)))
            kind = SYNTH_CATEGORIES[cat]
            span = _log_uniform(rng, p.obj_size[0] * size, p.obj_size[1] * size)
        else:
            cat = -1
            kind = ("outline", "pacman", "ellipse", "hexagon", "blob")[int(rng.integers(5))]
            span = _log_uniform(rng, p.distractor_size[0] * size, p.distractor_size[1] * size)
        if kind in ("circle", "ring", "pacman"):
            # Integer boxes: PIL ellipses fill whole pixels, so the box is exact.
            w = max(3, round(span))
            h = max(3, round(span * math.exp(rng.uniform(-0.15, 0.15))))
            verts = None
        else:
            verts = shape_outline(rng, unit_polygon(rng, kind), span)
            w, h = verts.max(axis=0)
        near = bool(obj) and rng.random() < p.p_overlap
        box = _place(rng, w, h, size, boxes, covered, near, p.max_occluded)
        if box is None:
            continue
        if verts is None:
            box = np.round(box)
        # Record how much of each earlier box this item hides.
        for j, prev in enumerate(boxes):
            iw = min(box[2], prev[2]) - max(box[0], prev[0])
            ih = min(box[3], prev[3]) - max(box[1], prev[1])
            if iw > 0 and ih > 0:
                covered[j] += iw * ih / ((prev[2] - prev[0]) * (prev[3] - prev[1]))
        boxes.append(box)
        covered.append(0.0)

        # Contrast with what is drawn there already (earlier items too), so outlines stay apart.
        region = img.crop((int(box[0]), int(box[1]), math.ceil(box[2]), math.ceil(box[3])))
        fill = contrasting_colour(rng, np.asarray(region).reshape(-1, 3).mean(0))
        ellipse_box = [box[0], box[1], box[2] - 1, box[3] - 1]
        if kind == "circle":
            draw.ellipse(ellipse_box, fill=fill)
        elif kind == "ring":
            draw.ellipse(ellipse_box, outline=fill, width=max(2, round(0.2 * min(w, h))))
        elif kind == "pacman":
            start = float(rng.uniform(0, 360))
            draw.pieslice(ellipse_box, start + 50, start + 310, fill=fill)
        elif kind == "outline":
            draw.polygon([tuple(p) for p in verts + box[:2]], outline=fill, width=2)
        else:
            draw.polygon([tuple(p) for p in verts + box[:2]], fill=fill)
        if obj:
            x, y = round(float(box[0]), 2), round(float(box[1]), 2)
            objects.append((cat, [x, y, round(float(w), 2), round(float(h), 2)]))

    # Sensor-like grain at half resolution: texture everywhere while PNGs stay compressible.
    half = (size + 1) // 2
    grain = rng.integers(-p.grain, p.grain + 1, (half, half, 1), dtype=np.int16)
    grain = np.repeat(np.repeat(grain, 2, axis=0), 2, axis=1)[:size, :size]
    arr = np.clip(np.asarray(img, np.int16) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(arr), objects


def draw(
    seed: int, index: int, image_size: int, difficulty: str = DEFAULT_DIFFICULTY
) -> tuple[Image.Image, list[tuple[int, list]]]:
    """Image `index` of the set drawn with `seed`, in memory: (RGB image, [(category index 0..5,
    bbox xywh)]). It is the image synthesize() writes as file `index` (focalbench pretrain reads
    shape crops from it without writing files)."""
    return _draw_image(np.random.default_rng([seed, index]), image_size, get_preset(difficulty))


def synthesize(
    out_dir: Path,
    n_images: int = 200,
    image_size: int = 256,
    seed: int = 0,
    difficulty: str = DEFAULT_DIFFICULTY,
) -> Path:
    """Write the synthetic dataset: out_dir/annotations.json and out_dir/images/000000.png, ...

    COCO conventions: ids start at 1; file_name is relative to out_dir/images (pass that folder as
    the images dir); bbox is [x, y, w, h] in pixels; area is the box area w*h (there are no masks);
    iscrowd is 0. Returns the json path. Same arguments give byte-identical files. `difficulty`
    names a preset (PRESETS: easy | hard); hard gives the files of focalbench before presets.
    """
    preset = get_preset(difficulty)
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise InputError(f"synthetic n_images must be an integer >= 1, got {n_images!r}")
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int)
        or image_size < MIN_IMAGE_SIZE
    ):
        raise InputError(
            f"synthetic image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"synthetic seed must be an integer >= 0, got {seed!r}")
    out_dir = Path(out_dir)
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)

    images, annotations = [], []
    for i in range(n_images):
        rng = np.random.default_rng([seed, i])
        img, objects = _draw_image(rng, image_size, preset)
        name = f"{i:06d}.png"
        # compress_level=1: zlib's fast setting; the grain makes higher levels cost time, not bytes.
        img.save(img_dir / name, format="PNG", compress_level=1)
        images.append({"id": i + 1, "file_name": name, "width": image_size, "height": image_size})
        for cat, (x, y, w, h) in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": cat + 1,
                    "bbox": [x, y, w, h],
                    "area": round(w * h, 2),
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {
            "description": "focalbench synthetic shapes",
            "version": "1",
            "seed": seed,
            "image_size": image_size,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": k + 1, "name": name, "supercategory": "shape"}
            for k, name in enumerate(SYNTH_CATEGORIES)
        ],
    }
    ann_path = out_dir / "annotations.json"
    # written then renamed, so a reader never sees a half-written json
    atomic_write_text(ann_path, json.dumps(coco, separators=(",", ":")))
    return ann_path
