"""The Typer app, the console entry point (one-line errors, exit codes) and what every command
prints with. The commands live in the modules beside this one, one room each.
"""

from __future__ import annotations

import sys
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
EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    """focalbench: which classification loss, which alpha/gamma, which matching cost — for accuracy
    and calibration."""


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
