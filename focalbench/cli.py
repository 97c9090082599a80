"""The focalbench command line. Thin: parse, call one function, print. torch is imported only by
commands that train (`--help`, `evaluate`, `leaderboard` and `data check` start fast).

Exit codes: 0 ok; 1 a check found problems or a run/sweep ended failed; 2 bad input (usage, config,
files); 130 interrupted. Errors are one line on stderr; `--debug` shows the traceback.
"""

from __future__ import annotations

import os
import sys

# Passive OpenMP waits, set before torch loads: when other processes share the cores (a sweep's
# jobs, a busy laptop) spinning threads slow a training step several-fold; idle cores cost nothing
# either way.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from focalbench.errors import InputError

app = typer.Typer(
    name="focalbench",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Sweep detection classification losses, focal alpha/gamma and DETR matching costs; "
    "rank runs by mAP and calibration.",
)
data_app = typer.Typer(no_args_is_help=True, help="Make, cut and check COCO-format datasets.")
app.add_typer(data_app, name="data")
out = Console()
err = Console(stderr=True)
OVERRIDE_HELP = "Hydra overrides, e.g. loss=bce loss.gamma=1 train.epochs=2 experiment=smoke"
_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    """focalbench: which classification loss, which alpha/gamma, which matching cost — for accuracy
    and calibration."""


@app.command(context_settings=_EXTRA)
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
    if result.status != "ok":
        err.print(f"{result.run_id}: {result.status}: {result.error} (run folder {result.run_dir})")
        raise typer.Exit(1)
    print_metrics(result.metrics, title=f"{result.run_id} — {result.run_dir}")


@app.command(context_settings=_EXTRA)
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
) -> None:
    """Run a grid of trainings (or an adaptive --search); skip finished ones; print a summary (exit
    1 if any job failed)."""
    from focalbench import sweep as sweeper
    from focalbench.search import is_search_override

    gpu_ids = _parse_gpus(gpus)
    if search is not None or any(is_search_override(o) for o in overrides or []):
        if search is None:
            bad = next(o for o in overrides or [] if is_search_override(o))
            raise InputError(f"{bad}: interval(...) is a search dimension; add --search tpe")
        if launcher != "pool" or dry_run:
            raise InputError("--search runs trials in the local pool: drop --launcher/--dry-run")
        from focalbench.search import run_search

        code = run_search(
            overrides or [], trials, objective or ["mAP"], search, search_seed, jobs=jobs,
            gpus=gpu_ids, jobs_per_gpu=jobs_per_gpu, console=out,
        )  # fmt: skip
        raise typer.Exit(code)
    # pool and submitit_slurm plan first and submit only unfinished runs; others are Hydra's
    if launcher not in ("pool", "submitit_slurm"):
        code = sweeper.run_hydra_launcher(overrides or [], launcher, sweep_id, dry_run=dry_run)
    else:
        code = sweeper.run_sweep(
            overrides or [],
            jobs=jobs,
            gpus=gpu_ids,
            jobs_per_gpu=jobs_per_gpu,
            sweep_id=sweep_id,
            dry_run=dry_run,
            force=force,
            retry_failed=retry_failed,
            console=out,
            launcher=launcher,
            pending_warn_min=pending_warn_min,
        )
    raise typer.Exit(code)


def _parse_gpus(gpus: str | None) -> list[int] | None:
    if gpus is None:
        return None
    try:
        return [int(g) for g in gpus.split(",") if g.strip()]
    except ValueError:
        raise InputError(f"--gpus={gpus!r}: expected GPU indices such as 0,1") from None


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
    from focalbench.results import leaderboard as lb
    from focalbench.results.store import read_rows
    from focalbench.results.store import rebuild as rebuild_csv

    if fmt not in ("table", "csv", "md"):
        raise InputError(f"--format={fmt!r}; choose from ['csv', 'md', 'table']")
    if rebuild:
        n = rebuild_csv(csv.parent, csv)
        err.print(f"rebuilt {csv} from the run folders: {n} rows")
    from focalbench.results import frozen

    kept = frozen.load(csv)
    board = lb.leaderboard(
        read_rows(csv), sort=sort, where=where or [], by_seed=by_seed, known_configs=kept["configs"]
    )
    if freeze:
        frozen.save(csv, {**kept, "configs": {**kept["configs"], **board.flats}})
    if noise:
        from focalbench.results.noise import mark

        board = mark(board, csv, n_boot=n_boot, seed=seed, freeze=freeze)
    shown = lb.select_metrics(metrics, board.sort)
    if fmt == "table":
        out.print(lb.to_rich_table(board, shown))
    else:
        sys.stdout.write(lb.to_csv(board) if fmt == "csv" else lb.to_markdown(board, shown))
        for note in board.notes if fmt == "csv" else ():  # a CSV has no room for them
            err.print(note, markup=False, highlight=False, soft_wrap=True)
    if plot is not None:
        for path in lb.plot(board, plot, metric=sort if sort in lb.METRICS else "mAP"):
            err.print(f"wrote {path}")


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
    from focalbench import compare as cmp

    result = cmp.compare(a, b, metrics=metric, n_boot=n_boot, seed=seed, csv_path=csv)
    if as_json:
        sys.stdout.write(cmp.to_json(result) + "\n")
        return
    out.print(cmp.to_rich_table(result))


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
    from focalbench.pretrain import pretrain as run_pretrain

    result = run_pretrain(results_dir, backbone, seed, force=force)
    how = "cached" if result.reused else "wrote"
    out.print(
        f"{how} {result.path} (held-out crop accuracy {result.val_accuracy:.3f})", soft_wrap=True
    )


