"""Procedural COCO ground truth and the detections of a detector of chosen quality, for the
bootstrap tests: continuous scores (no score ties between images, so repeating an image is
unambiguous), crowd regions, 'area' unlike the box, all three box sizes, a class without gt."""

from __future__ import annotations

import numpy as np


def ground_truth(rng: np.random.Generator, n_img: int = 60, n_cat: int = 4) -> dict:
    cats = [{"id": 10 * (c + 1), "name": f"c{c}"} for c in range(n_cat + 1)]  # last: no gt
    images = [{"id": int(3 + 7 * i)} for i in rng.permutation(n_img)]  # sparse, unsorted ids
    anns = []
    for img in images:
        for _ in range(rng.poisson(4)):
            size = rng.choice([rng.uniform(8, 30), rng.uniform(30, 90), rng.uniform(90, 250)], 2)
            x, y = rng.uniform(0, 400, 2)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img["id"],
                    "category_id": cats[rng.integers(0, n_cat)]["id"],
                    "bbox": [float(x), float(y), float(size[0]), float(size[1])],
                    "area": float(size[0] * size[1] * rng.uniform(0.5, 1.0)),
                    "iscrowd": int(rng.random() < 0.03),
                }
            )
    return {"images": images, "annotations": anns, "categories": cats}


def detections(
    rng: np.random.Generator,
    gt: dict,
    jitter: float = 0.12,
    miss: float = 0.25,
    n_fp: float = 6.0,
    sharp: float = 4.0,
) -> list[dict]:
    """A detector: each object found with probability 1 - miss (box jitter relative to its size,
    score ~ Beta(sharp, 2), 10% with a wrong class, 20% with a duplicate), plus Poisson(n_fp)
    background boxes per image with scores ~ Beta(1, 4)."""
    cats = [c["id"] for c in gt["categories"]]
    dets = []

    def add(img: int, cat: int, box, score: float) -> None:
        w, h = max(box[2], 1.0), max(box[3], 1.0)
        dets.append(
            {
                "image_id": img,
                "category_id": cat,
                "bbox": [box[0], box[1], w, h],
                "score": float(np.clip(score, 1e-6, 1 - 1e-6)),
            }
        )

    for a in gt["annotations"]:
        if rng.random() < miss:
            continue
        x, y, w, h = a["bbox"]
        box = np.array([x, y, w, h]) + rng.normal(0, jitter, 4) * np.array([w, h, w, h])
        cat = a["category_id"] if rng.random() > 0.1 else cats[rng.integers(0, len(cats))]
        score = rng.beta(sharp, 2)
        add(a["image_id"], cat, box.tolist(), score)
        if rng.random() < 0.2:
            add(a["image_id"], cat, (box + rng.normal(0, 2, 4)).tolist(), score * rng.random())
    for img in gt["images"]:
        for _ in range(rng.poisson(n_fp)):
            box = [*rng.uniform(0, 400, 2), *rng.uniform(5, 150, 2)]
            add(img["id"], cats[rng.integers(0, len(cats))], box, rng.beta(1, 4))
    return dets


def repeat_images(gt: dict, dets: list[dict], counts: dict[int, int]) -> tuple[dict, list[dict]]:
    """The COCO set with image id i present counts[i] times: copy c gets id i * 1000 + c (copies
    of one image are adjacent in id order, hence in COCOeval's order of equal scores) and its
    annotations new ids."""
    images, anns, out = [], [], []
    for img in sorted(gt["images"], key=lambda im: im["id"]):
        for c in range(counts.get(img["id"], 0)):
            images.append({**img, "id": img["id"] * 1000 + c})
    for c in range(max(counts.values(), default=0)):
        for a in gt["annotations"]:
            if counts.get(a["image_id"], 0) > c:
                anns.append({**a, "id": len(anns) + 1, "image_id": a["image_id"] * 1000 + c})
        for d in dets:
            if counts.get(d["image_id"], 0) > c:
                out.append({**d, "image_id": d["image_id"] * 1000 + c})
    return {**gt, "images": images, "annotations": anns}, out
