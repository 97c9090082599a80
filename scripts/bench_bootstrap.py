"""Benchmark (issue 15): the paired bootstrap of `focalbench compare`, 1000 resamples of mAP +
LaECE0 for two runs on 500 validation images (goal: <= 5 s), against the naive anchor measured in
the same run: re-evaluating each resample from scratch (the resampled set built with its images
repeated, then matching + COCOeval + calibration, numpy backend) on a few resamples, extrapolated.
Also checks that both give the same numbers on those resamples, and times the whole command.

    python scripts/bench_bootstrap.py [--images 500] [--dets 100] [--classes 80] [--boot 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_eval import synthetic  # same synthetic COCO set as the evaluation benchmark

from focalbench.metrics.bootstrap import draw_image_counts, paired_bootstrap
from focalbench.metrics.calibration import calibration_metrics
from focalbench.metrics.coco import coco_eval_numpy
from focalbench.metrics.evaluate import detection_set
from focalbench.metrics.match import DetectionSet, candidates
from focalbench.metrics.resample import ResampledMetrics

METRICS = ("mAP", "laece0")


def worse(dets: list[dict], seed: int = 1) -> list[dict]:
    """Run B: run A's boxes jittered (5% of their size), its scores blurred in logit space (sd
    0.5). Continuous: no two of one image tie (then the naive anchor orders the copies of tied
    detections differently, see resample.py)."""
    rng = np.random.default_rng(seed)
    out = []
    for d in dets:
        x, y, w, h = d["bbox"]
        box = [x + rng.normal(0, 0.05 * w), y + rng.normal(0, 0.05 * h), w, h]
        p = min(max(d["score"], 1e-4), 1 - 1e-4)
        score = float(1 / (1 + np.exp(-(np.log(p / (1 - p)) + rng.normal(0, 0.5)))))
        out.append({**d, "bbox": box, "score": score})
    return out


def repeated(ds: DetectionSet, counts: np.ndarray) -> DetectionSet:
    """The naive resample: image i present counts[i] times (copies adjacent, in image order)."""
    start = np.cumsum(counts) - counts  # first new index of each image's copies

    def copies(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rep = counts[img]
        idx = np.repeat(np.arange(len(img)), rep)
        copy = np.arange(len(idx)) - np.repeat(np.cumsum(rep) - rep, rep)
        return idx, start[img[idx]] + copy

    g, g_img = copies(ds.gt_img)
    d, d_img = copies(ds.dt_img)
    order = np.argsort(d_img, kind="stable")  # detections image by image, input order kept
    d, d_img = d[order], d_img[order]
    return DetectionSet(
        np.arange(int(counts.sum())),
        ds.cat_ids,
        ds.cat_names,
        g_img,
        ds.gt_cat[g],
        ds.gt_box[g],
        ds.gt_area[g],
        ds.gt_crowd[g],
        ds.gt_id[g],
        d_img,
        ds.dt_cat[d],
        ds.dt_box[d],
        ds.dt_score[d],
    )


def naive(ds: DetectionSet, counts: np.ndarray) -> dict[str, float]:
    rep = repeated(ds, counts)
    cand = candidates(rep)
    stats, _ = coco_eval_numpy(rep, cand)
    return {"mAP": stats[0], "laece0": calibration_metrics(rep, cand).laece0}


def time_command(gt: dict, dets_a: list, dets_b: list, n_boot: int) -> float:
    """`focalbench compare` on two run folders, process start and JSON parsing included."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "val.json").write_text(json.dumps(gt))
        for name, dets in (("a", dets_a), ("b", dets_b)):
            (root / name).mkdir()
            (root / name / "detections.json").write_text(json.dumps(dets))
            meta = {"run_id": name, "val_ann": str(root / "val.json")}
            (root / name / "metrics.json").write_text(json.dumps(meta))
        cmd = [sys.executable, "-m", "focalbench", "compare", str(root / "a"), str(root / "b")]
        start = time.perf_counter()
        subprocess.run([*cmd, "--n-boot", str(n_boot), "--json"], check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--dets", type=int, default=100, help="detections per image")
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--boot", type=int, default=1000, help="resamples")
    parser.add_argument("--naive", type=int, default=5, help="resamples for the naive anchor")
    args = parser.parse_args()
    gt, dets_a = synthetic(args.images, args.dets, args.classes)
    rng = np.random.default_rng(2)  # undo the 4-decimal rounding: no ties inside an image
    dets_a = [{**d, "score": min(d["score"] + rng.uniform(1e-6, 1e-4), 1.0)} for d in dets_a]
    dets_b = worse(dets_a)
    ds_a, ds_b = detection_set(gt, dets_a), detection_set(gt, dets_b)
    print(
        f"{args.images} images, {len(gt['annotations'])} gt, {len(dets_a)} detections per run, "
        f"{args.classes} classes; metrics {', '.join(METRICS)}"
    )

    start, cpu = time.perf_counter(), time.process_time()
    runs = [ResampledMetrics(ds_a, METRICS)], [ResampledMetrics(ds_b, METRICS)]
    match_s = time.perf_counter() - start
    result = paired_bootstrap(*runs, METRICS, args.boot, seed=0)
    fast, fast_cpu = time.perf_counter() - start, time.process_time() - cpu

    counts = draw_image_counts(np.random.default_rng(0), args.images, args.naive)
    start, cpu = time.perf_counter(), time.process_time()
    slow = [[naive(ds, c) for c in counts] for ds in (ds_a, ds_b)]
    scale = args.boot / args.naive
    anchor, anchor_cpu = (time.perf_counter() - start) * scale, (time.process_time() - cpu) * scale
    batched = [run(counts) for run in (runs[0][0], runs[1][0])]
    diff = max(
        abs(batched[s][m][i] - slow[s][i][m])
        for s in (0, 1)
        for m in METRICS
        for i in range(args.naive)
    )
    command = time_command(gt, dets_a, dets_b, args.boot)

    print()
    print("| paired bootstrap, 2 runs | wall | CPU | goal |")
    print("|---|---:|---:|---:|")
    print(
        f"| batched: match once per run ({match_s:.2f} s), {args.boot} resamples | "
        f"{fast:.2f} s | {fast_cpu:.2f} s | <= 5 s |"
    )
    print(
        f"| naive anchor: from scratch per resample ({args.naive} timed, "
        f"x{scale:.0f}) | {anchor:.0f} s | {anchor_cpu:.0f} s | |"
    )
    print(f"| `focalbench compare` end to end (process, JSON, validation) | {command:.2f} s | | |")
    print()
    print(
        f"ratio naive/batched: {anchor / fast:.0f}x (wall), {anchor_cpu / fast_cpu:.0f}x (CPU); "
        f"batched = naive on the timed resamples: max |diff| {diff:.1e}"
    )
    for d in result.metrics:
        print(
            f"{d.metric}: A {d.a:.4f}  B {d.b:.4f}  A-B {d.diff:+.4f}  "
            f"95% CI [{d.lo:+.4f}, {d.hi:+.4f}]  P(A wins) {d.p_a_wins:.3f}"
        )


if __name__ == "__main__":
    main()
