"""Hydra entry point: `python -m focalbench.train [-m] OVERRIDES...` (Hydra multirun and launchers
work).

The task function is module-level so that launchers can pickle it. It does what `focalbench train`
does, without --force: a config that already has an ok row is skipped.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see focalbench/cli.py

import hydra  # noqa: E402
from omegaconf import DictConfig

from focalbench.errors import InputError


@hydra.main(version_base="1.3", config_path="pkg://focalbench.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from focalbench.config import from_dictconfig
    from focalbench.engine.run import run

    try:
        result = run(from_dictconfig(cfg))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"{result.run_id}: {result.status}" + (f" ({result.error})" if result.error else ""))
    return result.metrics.get("mAP")


if __name__ == "__main__":
    main()
