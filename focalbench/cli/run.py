"""`focalbench train` (one run), `pretrain` (the synthetic warm-start backbone), `losses` (what is
registered)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from focalbench.cli.app import EXTRA, OVERRIDE_HELP, app, err, out, print_metrics
from focalbench.errors import InputError


@app.command(context_settings=EXTRA)
def train(
    overrides: Annotated[
        list[str] | None, typer.Argument(help=OVERRIDE_HELP, show_default=False)
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Re-run even if this config has an ok row.")
    ] = False,
) -> None:
    """Train and evaluate one run; append its row to results/runs.csv."""
    from focalbench.config import compose
    from focalbench.engine.run import run

    for override in overrides or []:
        if override.startswith("hparams_search="):
            raise InputError(
                f"{override} is a grid of runs; run it with `focalbench sweep {override}`"
            )
    cfg = compose(overrides or [])
    try:
        result = run(cfg, force=force, console=out)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the run recorded itself `interrupted`
        err.print("interrupted; run the same command again to resume from the last checkpoint")
        raise typer.Exit(130) from None
    if result.status == "skipped":
        out.print(
            f"{result.run_id}: already done (an ok row exists in {cfg.results_dir}/runs.csv); "
            "--force re-runs it"
        )
        return
    if result.status == "pruned":  # the search's pruner stopped it: a decision, not a failure
        out.print(f"{result.run_id}: {result.error} (run folder {result.run_dir})")
        return
    if result.status != "ok":
        err.print(f"{result.run_id}: {result.status}: {result.error} (run folder {result.run_dir})")
        raise typer.Exit(1)
    print_metrics(result.metrics, title=f"{result.run_id} — {result.run_dir}")


@app.command()
def losses() -> None:
    """Registered losses (and matching costs) with their parameters and papers."""
    from focalbench.losses import LOSSES

    table = Table(title="classification and box losses", title_justify="left")
    for col in ("name", "kind", "target", "parameters (defaults)", "paper"):
        table.add_column(col)
    for name, spec in sorted(LOSSES.items()):
        params = ", ".join(f"{k}={v}" for k, v in spec.params.items()) or "—"
        table.add_row(name, spec.kind, spec.target, params, spec.paper)
    out.print(table)
    from focalbench.matching import MATCH_COSTS

    table = Table(title="DETR matching class costs (matcher=NAME)", title_justify="left")
    table.add_column("name")
    table.add_column("cost")
    for name, spec in sorted(MATCH_COSTS.items()):
        table.add_row(name, spec.summary)
    out.print(table)


@app.command()
def pretrain(
    backbone: Annotated[str, typer.Option(help="resnet18 or resnet50.")] = "resnet18",
    seed: Annotated[int, typer.Option(min=0, help="Same seed, identical bytes.")] = 0,
    results_dir: Annotated[
        Path, typer.Option(help="Cache root: writes <results-dir>/pretrained/<name>.pt.")
    ] = Path("results"),
    force: Annotated[bool, typer.Option("--force", help="Train again over the cache.")] = False,
) -> None:
    """Pretrain a backbone on shape crops of the embedded data (a few CPU minutes), for
    model.weights=synthetic. A second call reuses the cached file."""
    from focalbench.models.pretrain import pretrain as run_pretrain

    result = run_pretrain(results_dir, backbone, seed, force=force)
    how = "cached" if result.reused else "wrote"
    out.print(
        f"{how} {result.path} (held-out crop accuracy {result.val_accuracy:.3f})", soft_wrap=True
    )
