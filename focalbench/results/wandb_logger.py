"""Weights & Biases logging (rank 0 only). wandb is imported only when the logger is on (~0.4 s).

mode=auto: online when WANDB_API_KEY is set, else offline (files under ./wandb/, upload later with
`wandb sync wandb/offline-run-*`). Never an interactive login prompt. metrics.json stays the source
of truth:
offline runs keep no readable summary on disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class WandbLogger:
    def __init__(
        self,
        wandb_cfg,
        science: dict[str, Any],
        run_id: str,
        sweep_id: str | None,
        run_dir: Path,
        description: str,
        tags: list[str],
    ):
        self.run = None
        if not wandb_cfg.enabled or wandb_cfg.mode == "disabled":
            return
        mode = wandb_cfg.mode
        if mode == "auto":
            mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.run = wandb.init(
            project=wandb_cfg.project,
            entity=wandb_cfg.entity,
            mode=mode,
            group=sweep_id,
            name=f"{run_id} {description}",
            id=None,
            tags=tags,
            config=science,
            dir=str(run_dir),
            reinit="finish_previous",
            settings=wandb.Settings(console="off", silent=True),
        )

    def log(self, data: dict[str, Any], step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(data, step=step)

    def log_final(self, metrics: dict[str, Any], reliability_png: Path | None) -> None:
        if self.run is None:
            return
        import wandb

        flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}
        self.run.summary.update(flat)
        if reliability_png is not None and reliability_png.is_file():
            self.run.log({"reliability": wandb.Image(str(reliability_png))})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
