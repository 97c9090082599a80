"""The fit loop: AdamW/SGD, linear warm-up + cosine decay, gradient clipping, AMP on CUDA, a NaN/Inf
guard, a per-epoch train_log.csv and a checkpoint each epoch that an interrupted run resumes
from."""

from __future__ import annotations

import csv
import math
import os
import time
import warnings
from pathlib import Path

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

TRAIN_LOG_COLUMNS = (
    "epoch",
    "loss",
    "loss_cls",
    "loss_box",
    "lr",
    "time_s",
    "imgs_per_s",
)  # + epoch_extras


class Diverged(RuntimeError):
    """The loss or the gradient norm became NaN/Inf: the run ends with status `diverged`."""

    def __init__(self, epoch: int, step: int, what: str):
        super().__init__(f"{what} is not finite at epoch {epoch}, step {step}")
        self.epoch, self.step = epoch, step


def build_optimizer(model: nn.Module, train_cfg) -> torch.optim.Optimizer:
    # no weight decay on norms and biases (standard for detectors trained from scratch)
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": train_cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if train_cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train_cfg.lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=train_cfg.lr)


def warmup_cosine(total_iters: int, warmup_iters: int):
    """LR factor: linear warm-up from 0.001 to 1, then cosine decay to 0 at total_iters."""
    warmup_iters = min(warmup_iters, max(total_iters - 1, 0))

    def factor(it: int) -> float:
        if it < warmup_iters:
            return 0.001 + (1 - 0.001) * it / warmup_iters
        progress = (it - warmup_iters) / max(1, total_iters - warmup_iters)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16 (with a GradScaler); None = no autocast (CPU)."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _optimizer_stepped(scaler: torch.amp.GradScaler) -> bool:
    """scaler.update(); False when fp16 loss scaling found inf/NaN gradients and skipped the step
    (the scale then drops)."""
    if not scaler.is_enabled():
        return True
    scale = scaler.get_scale()
    scaler.update()
    return scaler.get_scale() >= scale


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)  # atomic: a kill leaves the old checkpoint or the new one, never half
    except BaseException:  # Ctrl-C mid-save: keep the previous checkpoint, drop the partial one
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, run_id: str) -> dict | None:
    """The run's last checkpoint, or None (missing, from another config, or corrupt: warn and start
    over)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or not a checkpoint: losing it costs time, not results
        warnings.warn(
            f"{path}: unreadable checkpoint ({type(exc).__name__}); starting over", stacklevel=2
        )
        return None
    if not isinstance(state, dict) or state.get("run_id") != run_id:
        warnings.warn(f"{path}: checkpoint of another config; starting over", stacklevel=2)
        return None
    return state


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def fit(
    model: nn.Module,
    loader,
    train_cfg,
    device: torch.device,
    run_dir: Path,
    run_id: str,
    on_epoch=None,
    epoch_extras=None,
    is_main: bool = True,
    say=None,
) -> dict:
    """Train `model` for train_cfg.epochs, resuming from run_dir/checkpoint.pt when it belongs to
    run_id.

    Returns {"imgs_per_s", "epochs_run", "resumed_from"}. Raises Diverged on a non-finite loss or
    gradient. `epoch_extras()` returns extra log columns measured after each epoch (the DETR
    matching audit: its keys must be the same every epoch); `on_epoch(epoch, row)` is called with
    the full row (W&B logging); `say(text)` gets one line: resuming (from which epoch) or starting
    from scratch.
    Under DDP `model` is the DistributedDataParallel wrapper and only the main rank writes files.
    """
    optimizer = build_optimizer(model, train_cfg)
    total_iters = train_cfg.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_iters, train_cfg.warmup_iters)
    )
    dtype = amp_dtype(device, train_cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

    ckpt_path, log_path = run_dir / "checkpoint.pt", run_dir / "train_log.csv"
    start_epoch = 0
    state = load_checkpoint(ckpt_path, run_id)
    if state is not None:
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        start_epoch = state["epoch"]
    if is_main:
        _start_log(log_path, start_epoch)
        for stale in run_dir.glob(f".{ckpt_path.name}.tmp*"):  # saves cut short by a kill
            stale.unlink(missing_ok=True)
        if say is not None:
            say(
                f"resuming from {ckpt_path} (epoch {start_epoch} of {train_cfg.epochs} done)"
                if start_epoch
                else f"training from scratch ({train_cfg.epochs} epochs)"
            )

    images_seen, train_time, first_step_at = 0, 0.0, None
    progress = Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[ips]:.1f} img/s"),
        TimeRemainingColumn(),
        disable=not (train_cfg.progress and is_main),
        transient=True,
    )
    with progress:
        for epoch in range(start_epoch, train_cfg.epochs):
            model.train()
            if hasattr(
                loader.sampler, "set_epoch"
            ):  # DistributedSampler: a new shuffle every epoch
                loader.sampler.set_epoch(epoch)
            task = progress.add_task(
                "train", total=len(loader), epoch=epoch + 1, loss=float("nan"), ips=0.0
            )
            sums = {"loss": 0.0, "loss_cls": 0.0, "loss_box": 0.0}
            t0, n_images = time.perf_counter(), 0
            for step, (images, targets) in enumerate(loader):
                first_step_at = first_step_at or time.time()
                images = [im.to(device, non_blocking=True) for im in images]
                targets = [
                    {
                        k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                        for k, v in t.items()
                    }
                    for t in targets
                ]
                with torch.autocast(
                    device.type, dtype=dtype or torch.float32, enabled=dtype is not None
                ):
                    losses = model(images, targets)
                loss = sum(losses.values())
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                max_norm = train_cfg.clip_grad if train_cfg.clip_grad > 0 else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                # checked after backward: under DDP a NaN on one rank reaches every rank's gradients
                # through the all-reduce, so all ranks stop at the same step instead of one waiting
                if not torch.isfinite(loss):
                    raise Diverged(epoch + 1, step, "the loss")
                if not torch.isfinite(grad_norm) and not scaler.is_enabled():
                    raise Diverged(epoch + 1, step, "the gradient norm")
                scaler.step(optimizer)  # with fp16 a scaler skips inf steps itself
                if _optimizer_stepped(scaler):  # the schedule follows the steps taken
                    scheduler.step()

                n_images += len(images)
                sums["loss"] += loss.item()
                sums["loss_cls"] += losses.get("classification", loss).item()
                sums["loss_box"] += sum(
                    v.item() for k, v in losses.items() if k != "classification"
                )
                elapsed = time.perf_counter() - t0
                progress.update(
                    task, advance=1, loss=sums["loss"] / (step + 1), ips=n_images / elapsed
                )
            epoch_time = time.perf_counter() - t0
            progress.remove_task(task)
            images_seen += n_images
            train_time += epoch_time
            steps = max(1, len(loader))
            row = {
                "epoch": epoch + 1,
                **{k: v / steps for k, v in sums.items()},
                "lr": optimizer.param_groups[0]["lr"],
                "time_s": epoch_time,
                "imgs_per_s": n_images / max(epoch_time, 1e-9),
            }
            if epoch_extras is not None:
                row.update(epoch_extras())
                model.train()
            if on_epoch is not None:
                on_epoch(epoch + 1, row)
            if not is_main:
                continue
            new_log = not log_path.is_file()
            with open(log_path, "a", newline="") as f:
                if new_log:
                    csv.writer(f).writerow(list(row))
                csv.writer(f).writerow(
                    [f"{v:.6g}" if isinstance(v, float) else v for v in row.values()]
                )
            save_checkpoint(
                ckpt_path,
                {
                    "run_id": run_id,
                    "epoch": epoch + 1,
                    "model": _unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": torch.get_rng_state(),
                },
            )
    return {
        "imgs_per_s": images_seen / train_time if train_time else None,
        "first_step_at": first_step_at,
        "epochs_run": train_cfg.epochs - start_epoch,
        "resumed_from": start_epoch,
    }


def _start_log(log_path: Path, start_epoch: int) -> None:
    """train_log.csv as the checkpoint knows it: empty from scratch; on resume, the rows of the
    epochs the checkpoint holds (a kill between an epoch's log row and its checkpoint leaves one row
    too many, and that epoch is trained again)."""
    if not start_epoch or not log_path.is_file():
        log_path.unlink(missing_ok=True)
        return
    with open(log_path, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= start_epoch]
    tmp = log_path.with_name(f".{log_path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(kept)
    os.replace(tmp, log_path)
