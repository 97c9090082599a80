"""RetinaNet-R18 train step: focalbench's batched loss head vs torchvision's stock head.

The anchor is the same model with torchvision's own `compute_loss` (sigmoid focal alpha 0.25 gamma
2, a Python loop over images), measured in the same run with identical weights and batch. Goal:
ours <= 1.05x the anchor.

On CUDA the table adds the GPU paths of a real run, each against its anchor: bf16 autocast with
channels_last (both heads), then `train.compile` (torch.compile of backbone and head, inductor) on
top of that. Compilation happens in the warm-up steps, outside the timing.

    python scripts/bench_train_step.py [--reps 5] [--size 256] [--batch 4] [--device cpu|cuda]
        [--profile]   (instead of the table: where the batched head's step spends its time)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchvision.models.detection.retinanet import RetinaNet

from focalbench.config import LossCfg, RetinaNetCfg
from focalbench.models import compile_model
from focalbench.models.retinanet import build_retinanet


def batch(n: int, size: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g).to(device) for _ in range(n)]
    targets = []
    for _ in range(n):
        xy = torch.rand(6, 2, generator=g) * size * 0.7
        wh = 8 + torch.rand(6, 2, generator=g) * size * 0.3
        targets.append(
            {
                "boxes": torch.cat([xy, xy + wh], 1).clamp(max=size - 1).to(device),
                "labels": torch.randint(0, 6, (6,), generator=g).to(device),
            }
        )
    return images, targets


def build(size: int, device: torch.device, stock: bool, amp: bool, compiled: bool):
    loss_cfg = LossCfg(name="focal", alpha=0.25, gamma=2.0, normalization="num_pos_per_image")
    torch.manual_seed(0)  # identical weights in every variant
    model = build_retinanet(RetinaNetCfg(), loss_cfg, 6, size).to(device).train()
    if stock:  # torchvision's head loss
        model.compute_loss = lambda t, h, a: RetinaNet.compute_loss(model, t, h, a)
    if amp:  # what a run does on CUDA
        model = model.to(memory_format=torch.channels_last)
    if compiled:
        compile_model(model)
    return model


def step_time(model, images, targets, reps: int, warmup: int, amp: bool) -> float:
    """Median seconds of one forward + backward + SGD step."""
    device = images[0].device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    times = []
    for i in range(warmup + reps):
        sync()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        if i >= warmup:  # warm-up: allocators, kernel selection, compilation
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def profile(model, images, targets) -> None:
    """The operators that take the most time over three steps (after one warm-up step)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    step_time(model, images, targets, reps=1, warmup=0, amp=False)
    cuda = images[0].device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        step_time(model, images, targets, reps=3, warmup=0, amp=False)
    table = prof.key_averages()
    for key in ("self_cpu_time_total", "self_device_time_total" if cuda else None):
        if key:
            print(table.table(sort_by=key, row_limit=25, max_name_column_width=60))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    images, targets = batch(args.batch, args.size, device)
    if args.profile:
        profile(build(args.size, device, False, False, False), images, targets)
        return
    # (label, stock head, bf16 + channels_last, compiled, the row it is compared with, goal)
    variants = [
        ("torchvision stock loss head (anchor)", True, False, False, None, ""),
        ("focalbench batched loss head", False, False, False, 0, " (goal <= 1.05x)"),
    ]
    if device.type == "cuda":
        variants += [
            ("stock head, bf16 + channels_last (anchor)", True, True, False, None, ""),
            ("batched head, bf16 + channels_last", False, True, False, 2, " (goal <= 1.05x)"),
            ("batched head, bf16 + channels_last + compile", False, True, True, 3, ""),
        ]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"| RetinaNet-R18 train step, batch {args.batch}, {args.size} px, {where}, "
        f"{torch.get_num_threads()} threads | ms | img/s | ratio |"
    )
    print("|---|---|---|---|")
    times: list[float] = []
    for label, stock, amp, compiled, anchor, goal in variants:
        model = build(args.size, device, stock, amp, compiled)
        warmup = 3 if compiled else 1
        times.append(step_time(model, images, targets, args.reps, warmup, amp))
        ratio = (
            "1.00x" if anchor is None else f"{times[-1] / times[anchor]:.2f}x vs row {anchor + 1}"
        )
        ms, ips = times[-1] * 1e3, args.batch / times[-1]
        print(f"| {label} | {ms:.1f} | {ips:.0f} | {ratio}{goal} |", flush=True)


if __name__ == "__main__":
    main()
