"""Training, laid out as torchvision's detection references: `train_one_epoch` runs the steps of one
epoch (AMP on CUDA, gradient clipping, the NaN/Inf guard), and `fit` the epochs: resume from the
checkpoint, an epoch, its row of train_log.csv, a checkpoint. AdamW/SGD with linear warm-up +
cosine decay."""

from __future__ import annotations

import csv
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DistributedSampler

from focalbench.engine.checkpoint import Checkpointer
from focalbench.utils import atomic_write

# + the columns of the detector's audit, if it has one
TRAIN_LOG_COLUMNS = ("epoch", "loss", "loss_cls", "loss_box", "lr", "time_s", "imgs_per_s")


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


@dataclass
class Training:
    """What a step needs besides the model and the batch, and what a checkpoint keeps of it."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    dtype: torch.dtype | None  # autocast dtype; None: no autocast
    clip_grad: float  # max gradient norm; 0 = off
    # the train loader's shuffling generator (seeded with the run's seed): its state goes into the
    # checkpoint, so that a resumed run draws the data order of the epochs it has left, not the
    # first epochs' again. None under DDP (DistributedSampler shuffles by epoch number)
    shuffle: torch.Generator | None = None

    @classmethod
    def build(cls, model: nn.Module, train_cfg, iters_per_epoch: int, device) -> Training:
        optimizer = build_optimizer(model, train_cfg)
        schedule = warmup_cosine(train_cfg.epochs * iters_per_epoch, train_cfg.warmup_iters)
        dtype = amp_dtype(device, train_cfg.amp)
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return cls(optimizer, scheduler, scaler, dtype, train_cfg.clip_grad)

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        return {
            "model": _unwrap(model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": torch.get_rng_state(),
            **({"shuffle_rng": self.shuffle.get_state()} if self.shuffle is not None else {}),
        }

    def load_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        _unwrap(model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        if self.shuffle is not None and "shuffle_rng" in state:  # checkpoints before it had none
            self.shuffle.set_state(state["shuffle_rng"])


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def to_device(images, targets, device: torch.device):
    """A batch (collate's images and targets) on device."""
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [
        {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()}
        for t in targets
    ]
    return images, targets


@dataclass
class Epoch:
    """What one epoch measured."""

    epoch: int  # 1-based
    losses: dict[str, float]  # mean per step: loss, loss_cls, loss_box
    lr: float  # at the end of the epoch
    time_s: float
    images: int
    first_step_at: float | None  # time.time() of the first step

    def log_row(self) -> dict[str, Any]:
        """Its row of train_log.csv (TRAIN_LOG_COLUMNS)."""
        return {
            "epoch": self.epoch,
            **self.losses,
            "lr": self.lr,
            "time_s": self.time_s,
            "imgs_per_s": self.images / max(self.time_s, 1e-9),
        }


def train_one_epoch(
    model: nn.Module, loader, training: Training, device: torch.device, epoch: int, progress
) -> Epoch:
    """One pass over loader (epoch counts from 0). Raises Diverged on a non-finite loss or gradient
    norm. progress: a progress_bar()."""
    model.train()
    if isinstance(loader.sampler, DistributedSampler):  # a new shuffle every epoch
        loader.sampler.set_epoch(epoch)
    task = progress.add_task("train", total=len(loader), epoch=epoch + 1, loss=math.nan, ips=0.0)
    sums = {"loss": 0.0, "loss_cls": 0.0, "loss_box": 0.0}
    t0, n_images, first_step_at = time.perf_counter(), 0, None
    optimizer, scaler, dtype = training.optimizer, training.scaler, training.dtype
    max_norm = training.clip_grad if training.clip_grad > 0 else math.inf
    for step, (images, targets) in enumerate(loader):
        first_step_at = first_step_at or time.time()
        images, targets = to_device(images, targets, device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        # checked after backward: under DDP a NaN on one rank reaches every rank's gradients
        # through the all-reduce, so all ranks stop at the same step instead of one waiting
        if not torch.isfinite(loss):
            raise Diverged(epoch + 1, step, "the loss")
        if not torch.isfinite(grad_norm) and not scaler.is_enabled():
            raise Diverged(epoch + 1, step, "the gradient norm")
        scaler.step(optimizer)  # with fp16 a scaler skips inf steps itself
        if _optimizer_stepped(scaler):  # the schedule follows the steps taken
            training.scheduler.step()

        n_images += len(images)
        sums["loss"] += loss.item()
        sums["loss_cls"] += losses.get("classification", loss).item()
        sums["loss_box"] += sum(v.item() for k, v in losses.items() if k != "classification")
        ips = n_images / (time.perf_counter() - t0)
        progress.update(task, advance=1, loss=sums["loss"] / (step + 1), ips=ips)
    epoch_time = time.perf_counter() - t0
    progress.remove_task(task)
    steps = max(1, len(loader))
    means = {k: v / steps for k, v in sums.items()}
    lr = optimizer.param_groups[0]["lr"]
    return Epoch(epoch + 1, means, lr, epoch_time, n_images, first_step_at)


def progress_bar(enabled: bool) -> Progress:
    """The per-epoch bar (a task per epoch; gone when the epoch is)."""
    return Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[ips]:.1f} img/s"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=True,
    )


