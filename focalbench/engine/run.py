"""One job end to end: data -> model -> fit -> evaluate -> run folder -> CSV row -> W&B.

Bad input (InputError) stops before anything is recorded. Once training starts, every attempt ends
in exactly one CSV row: ok, diverged (non-finite loss/gradient), pruned (a search's pruner stopped
it after an epoch: engine/prune.py), failed (any other exception, with the error), or interrupted
(Ctrl-C / SIGTERM; the next attempt resumes from the last checkpoint).
Only a kill (SIGKILL, power loss) leaves no row; the next attempt resumes just the same.
"""

from __future__ import annotations

import os
import random
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from filelock import Timeout

from focalbench.config import RunConfig, to_yaml
from focalbench.engine.checkpoint import Checkpointer
from focalbench.engine.datasets import build_datasets
from focalbench.engine.dist import Dist, setup_dist, wrap
from focalbench.engine.predict import evaluate
from focalbench.engine.prune import Pruned, epoch_judge
from focalbench.engine.record import METRIC_COLUMNS, base_row, record
from focalbench.engine.resolve import resolve_words
from focalbench.engine.train import Diverged, fit, to_device
from focalbench.errors import InputError
from focalbench.models import Detector, build_model, compile_model
from focalbench.models.weights import adapt_norm_statistics
from focalbench.results.store import atomic_write_text, run_dir, run_lock, status_of
from focalbench.utils import sigterm_as_interrupt


@dataclass
class RunResult:
    run_id: str
    status: str  # ok | failed | diverged | pruned | interrupted | skipped
    run_dir: Path | None
    metrics: dict[str, Any]
    error: str = ""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def run(cfg: RunConfig, force: bool = False, console=None) -> RunResult:
    """Train and evaluate one config; skip it when it already has an ok row (unless force).

    A row under any of RunConfig.run_ids counts: today's id, or the id the first config schema gave
    the same config. One attempt per run id at a time: the attempt holds the run's lock
    (store.run_lock) from the status check to its CSV row, so a second `train` or sweep of the same
    config (say, re-run while a killed sweep's job is still finishing) waits, then skips it or
    resumes from its checkpoint. Under torchrun every rank calls this; the run folder is a function
    of the run id, so all ranks agree on it, and rank 0 alone holds the lock and writes files, the
    CSV row and W&B. SIGTERM (a sweep stopping its jobs, a batch system's preemption) ends the
    attempt like Ctrl-C.
    """
    say = console.print if console is not None else (lambda *a, **k: None)
    # loss.alpha=inverse_freq becomes its per-class list first: the run id records the list
    cfg = resolve_words(cfg, say)
    # an unsafe sweep_id/job_name is bad input: refused before anything is written
    rdir = run_dir(cfg.results_dir, cfg.run_id, cfg.sweep_id, cfg.job_name)
    with sigterm_as_interrupt(), _one_attempt_at_a_time(cfg.results_dir, cfg.run_id, say):
        status = status_of(Path(cfg.results_dir) / "runs.csv")
        if not force and any(status.get(rid) == "ok" for rid in cfg.run_ids):
            return RunResult(cfg.run_id, "skipped", None, {})
        return _attempt(cfg, rdir, force, say)


