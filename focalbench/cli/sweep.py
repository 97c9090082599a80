"""`focalbench sweep`: its options, and one call into focalbench.sweep."""

from __future__ import annotations

from typing import Annotated

import typer

from focalbench.cli.app import EXTRA, app, out


@app.command(context_settings=EXTRA)
def sweep(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="Hydra multirun grid, e.g. loss=focal,bce loss.gamma=0,1,2 seed=0,1",
            show_default=False,
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option(min=1, help="CPU jobs side by side (threads split between them).")
    ] = 1,
    gpus: Annotated[
        str | None, typer.Option(help="GPU pool, e.g. 0,1: one process per job per GPU.")
    ] = None,
    jobs_per_gpu: Annotated[
        int, typer.Option(min=1, help="Jobs sharing one GPU (small models).")
    ] = 1,
    launcher: Annotated[
        str,
        typer.Option(
            help="pool (local CPU/GPU pool), submitit_slurm (a SLURM job array of the runs not "
            "done yet) or another Hydra launcher config (a Hydra multirun)."
        ),
    ] = "pool",
    sweep_id: Annotated[
        str | None,
        typer.Option(
            help="Folder name under results/sweeps/ (default: "
            "a hash of the overrides, so a re-run resumes)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the job table, run nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Re-run jobs that already have an ok row.")
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Re-run failed/diverged jobs.")
    ] = False,
    pending_warn_min: Annotated[
        float, typer.Option(help="SLURM: warn when a job has been pending this many minutes.")
    ] = 10.0,
    search: Annotated[
        str | None,
        typer.Option(
            help="Adaptive search instead of a grid: tpe (Optuna). Dimensions are written "
            "loss.gamma=interval(0,5), tag(log,interval(0.1,5)), int(interval(1,4)) or choice(a,b)."
        ),
    ] = None,
    trials: Annotated[int, typer.Option(help="--search: trials in all (a re-run resumes).")] = 16,
    objective: Annotated[
        list[str] | None,
        typer.Option(help="--search: metric to optimize; twice for a Pareto front (mAP, laece0)."),
    ] = None,
    search_seed: Annotated[int, typer.Option(help="--search: the sampler's seed.")] = 0,
    prune: Annotated[
        str | None,
        typer.Option(
            help="--search: stop bad trials early, judged after each epoch on the mAP of the "
            "first prune.images validation images: median, percentile, halving or hyperband "
            "(Optuna's pruners). A pruned trial's run ends `pruned`: final, not a failure."
        ),
    ] = None,
    race: Annotated[
        bool,
        typer.Option(
            "--race",
            help="Race seeds: round r trains seed r of the configs still in; a config beyond noise "
            "worse than the best leaves (paired bootstrap + pooled seed variance, Holm).",
        ),
    ] = False,
    max_seeds: Annotated[int, typer.Option(help="--race: seeds per config at most.")] = 5,
    metric: Annotated[str, typer.Option(help="--race: the metric raced on.")] = "mAP",
    level: Annotated[
        float, typer.Option(help="--race: chance that the truly best config leaves the race.")
    ] = 0.05,
    margin: Annotated[
        float | None,
        typer.Option(help="--race: configs whose interval lies within ±D of the best are tied."),
    ] = None,
    futility: Annotated[
        float,
        typer.Option(
            help="--race: a config (2+ seeds) stops, within noise of the best, when its chance to "
            "leave by --max-seeds (conditional power) is below P, e.g. 0.2 (fewer runs; the best "
            "among near-ties then rests on fewer seeds). Default 0: off."
        ),
    ] = 0.0,
) -> None:
    """Run a grid of trainings (or an adaptive --search); skip finished ones; print a summary (exit
    1 if any job failed)."""
    from focalbench.sweep.dispatch import sweep as run

    code = run(
        overrides or [], jobs=jobs, gpus=gpus, jobs_per_gpu=jobs_per_gpu, launcher=launcher,
        sweep_id=sweep_id, dry_run=dry_run, force=force, retry_failed=retry_failed,
        pending_warn_min=pending_warn_min, search=search, trials=trials,
        objectives=objective or ["mAP"], search_seed=search_seed, prune=prune, race=race,
        max_seeds=max_seeds, metric=metric, level=level, margin=margin, futility=futility,
        console=out,
    )  # fmt: skip
    raise typer.Exit(code)