def fit(
    model: nn.Module,
    loader,
    train_cfg,
    device: torch.device,
    checkpointer: Checkpointer,
    log_path: Path,
    on_epoch: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    is_main: bool = True,
    say: Callable[[str], object] | None = None,
    after_epoch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train `model` for train_cfg.epochs, resuming from the checkpoint the checkpointer finds.

    Returns {"imgs_per_s", "first_step_at", "epochs_run", "resumed_from"}. Raises Diverged.
    on_epoch(row) is called after each epoch with its train_log row and returns extra columns (the
    detector's audit, the same keys every epoch) before the row is written. after_epoch(epoch)
    (1-based) is called once the epoch's row and checkpoint are written; it may raise to stop the
    training there (engine/prune.py's judge raises Pruned). Under DDP `model` is the
    DistributedDataParallel wrapper, and only the main rank writes files.
    """
    training = Training.build(model, train_cfg, len(loader), device)
    training.shuffle = getattr(loader, "generator", None)
    start_epoch, found_at = resume(checkpointer, model, training)
    if is_main:
        old_log = found_at.parent / log_path.name if found_at is not None else log_path
        if old_log != log_path and old_log.is_file() and not log_path.exists():
            shutil.copyfile(old_log, log_path)  # resumed from an older folder: its log goes on
        start_log(log_path, start_epoch)
        checkpointer.remove_stale()
    if is_main and say is not None:
        say(
            f"resuming from {found_at} (epoch {start_epoch} of {train_cfg.epochs} done)"
            if start_epoch
            else f"training from epoch 0 ({train_cfg.epochs} epochs)"
        )
    images_seen, train_time, first_step_at = 0, 0.0, None
    with progress_bar(train_cfg.progress and is_main) as progress:
        for epoch in range(start_epoch, train_cfg.epochs):
            done = train_one_epoch(model, loader, training, device, epoch, progress)
            images_seen, train_time = images_seen + done.images, train_time + done.time_s
            first_step_at = first_step_at or done.first_step_at
            row = done.log_row()
            if on_epoch is not None:
                row.update(on_epoch(row))
            if is_main:
                append_log(log_path, row)
                checkpointer.save(epoch + 1, training.state_dict(model))
            if after_epoch is not None:
                after_epoch(epoch + 1)
    return {
        "imgs_per_s": images_seen / train_time if train_time else None,
        "first_step_at": first_step_at,
        "epochs_run": train_cfg.epochs - start_epoch,
        "resumed_from": start_epoch,
    }


def resume(
    checkpointer: Checkpointer, model: nn.Module, training: Training
) -> tuple[int, Path | None]:
    """Restore the last checkpoint of this config, if any; returns the epochs it holds (0: none)
    and where it was."""
    found = checkpointer.load()
    if found is None:
        return 0, None
    state, path = found
    training.load_state_dict(model, state)
    return state["epoch"], path


def append_log(log_path: Path, row: dict[str, Any]) -> None:
    """One epoch's row of train_log.csv (the header first, in a new file)."""
    new_log = not log_path.is_file()
    with open(log_path, "a", newline="") as f:
        if new_log:
            csv.writer(f).writerow(list(row))
        csv.writer(f).writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row.values()])


def start_log(log_path: Path, start_epoch: int) -> None:
    """train_log.csv as the checkpoint knows it: empty from scratch; on resume, the rows of the
    epochs the checkpoint holds (a kill between an epoch's log row and its checkpoint leaves one row
    too many, and that epoch is trained again)."""
    if not start_epoch or not log_path.is_file():
        log_path.unlink(missing_ok=True)
        return
    with open(log_path, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= start_epoch]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(kept)

    atomic_write(log_path, write)
