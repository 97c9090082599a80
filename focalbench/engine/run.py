"""One job end to end: data -> model -> fit -> predict -> metrics -> run folder -> CSV row -> W&B.

Bad input (InputError) stops before anything is recorded. Once training starts, every attempt ends
in exactly one CSV row: ok, diverged (non-finite loss/gradient), failed (any other exception, with
the error), or interrupted (Ctrl-C / SIGTERM; the next attempt resumes from the last checkpoint).
Only a kill (SIGKILL, power loss) leaves no row; the next attempt resumes just the same.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from filelock import Timeout

from focalbench.config import RunConfig, to_yaml
from focalbench.engine.datasets import build_datasets
from focalbench.engine.predict import predict
from focalbench.engine.train import Diverged, fit
from focalbench.errors import InputError
from focalbench.models import build_model, compile_model
from focalbench.results.store import (
    CSV_COLUMNS,
    append_row,
    atomic_write_text,
    run_dir,
    run_lock,
    status_of,
    write_json,
)


@dataclass
class RunResult:
    run_id: str
    status: str  # ok | failed | diverged | interrupted | skipped
    run_dir: Path | None
    metrics: dict[str, Any]
    error: str = ""


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "train.device=cuda but CUDA is not available here; choose from ['auto', 'cpu']"
        )
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def base_row(cfg: RunConfig, rdir: Path, device: torch.device) -> dict[str, Any]:
    """The config half of the CSV row."""
    params = cfg.loss.params
    alpha = params.get("alpha")
    return {
        "run_id": cfg.run_id,
        "sweep_id": cfg.sweep_id,
        "model": cfg.model.name,
        "backbone": cfg.model.backbone,
        "loss": cfg.loss.name,
        "alpha": alpha,  # empty when the loss has no alpha (bce, ce, qfl) or it is off
        # the focusing exponent: gamma, or beta for QFL (which has no gamma); empty for bce/ce
        "gamma": params.get("gamma", params.get("beta")),
        "matcher": cfg.matcher.name if cfg.model.name == "detr" else "",
        "normalization": cfg.loss.normalization,
        "dataset": cfg.data.name,
        "train_images": cfg.data.train_images,
        "val_images": cfg.data.val_images,
        "epochs": cfg.train.epochs,
        "image_size": cfg.data.image_size,
        "seed": cfg.seed,
        "device": device.type,
        "torch": torch.__version__,
        "git_sha": git_sha(),
        "run_dir": str(rdir),
    }


def _raise_interrupt(signum, frame):
    # one orderly stop: later SIGTERMs are ignored (run() restores the handler), so that a repeat
    # cannot cut the recording of this one short. Repeats happen: a dying sweep sends its jobs
    # PR_SET_PDEATHSIG once for each of its threads.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Ctrl-C/SIGTERM arriving while an attempt is recorded (row.json, CSV row) wait until the
    record is written whole, then are delivered as usual."""
    if not _main_thread():
        yield
        return
    pending: list[int] = []
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(pending):
            os.kill(os.getpid(), sig)  # redelivered to the handler it was meant for


