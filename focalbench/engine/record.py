"""An attempt's record: the config half of its CSV row, and the write of row.json + the CSV row
that an interrupt cannot cut in half."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from focalbench.config import RunConfig
from focalbench.results.store import CSV_COLUMNS, append_row, write_json

# the metric half of the CSV row: mAP .. imgs_per_s, in CSV order
METRIC_COLUMNS = CSV_COLUMNS[CSV_COLUMNS.index("mAP") : CSV_COLUMNS.index("imgs_per_s") + 1]


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
    if isinstance(alpha, tuple):  # per class: one cell holding the bracketed list, "[0.1,0.4]"
        alpha = "[" + ",".join(f"{a:.6g}" for a in alpha) + "]"
    return {
        "run_id": cfg.run_id,
        "sweep_id": cfg.sweep_id,
        "config_id": cfg.config_id,  # what the leaderboard groups by: the run id without the seed
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


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Ctrl-C/SIGTERM arriving while an attempt is recorded (row.json, CSV row) wait until the
    record is written whole, then are delivered as usual."""
    if threading.current_thread() is not threading.main_thread():  # no handlers there
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


def record(rdir: Path, csv_path: Path, row: dict[str, Any]) -> None:
    """row.json in the run folder (`leaderboard --rebuild` reads these), then the CSV row; a
    Ctrl-C/SIGTERM meanwhile waits until both are written."""
    with interrupts_deferred():
        write_json(rdir / "row.json", row)
        append_row(csv_path, row)
