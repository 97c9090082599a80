"""`focalbench sweep GRID`: a grid from Hydra's override grammar -> a plan -> the pending jobs, run
in the local pool or as one SLURM job array (execute.py), then a summary. Another Hydra launcher
(`--launcher basic`) runs the grid as a Hydra multirun of focalbench.train instead.

Each job is one `focalbench train OVERRIDES sweep_id=... job_name=...`, which writes its own CSV
row; the sweep adds a row only for a job that ended without writing one (`interrupted` if it was
stopped from outside, else `failed`).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

from focalbench.errors import InputError
from focalbench.results.store import safe_name
from focalbench.sweep.execute import execute_plan
from focalbench.sweep.local import check_gpus
from focalbench.sweep.plan import DONE, default_sweep_id, make_plan, split_launcher_overrides
from focalbench.sweep.report import plan_table, summary_table


def run_sweep(
    overrides: Sequence[str],
    jobs: int = 1,
    gpus: Sequence[int] | None = None,
    jobs_per_gpu: int = 1,
    sweep_id: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    retry_failed: bool = False,
    console=None,
    launcher: str = "pool",
    pending_warn_min: float = 10.0,
) -> int:
    """Plan, print, run the pending jobs (local pool, or SLURM with launcher="submitit_slurm"),
    print the summary. Returns the exit code (1 if a job did not end ok)."""
    from rich.console import Console

    console = console or Console()
    if launcher not in ("pool", "submitit_slurm"):
        raise InputError(f"launcher={launcher!r}; choose from ['pool', 'submitit_slurm']")
    overrides, launcher_overrides = split_launcher_overrides(overrides)
    if launcher == "pool" and launcher_overrides:
        raise InputError(
            f"{launcher_overrides[0]} sets a cluster launcher; the local pool takes --jobs, "
            "--gpus and --jobs-per-gpu (or give --launcher submitit_slurm)"
        )
    if jobs < 1 or jobs_per_gpu < 1:
        raise InputError(f"--jobs={jobs} and --jobs-per-gpu={jobs_per_gpu} must be at least 1")
    if gpus:
        check_gpus(gpus)
    slurm = None
    if launcher != "pool":  # checked before planning: a request that can never start fails at once
        from focalbench.sweep.slurm.request import slurm_request

        slurm = slurm_request(launcher_overrides, console, not dry_run, pending_warn_min)
    plan = make_plan(overrides, sweep_id, force=force, retry_failed=retry_failed)
    todo = plan.to_run
    n_done = sum(j.state == DONE for j in plan.jobs)
    n_failed = sum(j.state == "failed" for j in plan.jobs)
    n_elsewhere = sum(j.elsewhere for j in todo)
    console.print(
        f"[bold]sweep {plan.sweep_id}[/]: {len(plan.jobs)} jobs, {n_done} already done, "
        f"{n_failed} failed before (kept; --retry-failed re-runs them), {len(todo)} to run"
        + (f" ({n_elsewhere} running in another process: waited for)" if n_elsewhere else "")
    )
    if dry_run:
        console.print(plan_table(plan))
        return 0
    failed = execute_plan(plan, jobs, gpus, jobs_per_gpu, force, console, slurm=slurm)
    if todo or n_done:
        console.print(summary_table(plan))
    return 1 if failed else 0


def run_hydra_launcher(
    overrides: Sequence[str], launcher: str, sweep_id: str | None, dry_run: bool = False
) -> int:
    """A sweep through another Hydra launcher (e.g. basic): a Hydra multirun of focalbench.train.
    It submits every job of the grid; jobs with an ok row skip themselves."""
    from focalbench.config import group_options

    choices = ["pool", *group_options("hydra/launcher"), "gpu_pool"]
    if launcher not in choices:
        raise InputError(f"--launcher={launcher!r}; choose from {sorted(set(choices))}")
    runs, _ = split_launcher_overrides(overrides)
    sid = safe_name(sweep_id, "--sweep-id") if sweep_id else default_sweep_id(runs)
    cmd = [
        sys.executable,
        "-m",
        "focalbench.train",
        "-m",
        *overrides,
        f"hydra/launcher={launcher}",
        f"sweep_id='{sid}'",
        "train.progress=false",
    ]
    if dry_run:
        print(" ".join(cmd))
        return 0
    return subprocess.call(cmd)
