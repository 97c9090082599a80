"""Forward+backward time of every focalbench loss vs BCE and torchvision's focal loss.

    python scripts/bench_losses.py [--shape 120000 80] [--reps 5] [--devices cpu cuda]

All losses run with reduction="sum" on [N, C] logits (dense-detector scale: ~120k anchors x 80
classes). Anchors and candidates are timed in the same run, interleaved rep by rep, so a busy
machine slows all of them alike; the table reports medians and ratios to the two anchors.
Goal (issue 4): sigmoid focal <= 1.3x BCE and no slower than torchvision.

On a busy CPU (load above the core count) the chunked losses suffer from OpenMP spin-waits far
more than BCE does (see focalbench/losses/_common.py); the header prints the load, and
OMP_WAIT_POLICY=PASSIVE makes such runs comparable.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss

from focalbench.losses import (
    bce_loss,
    ce_loss,
    distribution_focal_loss,
    quality_focal_loss,
    sigmoid_focal_loss,
    softmax_focal_loss,
    varifocal_loss,
)

ANCHORS = ("BCE (F.binary_cross_entropy_with_logits)", "torchvision sigmoid_focal_loss")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=2, default=[120_000, 80], metavar=("N", "C"))
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--devices", nargs="+", default=None, help="default: cpu, plus cuda when available"
    )
    return parser


def make_cases(n: int, c: int, device: torch.device) -> dict[str, Callable[[Tensor], Tensor]]:
    """name -> loss of the logits [N, C] as a scalar (reduction="sum")."""
    g = torch.Generator(device="cpu").manual_seed(0)
    pos = torch.rand(n, c, generator=g) < 0.01  # ~1% positives, like anchor one-hot targets
    binary = pos.float().to(device)  # [N, C]
    iou = (pos * (0.1 + 0.9 * torch.rand(n, c, generator=g))).to(device)  # IoU at positives
    labels = torch.randint(0, c, (n,), generator=g).to(device)  # [N]
    distance = (torch.rand(n, generator=g) * (c - 1)).to(device)  # [N] in [0, C-1]
    return {
        ANCHORS[0]: lambda x: F.binary_cross_entropy_with_logits(x, binary, reduction="sum"),
        ANCHORS[1]: lambda x: tv_sigmoid_focal_loss(x, binary, 0.25, 2.0, "sum"),
        "focal (alpha .25, gamma 2)": lambda x: sigmoid_focal_loss(x, binary, 0.25, 2.0, "sum"),
        "focal (alpha .25, gamma .5)": lambda x: sigmoid_focal_loss(x, binary, 0.25, 0.5, "sum"),
        "focal (alpha off, gamma 0)": lambda x: sigmoid_focal_loss(x, binary, None, 0.0, "sum"),
        "bce": lambda x: bce_loss(x, binary, "sum"),
        "qfl (beta 2)": lambda x: quality_focal_loss(x, iou, 2.0, "sum"),
        "vfl (alpha .75, gamma 2)": lambda x: varifocal_loss(x, iou, reduction="sum"),
        "softmax_focal (gamma 2)": lambda x: softmax_focal_loss(x, labels, reduction="sum"),
        "ce": lambda x: ce_loss(x, labels, "sum"),
        "dfl (C bins)": lambda x: distribution_focal_loss(x, distance, "sum"),
    }


def time_all(
    cases: dict[str, Callable[[Tensor], Tensor]], logits: Tensor, reps: int, warmup: int
) -> dict[str, float]:
    """Median fwd+bwd milliseconds per case, cases interleaved within each repetition."""
    sync = torch.cuda.synchronize if logits.device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for rep in range(warmup + reps):
        for name, fn in cases.items():
            x = logits.detach().requires_grad_()
            sync()
            start = time.perf_counter()
            fn(x).backward()
            sync()
            if rep >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def print_table(device: torch.device, shape: tuple[int, int], medians: dict[str, float]) -> None:
    bce, tv = medians[ANCHORS[0]], medians[ANCHORS[1]]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    threads = ""
    if device.type == "cpu":
        load = os.getloadavg()[0]
        wait = os.environ.get("OMP_WAIT_POLICY", "unset")
        threads = f", {torch.get_num_threads()} threads, load {load:.1f}, OMP_WAIT_POLICY {wait}"
    print(f"\n{name}{threads}: fwd+bwd, reduction='sum', logits {list(shape)} float32")
    print(f"{'loss':44s} {'ms':>9s} {'x BCE':>7s} {'x torchvision':>14s}")
    for case, ms in medians.items():
        print(f"{case:44s} {ms:9.2f} {ms / bce:7.2f} {ms / tv:14.2f}")


def main(args: argparse.Namespace) -> None:
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    n, c = args.shape
    for dev in devices:
        device = torch.device(dev)
        logits = torch.randn(n, c, generator=torch.Generator().manual_seed(1)).mul_(3).to(device)
        cases = make_cases(n, c, device)
        reps = args.reps if device.type == "cpu" else 5 * args.reps
        print_table(device, (n, c), time_all(cases, logits, reps, args.warmup))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
