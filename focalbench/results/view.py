"""What `focalbench leaderboard` shows: the board read from the CSV (rebuilt from the run folders
first if asked, with what a frozen board kept), the vs-best marks, rendered as a table, CSV or
markdown, and its plots. Printing goes to the consoles the caller gives (stdout, stderr).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from focalbench.errors import InputError
from focalbench.results import frozen
from focalbench.results import leaderboard as lb
from focalbench.results.store import read_rows
from focalbench.results.store import rebuild as rebuild_csv

FORMATS = ("table", "csv", "md")


def show_leaderboard(
    csv: Path,
    out,
    err,
    *,
    sort: str = "mAP",
    where: Sequence[str] = (),
    by_seed: bool = False,
    fmt: str = "table",
    metrics: str | None = None,
    plot: Path | None = None,
    rebuild: bool = False,
    noise: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    freeze: bool = False,
) -> None:
    """Build the board and print it to `out` (notes and written files to `err`)."""
    if fmt not in FORMATS:
        raise InputError(f"--format={fmt!r}; choose from {sorted(FORMATS)}")
    if rebuild:
        n = rebuild_csv(csv.parent, csv)
        err.print(f"rebuilt {csv} from the run folders: {n} rows")
    kept = frozen.load(csv)
    board = lb.leaderboard(
        read_rows(csv), sort=sort, where=list(where), by_seed=by_seed,
        known_configs=kept["configs"],
    )  # fmt: skip
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