@dataclass
class Dist:
    """Where this process sits in a torchrun job (rank 0 of 1 without torchrun)."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def setup_dist(device_name: str) -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: join the process group (NCCL on GPUs, gloo on the
    CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world == 1:
        return Dist(device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(device, torch.distributed.get_rank(), world)


def run(cfg: RunConfig, force: bool = False, console=None) -> RunResult:
    """Train and evaluate one config; skip it when its run id already has an ok row (unless force).

    One attempt per run id at a time: the attempt holds the run's lock (store.run_lock) from the
    status check to its CSV row, so a second `train` or sweep of the same config (say, re-run while
    a killed sweep's job is still finishing) waits, then skips it or resumes from its checkpoint.
    Under torchrun every rank calls this; the run folder is a function of the run id, so all ranks
    agree on it, and rank 0 alone holds the lock and writes files, the CSV row and W&B.
    """
    say = console.print if console is not None else (lambda *a, **k: None)
    # an unsafe sweep_id/job_name is bad input: refused before anything is written
    rdir = run_dir(cfg.results_dir, cfg.run_id, cfg.sweep_id, cfg.job_name)
    # SIGTERM (a sweep stopping its jobs, a batch system's preemption) ends the attempt like Ctrl-C
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    try:
        with _one_attempt_at_a_time(cfg.results_dir, cfg.run_id, say):
            csv_path = Path(cfg.results_dir) / "runs.csv"
            if not force and status_of(csv_path).get(cfg.run_id) == "ok":
                return RunResult(cfg.run_id, "skipped", None, {})
            return _attempt(cfg, rdir, force, say)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


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
    csv_path = Path(cfg.results_dir) / "runs.csv"
    rid = cfg.run_id
    dist = setup_dist(cfg.train.device)
    if cfg.train.batch_size % dist.world:
        raise InputError(
            f"train.batch_size={cfg.train.batch_size} (the global batch) must be divisible by "
            f"the {dist.world} torchrun processes"
        )
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    # bad input (InputError) surfaces here, before anything is recorded
    train_ds, val_ds = build_datasets(cfg.data, cfg.results_dir)

    seed_everything(cfg.seed)
    try:
        model = build_model(
            cfg.model, cfg.loss, cfg.matcher, train_ds.num_classes, cfg.data.image_size
        )
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

    from focalbench.results.wandb_logger import WandbLogger

    desc = f"{cfg.model.name} {cfg.loss.name} a={cfg.loss.alpha} g={cfg.loss.gamma}"
    tags = [cfg.model.name, cfg.loss.name] + (
        [cfg.matcher.name] if cfg.model.name == "detr" else []
    )
    wandb_cfg = cfg.wandb if dist.is_main else replace(cfg.wandb, enabled=False)
    logger = WandbLogger(wandb_cfg, cfg.science(), rid, cfg.sweep_id, rdir, desc, tags)

    row = base_row(cfg, rdir, dist.device)
    row["started"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    metrics: dict[str, Any] = {}
    try:
        metrics = _train_and_evaluate(cfg, model, train_ds, val_ds, dist, rdir, logger, say)
        row.update(status="ok", **{k: metrics.get(k) for k in _METRIC_COLUMNS})
    except Diverged as exc:
        row.update(status="diverged", error=str(exc))
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
            with _interrupts_deferred():
                write_json(rdir / "row.json", row)  # `leaderboard --rebuild` reads these
                append_row(csv_path, row)
        if "status" in row:
            logger.finish(0 if row["status"] == "ok" else 1)
        if dist.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return RunResult(rid, row["status"], rdir, metrics, row.get("error", ""))


# the metric half of the CSV row: mAP .. imgs_per_s, in CSV order
_METRIC_COLUMNS = CSV_COLUMNS[CSV_COLUMNS.index("mAP") : CSV_COLUMNS.index("imgs_per_s") + 1]


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _train_and_evaluate(
    cfg: RunConfig, model, train_ds, val_ds, dist: Dist, rdir: Path, logger, say
) -> dict:
    from focalbench.data import collate
    from focalbench.metrics import evaluate, plot_reliability

    device = dist.device
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if cfg.train.compile:
        compile_model(model, cfg.train.compile_backend)
    generator = torch.Generator().manual_seed(cfg.seed)
    pin = device.type == "cuda"
    batch = cfg.train.batch_size // dist.world  # train.batch_size is the global batch
    drop_last = len(train_ds) >= cfg.train.batch_size  # BatchNorm dislikes a last batch of one
    sampler = None
    if dist.world > 1:
        sampler = torch.utils.data.DistributedSampler(
            train_ds, shuffle=True, seed=cfg.seed, drop_last=drop_last
        )
    train_loader = torch.utils.data.DataLoader(
        train_ds,
        batch_size=batch,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=collate,
        generator=generator,
        drop_last=drop_last,
        num_workers=cfg.train.num_workers,
        pin_memory=pin,
        persistent_workers=cfg.train.num_workers > 0,
    )
    val_loader = torch.utils.data.DataLoader(
        val_ds,
        batch_size=cfg.train.eval_batch_size,
        collate_fn=collate,
        num_workers=cfg.train.num_workers,
        pin_memory=pin,
    )

    def on_epoch(epoch: int, log_row: dict) -> None:
        logger.log({f"train/{k}": v for k, v in log_row.items() if k != "epoch"}, step=epoch)

    say(
        f"[bold]{cfg.run_id}[/] {cfg.model.name}-{cfg.model.backbone} loss={cfg.loss.name} "
        f"on {cfg.data.name} ({len(train_ds)} train / {len(val_ds)} val, "
        f"{cfg.data.image_size}px, {device.type})"
    )
    epoch_extras, audit = None, {}
    if hasattr(
        model, "matching_audit"
    ):  # DETR: how the matching cost assigns queries, on a fixed probe batch
        probe_images, probe_targets = collate([val_ds[i] for i in range(min(len(val_ds), 16))])

        def epoch_extras() -> dict:
            audit.update(
                model.matching_audit(
                    [im.to(device) for im in probe_images],
                    [
                        {k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()}
                        for t in probe_targets
                    ],
                )
            )
            return dict(audit)

    trained = model
    if dist.world > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    fit_info = fit(
        trained,
        train_loader,
        cfg.train,
        device,
        rdir,
        cfg.run_id,
        on_epoch=on_epoch,
        epoch_extras=epoch_extras,
        is_main=dist.is_main,
        say=say,
    )
    if not dist.is_main:  # rank 0 evaluates on the whole validation set; the others are done
        dist.barrier()
        return {}
    dets = predict(model, val_loader, val_ds.cat_ids, cfg.data.image_size, device)
    atomic_write_text(rdir / "detections.json", json.dumps(dets))
    gt = json.loads(Path(val_ds.ann_file).read_text())
    metrics = evaluate(gt, dets)
    metrics["imgs_per_s"] = fit_info["imgs_per_s"]
    metrics["run_id"] = cfg.run_id
    metrics["resumed_from_epoch"] = fit_info["resumed_from"]
    spawned = os.environ.get("FOCALBENCH_SPAWN_T")  # set by the sweep pool when it starts the job
    if spawned and fit_info["first_step_at"]:
        metrics["spawn_to_first_step_s"] = fit_info["first_step_at"] - float(spawned)
    if audit:
        metrics["matching_audit"] = audit  # as measured after the last epoch
    png = plot_reliability(metrics, rdir / "reliability.png")
    from focalbench.metrics.evaluate import to_json

    atomic_write_text(rdir / "metrics.json", to_json(metrics, indent=2) + "\n")
    logger.log_final(metrics, Path(png))
    dist.barrier()
    return metrics