@contextmanager
def _one_attempt_at_a_time(results_dir: str, rid: str, say) -> Iterator[None]:
    """Hold the run id's lock (as rank 0 of torchrun, or the only process); wait while another
    process holds it."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    try:
        lock = run_lock(results_dir, rid)
        lock.acquire(timeout=0)
    except Timeout:
        say(f"{rid}: another process is running this config ({lock.lock_file}); waiting for it")
        lock.acquire()
    except OSError as exc:
        raise InputError(f"results_dir={results_dir!r} is not writable ({exc.strerror})") from exc
    try:
        yield
    finally:
        lock.release()


def _attempt(cfg: RunConfig, rdir: Path, force: bool, say) -> RunResult:
    """One attempt, under the run's lock: InputError before anything is recorded, else a CSV row."""
    dist, train_ds, val_ds, model = _prepare(cfg, rdir, force)
    from focalbench.results.wandb_logger import WandbLogger

    desc = " ".join(
        [cfg.model.name, cfg.loss.name, *(f"{k}={v}" for k, v in cfg.loss.params.items())]
    )
    detr = cfg.model.name == "detr"
    tags = [cfg.model.name, cfg.loss.name] + ([cfg.matcher.name] if detr else [])
    wandb_cfg = cfg.wandb if dist.is_main else replace(cfg.wandb, enabled=False)
    logger = WandbLogger(wandb_cfg, cfg.science(), cfg.run_id, cfg.sweep_id, rdir, desc, tags)

    row = base_row(cfg, rdir, dist.device)
    row["started"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    metrics: dict[str, Any] = {}
    try:
        metrics = _train_and_evaluate(cfg, model, train_ds, val_ds, dist, rdir, logger, say, force)
        row.update(status="ok", **{k: metrics.get(k) for k in METRIC_COLUMNS})
    except Diverged as exc:
        row.update(status="diverged", error=str(exc))
    except Pruned as exc:  # the search's pruner stopped it: final for the search, no metrics
        row.update(status="pruned", error=str(exc))
    except KeyboardInterrupt:
        row.update(
            status="interrupted", error="interrupted (resume by running the same command again)"
        )
        raise
    except Exception as exc:  # a crash is recorded, never lost; the traceback goes to error.txt
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        if dist.is_main:
            atomic_write_text(rdir / "error.txt", traceback.format_exc())
    finally:
        if "status" in row and dist.is_main:
            row["wall_s"] = round(time.perf_counter() - t0, 1)
            record(rdir, Path(cfg.results_dir) / "runs.csv", row)
        if "status" in row:
            logger.finish(0 if row["status"] in ("ok", "pruned") else 1)
        if dist.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return RunResult(cfg.run_id, row["status"], rdir, metrics, row.get("error", ""))


def _prepare(cfg: RunConfig, rdir: Path, force: bool):
    """Process group, datasets, model and run folder; raises InputError for bad input, before
    anything is recorded. Returns (dist, train_ds, val_ds, model)."""
    dist = setup_dist(cfg.train.device)
    if cfg.prune.pruner is not None and dist.world > 1:
        raise InputError(
            f"prune.pruner={cfg.prune.pruner} judges a run in one process; a search runs its "
            f"trials in the local pool, not under torchrun ({dist.world} processes)"
        )
    if cfg.train.batch_size % dist.world:
        raise InputError(
            f"train.batch_size={cfg.train.batch_size} (the global batch) must be divisible by "
            f"the {dist.world} torchrun processes"
        )
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    train_ds, val_ds = build_datasets(cfg.data, cfg.results_dir)
    seed_everything(cfg.seed)
    try:
        model = build_model(
            cfg.model, cfg.loss, cfg.matcher, train_ds.num_classes, cfg.data.image_size,
            results_dir=cfg.results_dir,
        )  # fmt: skip
    except ValueError as exc:  # a builder's ValueError is a config it cannot build: bad input
        raise InputError(str(exc)) from exc
    if dist.is_main:
        try:
            rdir.mkdir(parents=True, exist_ok=True)
            if force:  # start over: the checkpoint of a finished run would only be re-evaluated
                (rdir / "checkpoint.pt").unlink(missing_ok=True)
            atomic_write_text(rdir / "config.yaml", to_yaml(cfg))
        except OSError as exc:
            raise InputError(
                f"results_dir={cfg.results_dir!r} is not writable ({exc.strerror})"
            ) from exc
    dist.barrier()
    return dist, train_ds, val_ds, model


def _train_and_evaluate(
    cfg: RunConfig, model: Detector, train_ds, val_ds, dist: Dist, rdir: Path, logger, say, force
) -> dict:
    """Train (resuming where a checkpoint of this config is), then, on rank 0, evaluate on the
    validation set and write metrics.json and reliability.png."""
    from focalbench.metrics import plot_reliability
    from focalbench.metrics.evaluate import to_json

    device = dist.device
    model = _on_device(model, device, cfg.train, lambda m: _adapt_norms(cfg, m, train_ds, say))
    train_loader, val_loader = build_loaders(cfg, train_ds, val_ds, dist)
    say(
        f"[bold]{cfg.run_id}[/] {cfg.model.name}-{cfg.model.backbone} loss={cfg.loss.name} "
        f"on {cfg.data.name} ({len(train_ds)} train / {len(val_ds)} val, "
        f"{cfg.data.image_size}px, {device.type})"
    )
    audit = _probe_audit(model, val_ds, device)
    last_audit: dict[str, float] = {}

    def on_epoch(row: dict) -> dict:
        last_audit.update(audit() if audit is not None else {})
        logger.log({f"train/{k}": v for k, v in {**row, **last_audit}.items() if k != "epoch"},
                   step=row["epoch"])  # fmt: skip
        return dict(last_audit)

    old_checkpoints = () if force else _first_schema_checkpoints(cfg, rdir)
    checkpointer = Checkpointer(rdir / "checkpoint.pt", cfg.run_id, cfg.run_ids, old_checkpoints)
    trained = wrap(model, dist)
    judge = epoch_judge(cfg.prune, cfg.train.epochs, model, val_ds, cfg.data.image_size,
                        cfg.train.eval_batch_size, device)  # fmt: skip
    fit_info = fit(trained, train_loader, cfg.train, device, checkpointer,
                   rdir / "train_log.csv", on_epoch, dist.is_main, say, judge)  # fmt: skip
    if not dist.is_main:  # rank 0 evaluates on the whole validation set; the others are done
        dist.barrier()
        return {}

    metrics = evaluate(model, val_loader, val_ds, cfg.data.image_size, device, rdir)
    metrics["imgs_per_s"] = fit_info["imgs_per_s"]
    metrics["run_id"] = cfg.run_id
    metrics["val_ann"] = str(Path(val_ds.ann_file).resolve())  # what `compare` pairs runs on
    if isinstance(cfg.loss.params.get("alpha"), tuple):  # the per-class alpha used, and its origin
        metrics["loss_alpha"] = list(cfg.loss.params["alpha"])
        metrics["loss_alpha_from"] = cfg.loss.alpha_from  # inverse_freq, or None: given as a list
    metrics["resumed_from_epoch"] = fit_info["resumed_from"]
    spawned = os.environ.get("FOCALBENCH_SPAWN_T")  # set by the sweep pool when it starts the job
    if spawned and fit_info["first_step_at"]:
        metrics["spawn_to_first_step_s"] = fit_info["first_step_at"] - float(spawned)
    if last_audit:
        metrics["matching_audit"] = last_audit  # as measured after the last epoch
    png = plot_reliability(metrics, rdir / "reliability.png")
    atomic_write_text(rdir / "metrics.json", to_json(metrics, indent=2) + "\n")
    logger.log_final(metrics, Path(png))
    dist.barrier()
    return metrics


ADABN_IMAGES = 256  # model.norm=adabn: the training images whose statistics the norms take


def _adapt_norms(cfg: RunConfig, model: Detector, train_ds, say) -> None:
    """model.norm=adabn: the frozen BatchNorms take the statistics of the first ADABN_IMAGES
    training images (deterministic: the same images, and flips, in every attempt; a resumed run's
    checkpoint holds the same values), on the model's device."""
    if cfg.model.norm_layer != "adabn":
        return
    from focalbench.data import collate

    device = next(model.parameters()).device
    n = min(ADABN_IMAGES, len(train_ds))
    batches = (
        to_device(*collate([train_ds[i] for i in range(k, min(k + 16, n))]), device)
        for k in range(0, n, 16)
    )
    layers = adapt_norm_statistics(model, batches)
    say(f"model.norm=adabn: {layers} frozen BatchNorms take the statistics of {n} training images")


def _on_device(model: Detector, device: torch.device, train_cfg, prepare=None) -> Detector:
    """The model on device, in channels_last; prepare(model) there, before train.compile."""
    # channels_last: the convolutions' fast layout on GPUs and on CPUs alike (oneDNN: a
    # RetinaNet-R18 training step at 192 px was 13% faster on one CPU thread)
    model = model.to(device, memory_format=torch.channels_last)
    if prepare is not None:
        prepare(model)
    if train_cfg.compile:
        compile_model(model, train_cfg.compile_backend)
    return model


def build_loaders(cfg: RunConfig, train_ds, val_ds, dist: Dist):
    """(train loader: shuffled with the run's seed, sharded under torchrun; val loader)."""
    from focalbench.data import collate

    pin = dist.device.type == "cuda"
    batch = cfg.train.batch_size // dist.world  # train.batch_size is the global batch
    drop_last = len(train_ds) >= cfg.train.batch_size  # BatchNorm dislikes a last batch of one
    sampler = None
    if dist.world > 1:
        sampler = torch.utils.data.DistributedSampler(
            train_ds, shuffle=True, seed=cfg.seed, drop_last=drop_last
        )
    workers = cfg.train.num_workers
    train_loader = torch.utils.data.DataLoader(
        train_ds, batch_size=batch, shuffle=sampler is None, sampler=sampler, collate_fn=collate,
        generator=torch.Generator().manual_seed(cfg.seed), drop_last=drop_last,
        num_workers=workers, pin_memory=pin, persistent_workers=workers > 0,
    )  # fmt: skip
    val_loader = torch.utils.data.DataLoader(
        val_ds, batch_size=cfg.train.eval_batch_size, collate_fn=collate, num_workers=workers,
        pin_memory=pin,
    )  # fmt: skip
    return train_loader, val_loader


# the probe batch of a detector's audit: the first validation images, the same every epoch
PROBE_IMAGES = 16


def _probe_audit(
    model: Detector, val_ds, device: torch.device
) -> Callable[[], dict[str, float]] | None:
    """The detector's declared audit (models.Detector.audit; DETR: how its matching cost assigns
    queries) bound to a fixed probe batch, or None for a detector without one."""
    if model.audit is None:
        return None
    from focalbench.data import collate

    probe = collate([val_ds[i] for i in range(min(len(val_ds), PROBE_IMAGES))])
    images, targets = to_device(*probe, device)
    audit = model.audit
    return lambda: audit(model, images, targets)


def _first_schema_checkpoints(cfg: RunConfig, rdir: Path) -> tuple[Path, ...]:
    """The checkpoints this config may have under the first config schema's ids (RunConfig.run_ids),
    in the run folders of those ids: resumed when the run's own folder has none. A sweep names a
    job's folder by its run id, so there the old folder is named by the old id too."""
    folders = []
    for old in cfg.run_ids[1:]:
        job = old if cfg.job_name == cfg.run_id else cfg.job_name
        folder = run_dir(cfg.results_dir, old, cfg.sweep_id, job)
        if folder != rdir:
            folders.append(folder / "checkpoint.pt")
    return tuple(folders)
