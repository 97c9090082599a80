"""Start-up time of the commands that must not import torch: `--help`, `evaluate`, `leaderboard`.

Anchor: `python -c pass`, measured in the same run. Goal: each <= 1 s (wall, median of 5).

    python scripts/bench_startup.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wall(cmd: list[str], cwd: Path, reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    from focalbench.results.store import append_row

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gt = {
            "images": [{"id": 1, "width": 64, "height": 64, "file_name": "a.png"}],
            "annotations": [
                {
                    "id": 1,
                    "image_id": 1,
                    "category_id": 1,
                    "bbox": [4, 4, 20, 20],
                    "area": 400,
                    "iscrowd": 0,
                }
            ],
            "categories": [{"id": 1, "name": "circle"}],
        }
        (tmp / "gt.json").write_text(json.dumps(gt))
        (tmp / "dets.json").write_text(
            json.dumps([{"image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.9}])
        )
        for seed in range(3):
            append_row(
                tmp / "runs.csv",
                {
                    "run_id": f"r{seed}",
                    "status": "ok",
                    "loss": "focal",
                    "seed": seed,
                    "mAP": 0.1 * seed,
                },
            )
        fb = [sys.executable, "-m", "focalbench"]
        anchor = wall([sys.executable, "-c", "pass"], tmp)
        rows = [
            ("`python -c pass` (anchor)", anchor),
            ("`focalbench --help`", wall([*fb, "--help"], tmp)),
            (
                "`focalbench evaluate gt.json dets.json`",
                wall([*fb, "evaluate", "gt.json", "dets.json"], tmp),
            ),
            (
                "`focalbench leaderboard --csv runs.csv`",
                wall([*fb, "leaderboard", "--csv", "runs.csv"], tmp),
            ),
        ]
    print("| command | wall s | goal |")
    print("|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.2f} | {'' if name.endswith('(anchor)') else '<= 1 s'} |")


if __name__ == "__main__":
    main()
