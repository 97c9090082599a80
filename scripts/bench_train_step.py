"""RetinaNet-R18 train step (batch 4, 256 px, CPU): focalbench's batched loss head vs torchvision's
stock head.

The anchor is the same model with torchvision's own `compute_loss` (sigmoid focal alpha 0.25 gamma
2, a Python
loop over images), measured in the same run with identical weights and batch. Goal: ours <= 1.05x
the anchor.

    python scripts/bench_train_step.py [--reps 5] [--size 256] [--batch 4]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchvision.models.detection.retinanet import RetinaNet

from focalbench.config import LossCfg, ModelCfg
from focalbench.models.retinanet import build_retinanet


def batch(n: int, size: int):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g) for _ in range(n)]
    targets = []
    for _ in range(n):
        xy = torch.rand(6, 2, generator=g) * size * 0.7
        wh = 8 + torch.rand(6, 2, generator=g) * size * 0.3
        targets.append(
            {
                "boxes": torch.cat([xy, xy + wh], 1).clamp(max=size - 1),
                "labels": torch.randint(0, 6, (6,), generator=g),
            }
        )
    return images, targets


def step_time(model, images, targets, reps: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    times = []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    images, targets = batch(args.batch, args.size)
    loss_cfg = LossCfg(name="focal", alpha=0.25, gamma=2.0, normalization="num_pos_per_image")
    torch.manual_seed(0)
    ours = build_retinanet(ModelCfg(), loss_cfg, 6, args.size).train()
    torch.manual_seed(0)
    stock = build_retinanet(ModelCfg(), loss_cfg, 6, args.size).train()
    stock.compute_loss = lambda t, h, a: RetinaNet.compute_loss(
        stock, t, h, a
    )  # torchvision's head loss
    t_stock = step_time(stock, images, targets, args.reps)
    t_ours = step_time(ours, images, targets, args.reps)
    print(
        f"| RetinaNet-R18 train step, batch {args.batch}, {args.size} px, "
        f"{torch.get_num_threads()} threads "
        f"| ms | ratio |"
    )
    print("|---|---|---|")
    print(f"| torchvision stock loss head (anchor) | {t_stock * 1e3:.0f} | 1.00x |")
    print(
        f"| focalbench batched loss head | {t_ours * 1e3:.0f} | "
        f"{t_ours / t_stock:.2f}x (goal <= 1.05x) |"
    )


if __name__ == "__main__":
    main()
