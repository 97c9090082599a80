"""Sweep overhead: spawn-to-first-step per job, and `--jobs 2` vs `--jobs 1` on the same 4-job grid.

Anchors measured in the same run: the job's own training time (overhead = spawn to first step) and
the sequential sweep (`--jobs 1`). Goals: overhead <= 5 s per job; `--jobs 2` not slower than
sequential on 2 cores.

    python scripts/bench_sweep.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = [
    "experiment=smoke",
    "loss=focal,bce",
    "seed=0,1",
    "data.train_images=16",
    "data.val_images=8",
]


def sweep(jobs: int, results: Path) -> float:
    cmd = [
        sys.executable,
        "-m",
        "focalbench",
        "sweep",
        *GRID,
        f"results_dir={results}",
        "--jobs",
        str(jobs),
    ]
    t0 = time.perf_counter()
    subprocess.run(
        cmd, check=True, capture_output=True, env={**os.environ, "WANDB_MODE": "disabled"}
    )
    return time.perf_counter() - t0


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # warm the synthetic-data cache so both sweeps measure training, not data generation
        sweep(1, tmp / "warm")
        data = tmp / "warm" / "data"
        for name in ("seq", "par"):
            (tmp / name).mkdir()
            os.symlink(data, tmp / name / "data")
        t_seq = sweep(1, tmp / "seq")
        t_par = sweep(2, tmp / "par")
        overheads = [
            json.loads(p.read_text()).get("spawn_to_first_step_s")
            for p in (tmp / "seq").rglob("metrics.json")
        ]
        overheads = [o for o in overheads if o is not None]
    mean_overhead = sum(overheads) / len(overheads)
    print("| measure | value | goal |")
    print("|---|---|---|")
    print(
        f"| spawn to first step, mean of {len(overheads)} jobs | {mean_overhead:.2f} s | <= 5 s |"
    )
    print(f"| 4-job sweep, --jobs 1 (anchor) | {t_seq:.1f} s | |")
    print(f"| 4-job sweep, --jobs 2 | {t_par:.1f} s | |")
    print(f"| --jobs 2 / --jobs 1 | {t_par / t_seq:.2f}x | <= 1.0x |")


if __name__ == "__main__":
    main()