@data_app.command()
def synth(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder to write annotations.json and images/ to.")
    ],
    images: Annotated[int, typer.Option(min=1, help="Number of images.")] = 200,
    image_size: Annotated[int, typer.Option(min=32, help="Square image side in pixels.")] = 256,
    seed: Annotated[int, typer.Option(min=0, help="Same seed, identical files.")] = 0,
    difficulty: Annotated[
        str,
        typer.Option(
            help="Preset: easy (learnable in a few CPU minutes) or hard (the original images); "
            "see the README for each one's class frequencies and object sizes."
        ),
    ] = "easy",
) -> None:
    """Write the embedded procedurally generated COCO-format dataset."""
    from focalbench.data import synthesize

    with out.status(f"drawing {images} images"):
        ann = synthesize(out_dir, images, image_size, seed, difficulty)
    out.print(f"wrote {ann} and {images} images under {out_dir / 'images'}")


@data_app.command()
def subset(
    ann: Annotated[Path, typer.Option(help="COCO annotation json, e.g. instances_val2017.json.")],
    images: Annotated[Path, typer.Option(help="The image folder the json refers to.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the subset json.")],
    n: Annotated[int, typer.Option(min=1, help="Number of images in the subset.")] = 500,
    categories: Annotated[str | None, typer.Option(help="Comma-separated category names.")] = None,
    seed: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """Write a seeded subset of a COCO json (images referenced, not copied)."""
    from focalbench.data import subset_coco

    cats = [c.strip() for c in categories.split(",")] if categories else None
    path = subset_coco(ann, images, out_dir, n=n, categories=cats, seed=seed)
    out.print(f"wrote {path}")


@data_app.command()
def check(
    ann: Annotated[Path, typer.Argument(help="COCO annotation json.", show_default=False)],
    images: Annotated[
        Path | None, typer.Option(help="Image folder: also check every file exists.")
    ] = None,
) -> None:
    """Check a COCO json (schema, ids, boxes, image files); exit 1 when it finds problems."""
    from focalbench.data import check_coco

    report = check_coco(ann, images)
    for line in report.to_lines():
        out.print(line, highlight=False)
    if not report.ok:
        raise typer.Exit(1)


def print_metrics(metrics: dict, title: str) -> None:
    """The headline numbers: COCO stats and calibration side by side, one metric per line."""
    from focalbench.metrics import COCO_STAT_KEYS  # numpy only: no torch

    calib = ("laece0", "laace0", "lrp", "dece", "brier", "imgs_per_s")
    table = Table(title=title, title_justify="left")
    for col in ("COCO", "", "calibration", ""):
        table.add_column(col, justify="right" if col == "" else "left")
    left = [k for k in COCO_STAT_KEYS if k in metrics]
    right = [k for k in calib if k in metrics]
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else None
        b = right[i] if i < len(right) else None
        a_value = _fmt(metrics[a]) if a else ""
        table.add_row(a or "", a_value, b or "", _fmt(metrics[b]) if b else "")
    out.print(table)


def _fmt(value) -> str:
    return (
        "—"
        if value is None or value != value
        else f"{value:.4f}"
        if isinstance(value, float)
        else str(value)
    )


def _click_errors() -> tuple:
    """(NoArgsIsHelpError, UsageError, ClickException) of the click that typer runs on: its own
    vendored copy (recent typer) or click itself (older typer)."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    no_args = getattr(exceptions, "NoArgsIsHelpError", ())  # () in an except clause matches nothing
    return no_args, exceptions.UsageError, exceptions.ClickException


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors with exit code 2 for bad input (usage, config, files);
    --debug re-raises bad input with its traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    command = typer.main.get_command(app)
    no_args, usage_error, click_error = _click_errors()
    try:
        code = command.main(args=argv, prog_name="focalbench", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except no_args as exc:  # bare `focalbench` or `focalbench data`: the help text
        exc.show()
        code = 2
    except usage_error as exc:  # unknown option, bad option value, missing argument
        if debug:
            raise
        where = f"; see `{exc.ctx.command_path} --help`" if exc.ctx is not None else ""
        message = exc.format_message().rstrip(".")
        err.print(f"error: {message}{where}", highlight=False, soft_wrap=True)
        code = 2
    except click_error as exc:
        if debug:
            raise
        err.print(f"error: {exc.format_message()}", highlight=False, soft_wrap=True)
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted; run the same command again to resume")
        code = 130
    except InputError as exc:
        if debug:
            raise
        err.print(f"error: {exc}", highlight=False, soft_wrap=True)
        code = 2
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
