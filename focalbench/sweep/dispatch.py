"""`focalbench sweep`'s one call: which strategy runs the overrides (the grid, a race of seeds, an
adaptive search, or another Hydra launcher's multirun), after the checks that need no plan.
"""

from __future__ import annotations

from collections.abc import Sequence

from focalbench.config import PRUNERS
from focalbench.errors import InputError
from focalbench.sweep.grid import run_hydra_launcher, run_sweep
from focalbench.sweep.race import DEFAULT_FUTILITY, DEFAULT_MAX_SEEDS, run_race
from focalbench.sweep.search import is_search_override, run_search


def parse_gpus(gpus: str | None) -> list[int] | None:
    """`--gpus 0,1` -> [0, 1]; None -> None."""
    if gpus is None:
        return None
    try:
        return [int(g) for g in gpus.split(",") if g.strip()]
    except ValueError:
        raise InputError(f"--gpus={gpus!r}: expected GPU indices such as 0,1") from None


def sweep(
    overrides: Sequence[str],
    *,
    jobs: int = 1,
    gpus: str | None = None,
    jobs_per_gpu: int = 1,
    launcher: str = "pool",
    sweep_id: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    retry_failed: bool = False,
    pending_warn_min: float = 10.0,
    search: str | None = None,
    trials: int = 16,
    objectives: Sequence[str] = ("mAP",),
    search_seed: int = 0,
    prune: str | None = None,
    race: bool = False,
    max_seeds: int = DEFAULT_MAX_SEEDS,
    metric: str = "mAP",
    level: float = 0.05,
    margin: float | None = None,
    futility: float = DEFAULT_FUTILITY,
    console=None,
) -> int:
    """Run the sweep the options describe; returns the exit code (1 if a job did not end ok)."""
    overrides = list(overrides)
    gpu_ids = parse_gpus(gpus)
    _check_prune(prune, search, race)
    if race:
        if search is not None or any(is_search_override(o) for o in overrides):
            raise InputError("--race races a grid's seeds; it does not combine with --search")
        if dry_run or launcher not in ("pool", "submitit_slurm"):
            raise InputError(
                "--race runs round by round in the local pool or on SLURM: drop --dry-run, "
                "choose --launcher pool or submitit_slurm"
            )
        return _race(overrides, jobs, gpu_ids, jobs_per_gpu, launcher, pending_warn_min,
                     retry_failed, max_seeds, metric, level, margin, futility, console)  # fmt: skip
    if search is not None or any(is_search_override(o) for o in overrides):
        if search is None:
            bad = next(o for o in overrides if is_search_override(o))
            raise InputError(f"{bad}: interval(...) is a search dimension; add --search tpe")
        if launcher != "pool" or dry_run:
            raise InputError("--search runs trials in the local pool: drop --launcher/--dry-run")
        return run_search(
            overrides, trials, list(objectives) or ["mAP"], search, search_seed, jobs=jobs,
            gpus=gpu_ids, jobs_per_gpu=jobs_per_gpu, console=console, prune=prune,
        )  # fmt: skip
    # pool and submitit_slurm plan first and submit only unfinished runs; others are Hydra's
    if launcher not in ("pool", "submitit_slurm"):
        return run_hydra_launcher(overrides, launcher, sweep_id, dry_run=dry_run)
    return run_sweep(
        overrides, jobs=jobs, gpus=gpu_ids, jobs_per_gpu=jobs_per_gpu, sweep_id=sweep_id,
        dry_run=dry_run, force=force, retry_failed=retry_failed, console=console,
        launcher=launcher, pending_warn_min=pending_warn_min,
    )  # fmt: skip


def _check_prune(prune: str | None, search: str | None, race: bool) -> None:
    """--prune belongs to --search; the pruner's name is checked by the search (engine/prune.py)."""
    if prune is None:
        return
    choices = f"choose --prune from {list(PRUNERS)}"
    if race:
        raise InputError(
            f"--prune {prune} stops a search's trials early; it does not combine with --race "
            f"(a race drops configs between seeds); with --search tpe, {choices}"
        )
    if search is None:
        raise InputError(f"--prune {prune} stops a search's trials early: add --search tpe; "
                         f"{choices}")  # fmt: skip


def _race(overrides, jobs, gpus, jobs_per_gpu, launcher, pending_warn_min, retry_failed,
          max_seeds, metric, level, margin, futility, console) -> int:  # fmt: skip
    from rich.console import Console

    from focalbench.sweep.local import check_gpus
    from focalbench.sweep.plan import split_launcher_overrides

    console = console or Console()
    runs, launcher_overrides = split_launcher_overrides(overrides)
    if launcher == "pool" and launcher_overrides:
        raise InputError(f"{launcher_overrides[0]} sets a cluster launcher; add --launcher")
    if gpus:
        check_gpus(gpus)
    slurm = None
    if launcher == "submitit_slurm":
        from focalbench.sweep.slurm.request import slurm_request

        slurm = slurm_request(launcher_overrides, console, True, pending_warn_min)
    return run_race(
        runs, max_seeds=max_seeds, metric=metric, level=level, margin=margin, futility=futility,
        jobs=jobs,
        gpus=gpus, jobs_per_gpu=jobs_per_gpu, retry_failed=retry_failed, slurm=slurm,
        console=console,
    )  # fmt: skip
