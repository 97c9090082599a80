"""Benchmark (issue 5): `python -m focalbench.metrics.evaluate` (mAP + all calibration metrics)
against pycocotools' mAP alone (load + evaluate + accumulate + summarize), each a fresh process,
process start included, on the same synthetic COCO files written to a temp dir. Prints the wall
times, the ratio (goal: >= 5x) and whether the 12 stats are identical.

    python scripts/bench_eval.py [--images 1000] [--dets 100] [--classes 80] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PYCOCOTOOLS = r"""
import contextlib, io, json, sys
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(sys.argv[1])
    ev = COCOeval(gt, gt.loadRes(sys.argv[2]), "bbox")
    ev.evaluate(); ev.accumulate(); ev.summarize()
print(json.dumps([float(s) for s in ev.stats]))
"""
KEYS = ("mAP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def synthetic(n_images: int, n_dets: int, n_classes: int, seed: int = 0) -> tuple[dict, list]:
    """COCO ground truth (~7 objects per image, 4-300 px, 2% crowd) and n_dets detections per image:
    40% jittered copies of an object (10% with a wrong class, higher scores), 60% random boxes."""
    rng = np.random.default_rng(seed)
    n_obj = rng.poisson(7, n_images)
    img = np.repeat(np.arange(1, n_images + 1), n_obj)  # [G]
    G = len(img)
    wh = np.exp(rng.uniform(np.log(4), np.log(300), (G, 2)))
    xy = rng.uniform(0, 640 - wh)
    gt_box = np.round(np.c_[xy, wh], 2)
    gt_cat = rng.integers(1, n_classes + 1, G)
    crowd = rng.random(G) < 0.02
    anns = [
        {"id": i + 1, "image_id": int(m), "category_id": int(c), "bbox": b, "iscrowd": int(k),
         "area": round(b[2] * b[3] * 0.8, 2)}
        for i, (m, c, b, k) in enumerate(zip(img, gt_cat, gt_box.tolist(), crowd))
    ]  # fmt: skip
    images = [{"id": i, "width": 640, "height": 640} for i in range(1, n_images + 1)]
    cats = [{"id": c, "name": f"class{c}"} for c in range(1, n_classes + 1)]

    D = n_images * n_dets
    d_img = np.repeat(np.arange(1, n_images + 1), n_dets)
    box = np.c_[rng.uniform(0, 560, (D, 2)), np.exp(rng.uniform(np.log(4), np.log(200), (D, 2)))]
    cat = rng.integers(1, n_classes + 1, D)
    score = rng.beta(1, 5, D)
    first = np.r_[0, np.cumsum(n_obj)[:-1]]  # first gt of each image
    copy = (rng.random(D) < 0.4) & (n_obj[d_img - 1] > 0)
    src = first[d_img[copy] - 1] + rng.integers(0, 1 << 30, copy.sum()) % n_obj[d_img[copy] - 1]
    jitter = rng.normal(0, 0.1, (copy.sum(), 4)) * np.c_[gt_box[src, 2:], gt_box[src, 2:]]
    box[copy] = gt_box[src] + jitter
    box[copy, 2:] = np.maximum(box[copy, 2:], 1.0)
    cat[copy] = np.where(rng.random(copy.sum()) < 0.9, gt_cat[src], cat[copy])
    score[copy] = rng.beta(5, 2, copy.sum())
    dets = [
        {"image_id": int(m), "category_id": int(c), "bbox": b, "score": s}
        for m, c, b, s in zip(d_img, cat, np.round(box, 2).tolist(), np.round(score, 4).tolist())
    ]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def run(cmd: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--dets", type=int, default=100, help="detections per image")
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, dets_path = Path(tmp) / "gt.json", Path(tmp) / "dets.json"
        gt, dets = synthetic(args.images, args.dets, args.classes)
        gt_path.write_text(json.dumps(gt))
        dets_path.write_text(json.dumps(dets))
        print(
            f"{args.images} images, {len(gt['annotations'])} gt, {len(dets)} detections, "
            f"{args.classes} classes; {dets_path.stat().st_size / 1e6:.1f} MB of results"
        )
        ref_cmd = [sys.executable, "-c", PYCOCOTOOLS, str(gt_path), str(dets_path)]
        ours_cmd = [sys.executable, "-m", "focalbench.metrics.evaluate", str(gt_path)]
        ours_cmd.append(str(dets_path))
        ref_t, ours_t = [], []
        for _ in range(args.repeats):  # interleaved: load from other processes hits both alike
            t, ref_stats = run(ref_cmd)
            ref_t.append(t)
            t, ours = run(ours_cmd)
            ours_t.append(t)
    ours_stats = [ours[k] for k in KEYS]
    diff = max(abs(a - b) for a, b in zip(ref_stats, ours_stats))
    med = statistics.median
    print(f"(a) pycocotools mAP only      : min {min(ref_t):.2f} s  median {med(ref_t):.2f} s")
    print(f"(b) focalbench mAP+calibration: min {min(ours_t):.2f} s  median {med(ours_t):.2f} s")
    ratios = min(ref_t) / min(ours_t), med(ref_t) / med(ours_t)
    print(f"ratio a/b: {ratios[0]:.1f}x (min)  {ratios[1]:.1f}x (median)  goal >= 5x")
    print(f"12 stats identical: {ref_stats == ours_stats} (max |diff| {diff:.1e})")
    print(
        "  ".join(f"{k} {ours[k]:.4f}" for k in ("mAP", "laece0", "laace0", "lrp", "dece", "brier"))
    )


if __name__ == "__main__":
    main()
