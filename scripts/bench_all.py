"""Run every scripts/bench_*.py and write one report (results/bench.md, also printed).

Each benchmark prints its own markdown table with ratios against an anchor measured in the same run,
so the report stays meaningful on a loaded machine. `make bench` runs this.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ("losses", "train_step", "matching", "eval", "bootstrap", "data", "startup", "sweep")


def main() -> None:
    scripts = sorted(
        HERE.glob("bench_*.py"),
        key=lambda p: (
            p.stem[6:] not in ORDER,
            ORDER.index(p.stem[6:]) if p.stem[6:] in ORDER else 0,
        ),
    )
    scripts = [s for s in scripts if s.name != "bench_all.py"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    parts = [
        f"# focalbench benchmarks\n\n{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average {load:.1f} at start.\n"
    ]
    for script in scripts:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        body = (
            proc.stdout.strip()
            if proc.returncode == 0
            else f"FAILED:\n```\n{proc.stderr[-2000:]}\n```"
        )
        parts.append(f"## {script.stem}  ({time.perf_counter() - t0:.0f} s)\n\n{body}\n")
        print(parts[-1], flush=True)
    out = HERE.parent / "results" / "bench.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(parts))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
