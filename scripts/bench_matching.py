"""Hungarian matching time vs the DETR train step, printed as a share (goal: <= 10%).

One train step of the small DETR (experiment=detr_demo's model) on a batch of random images runs the
matcher once per decoder layer (auxiliary losses). This script times, in the same process and
interleaved (the machine is shared: only ratios measured together mean anything):
  - the full train step (forward, matching, loss, backward, AdamW step);
  - the matcher alone on the last layer's outputs (cost matrices + scipy), per class cost;
and prints matcher time x matched layers / step time for each class cost.

    .venv/bin/python scripts/bench_matching.py [--batch 16] [--queries 50] [--classes 6] [--reps 10]
        [--device cpu|cuda]

On a GPU the step shrinks while scipy's assignment stays on the CPU, so the share grows there.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from focalbench.config import compose
from focalbench.matching import MATCH_COSTS, HungarianMatcher
from focalbench.models import build_model
from focalbench.models.detr_criterion import normalized_targets


def random_batch(batch: int, size: int, classes: int, generator: torch.Generator):
    B, S, C = batch, size, classes
    images = [torch.rand(3, S, S, generator=generator) for _ in range(B)]
    targets = []
    for _ in range(B):
        T = int(
            torch.randint(1, 9, (1,), generator=generator)
        )  # 1..8 objects, as the synthetic set
        xy = torch.rand(T, 2, generator=generator) * S * 0.7
        wh = torch.rand(T, 2, generator=generator) * S * 0.3 + 4
        boxes = torch.cat([xy, (xy + wh).clamp(max=S)], dim=1)
        targets.append({"boxes": boxes, "labels": torch.randint(0, C, (T,), generator=generator)})
    return images, targets


def timed(fn, reps: int, sync=lambda: None) -> float:
    """Median wall time of fn() in seconds (`sync` waits for queued GPU work)."""
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--queries", type=int, default=None, help="default: the demo's num_queries")
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    # from scratch: the step time is what matters here, not a pretrain cache
    overrides = ["experiment=detr_demo", "model.weights=null"] + (
        [f"model.num_queries={args.queries}"] if args.queries else []
    )
    cfg = compose(overrides)
    S, B, C = cfg.data.image_size, args.batch, args.classes
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.loss, cfg.matcher, C, S).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    images, targets = random_batch(B, S, C, torch.Generator().manual_seed(0))
    images = [im.to(device) for im in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]

    def step() -> None:
        loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        logits, boxes = model.head_outputs(images)
    logits, boxes = logits[-1], boxes[-1]
    gts = normalized_targets(targets, (S, S))
    matchers = {
        name: HungarianMatcher(
            name, alpha=0.25, gamma=2.0, softmax=model.criterion.cls_loss.softmax
        )
        for name in MATCH_COSTS
    }
    layers = cfg.model.dec_layers if cfg.model.aux_loss else 1

    step(), step()  # warm-up: allocator, oneDNN kernels
    step_times, match_times = [], {name: [] for name in matchers}
    for _ in range(args.reps):  # interleaved, so that load from other processes hits both alike
        step_times.append(timed(step, 1, sync))
        for name, matcher in matchers.items():
            match_times[name].append(timed(lambda m=matcher: m(logits, boxes, gts), 3, sync))
    step_s = statistics.median(step_times)
    num_gt = sum(len(t["labels"]) for t in targets)
    print(
        f"DETR train step: batch {B}, {S}px, {logits.shape[1]} queries, {C} classes, "
        f"{num_gt} boxes, {layers} matched layers, "
        f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"  step  {step_s * 1e3:8.1f} ms  ({B / step_s:.1f} img/s)")
    worst = 0.0
    for name, times in match_times.items():
        per_call = statistics.median(times)
        share = per_call * layers / step_s
        worst = max(worst, share)
        ms = per_call * 1e3
        print(f"  match {name:<10} {ms:6.2f} ms/call x {layers} = {share:6.2%} of the step")
    print(f"largest share {worst:.2%}  (goal <= 10%: {'ok' if worst <= 0.10 else 'MISSED'})")


if __name__ == "__main__":
    main()
