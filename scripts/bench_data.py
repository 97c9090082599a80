"""Data-layer speed on one CPU core: synthesis images/s, and loader images/s cold and cache-warm.

    .venv/bin/python scripts/bench_data.py [--images 200] [--image-size 256]

The anchor is issue 3's target: synthesis >= 50 images/s at 256 px on one core. The loader has no
target; a warm epoch should cost far less than the model's step.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from focalbench.data import CocoDetection, collate, synthesize

SYNTH_ANCHOR_IMGS_PER_S = 50.0


def _one_core() -> str:
    """Pin this process to a single core (where the OS allows) and to one torch thread."""
    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"core {core}"
    return "unpinned (no sched_setaffinity), 1 torch thread"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    where = _one_core()
    n, size = args.images, args.image_size

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ann = synthesize(Path(tmp), n_images=n, image_size=size, seed=0)
        synth_s = time.perf_counter() - t0
        rate = n / synth_s
        print(f"[{where}] synthesize {n} images at {size} px: {synth_s:.2f} s")
        print(
            f"  synthesis: {rate:.0f} images/s "
            f"({rate / SYNTH_ANCHOR_IMGS_PER_S:.1f}x the {SYNTH_ANCHOR_IMGS_PER_S:.0f}/s target)"
        )

        t0 = time.perf_counter()
        ds = CocoDetection(ann, Path(tmp) / "images", size, train=True, cache=True)
        print(f"  loader init (json + check_coco + box tables): {time.perf_counter() - t0:.2f} s")
        loader = torch.utils.data.DataLoader(
            ds, batch_size=args.batch_size, shuffle=True, collate_fn=collate
        )
        for label in ("cold (decode + resize)", "warm cache"):
            t0 = time.perf_counter()
            seen = sum(len(images) for images, _ in loader)
            dt = time.perf_counter() - t0
            print(f"  loader, {label}, batch {args.batch_size}: {seen / dt:.0f} images/s")


if __name__ == "__main__":
    main()
