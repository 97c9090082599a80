"""`focalbench leaderboard`, `compare` and `evaluate`: reading results."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from focalbench.cli.app import app, err, out, print_metrics


@app.command()
def leaderboard(
    csv: Annotated[Path, typer.Option(help="The runs CSV.")] = Path("results/runs.csv"),
    sort: Annotated[
        str, typer.Option(help="Metric to sort by (lower-is-better metrics sort ascending).")
    ] = "mAP",
    where: Annotated[
        list[str] | None, typer.Option(help="Filter key=value on any column; repeatable.")
    ] = None,
    by_seed: Annotated[
        bool, typer.Option("--by-seed", help="One line per run instead of mean ± std.")
    ] = False,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or md.")] = "table",
    metrics: Annotated[
        str | None,
        typer.Option(
            help="Metrics to show, e.g. mAP,AP75,dece, or all (table default: mAP,AP50,laece0,lrp; "
            "md: all)."
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Write alpha x gamma heatmaps (and a mAP vs LaECE0 "
            "scatter next to it) to this PNG."
        ),
    ] = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Regenerate the CSV from the run folders first.")
    ] = False,
    noise: Annotated[
        bool,
        typer.Option(
            "--noise/--no-noise",
            help="A 'vs best' column: is each config within noise of the best (paired bootstrap "
            "of `compare` on the sort metric)? n/a where run folders are gone; not with --by-seed.",
        ),
    ] = True,
    n_boot: Annotated[int, typer.Option(min=1, help="Bootstrap resamples for --noise.")] = 1000,
    seed: Annotated[
        int, typer.Option(help="Resampling seed for --noise: same seed, same marks.")
    ] = 0,
    freeze: Annotated[
        bool,
        typer.Option(
            "--freeze",
            help="Also keep what this board read from the run folders (config keys, vs-best "
            "marks) in <csv stem>.frozen.json, so the same command gives the same board from the "
            "CSV alone once the folders are gone.",
        ),
    ] = False,
) -> None:
    """Rank runs: latest row per run id, seeds aggregated as mean ± std, marked within noise of the
    best or not."""
    from focalbench.results.view import show_leaderboard

    show_leaderboard(
        csv, out, err, sort=sort, where=where or [], by_seed=by_seed, fmt=fmt, metrics=metrics,
        plot=plot, rebuild=rebuild, noise=noise, n_boot=n_boot, seed=seed, freeze=freeze,
    )  # fmt: skip


@app.command()
def evaluate(
    gt: Annotated[Path, typer.Argument(help="COCO ground-truth json.", show_default=False)],
    dets: Annotated[
        Path, typer.Argument(help="COCO results json (list of detections).", show_default=False)
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
    calib_threshold: Annotated[
        str,
        typer.Option(
            help="Which detections LaECE0/LaACE0/LRP see: lrp (per-class LRP-optimal), none, "
            "or a score."
        ),
    ] = "lrp",
    plot: Annotated[Path | None, typer.Option(help="Write a reliability diagram PNG here.")] = None,
) -> None:
    """mAP + calibration (LaECE0, LaACE0, LRP, D-ECE, Brier) of any COCO results file."""
    from focalbench.metrics import evaluate_files, plot_reliability

    result = evaluate_files(gt, dets, calib_threshold=calib_threshold)
    if plot is not None:
        plot_reliability(result, plot)
    if as_json:
        from focalbench.metrics.evaluate import to_json

        result.pop("reliability", None)
        sys.stdout.write(to_json(result) + "\n")  # strict JSON: NaN becomes null
        return
    print_metrics(result, title=f"{dets.name} vs {gt.name}")
    if plot is not None:
        out.print(f"reliability diagram: {plot}")


_RUN_SPEC = "Run id, run folder, or config selector key=value[,key=value] (all its ok seeds)."


@app.command()
def compare(
    a: Annotated[str, typer.Argument(metavar="A", help=_RUN_SPEC, show_default=False)],
    b: Annotated[str, typer.Argument(metavar="B", help=_RUN_SPEC, show_default=False)],
    metric: Annotated[
        list[str] | None,
        typer.Option(
            help="Metric to compare; repeatable (mAP, AP50, AP75, AR100, laece0, laace0, lrp, "
            "dece, brier). Default: mAP and laece0."
        ),
    ] = None,
    n_boot: Annotated[int, typer.Option(min=1, help="Bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Resampling seed: same seed, same numbers.")] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
    csv: Annotated[Path, typer.Option(help="The runs CSV (run ids, selectors).")] = Path(
        "results/runs.csv"
    ),
) -> None:
    """Paired bootstrap over the validation images: A - B, its 95% interval and P(A wins)."""
    from focalbench.results import compare as cmp

    result = cmp.compare(a, b, metrics=metric, n_boot=n_boot, seed=seed, csv_path=csv)
    if as_json:
        sys.stdout.write(cmp.to_json(result) + "\n")
        return
    out.print(cmp.to_rich_table(result))
    from focalbench.results.power import resolution_hint

    for m in result.comparison.metrics:  # an interval that holds 0: what would resolve it
        if m.lo <= 0 <= m.hi:
            hint = resolution_hint(
                list(result.runs_a), list(result.runs_b), m.metric, n_boot=n_boot, seed=seed
            )
            if hint:
                out.print(hint, highlight=False, soft_wrap=True)


@app.command()
def power(
    a: Annotated[str, typer.Argument(metavar="A", help=_RUN_SPEC, show_default=False)],
    b: Annotated[str, typer.Argument(metavar="B", help=_RUN_SPEC, show_default=False)],
    diff: Annotated[
        float, typer.Option(help="The difference to resolve, in the metric's units (e.g. 0.01).")
    ],
    metric: Annotated[str, typer.Option(help="The metric (as compare's).")] = "mAP",
    n_boot: Annotated[int, typer.Option(min=1, help="Bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Resampling seed.")] = 0,
    csv: Annotated[Path, typer.Option(help="The runs CSV (run ids, selectors).")] = Path(
        "results/runs.csv"
    ),
) -> None:
    """Seeds (or validation images) needed to resolve a difference of --diff between A and B with
    80% power at the 95% level, from the seed- and image-level variance of the runs so far."""
    from focalbench.results.power import power as estimate
    from focalbench.results.power import to_lines

    result = estimate(a, b, diff, metric=metric, n_boot=n_boot, seed=seed, csv_path=csv)
    for line in to_lines(result):
        out.print(line, highlight=False, soft_wrap=True)
