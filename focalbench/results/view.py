"""What `focalbench leaderboard` shows: the board read from the CSV (rebuilt from the run folders
first if asked, with what a frozen board kept), the vs-best marks, the marks of configs that left a
race (`sweep --race`), rendered as a table fitted to the terminal, CSV or markdown, and its plots.
Printing goes to the consoles the caller gives (stdout, stderr).
"""

from __future__ import annotations

import csv as csv_module
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from focalbench.errors import InputError
from focalbench.results import frozen
from focalbench.results import leaderboard as lb
from focalbench.results.schema import Board
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
    board = race_marks(board, csv)
    shown = lb.select_metrics(metrics, board.sort)
    if fmt == "table":
        out.print(fitted_table(board, shown, out.width))
    else:
        sys.stdout.write(lb.to_csv(board) if fmt == "csv" else lb.to_markdown(board, shown))
        for note in board.notes if fmt == "csv" else ():  # a CSV has no room for them
            err.print(note, markup=False, highlight=False, soft_wrap=True)
    if plot is not None:
        for path in lb.plot(board, plot, metric=sort if sort in lb.METRICS else "mAP"):
            err.print(f"wrote {path}")


# why a config left a race (metrics/race.py's statuses); the others (best, racing, noise_at_cap)
# got every seed the race had to give
_LEFT = {
    "out": "beyond noise worse than the best",
    "tied": "within the --margin of the best",
    "futile": "within noise of the best, and more seeds were unlikely to separate them",
}
_RACE_COLUMNS = ("config_id", "status", "round", "seeds", "metric")
_SYMBOLS = "†‡§¶"


@dataclasses.dataclass(frozen=True, order=True)
class _Left:
    """A config's exit from a race: sweeps/<sweep>/race.csv said `status` at round `round`."""

    sweep: str
    status: str
    round: int
    metric: str
    seeds: int  # the seeds it had then


def race_marks(board: Board, csv: Path) -> Board:
    """Configs that left a race (out, tied or futile in a sweeps/*/race.csv beside the CSV) and
    have no more ok runs than the race gave them: a mark beside their seed count ("race_mark"),
    a "race" column for the CSV and a note per mark (which race, round and why: fewer seeds by
    design). A by_seed board, or one with no race.csv, comes back unchanged (same bytes)."""
    left = {} if board.by_seed else _left_races(csv.parent)
    marked = {
        e["config_id"]: left[e["config_id"]]
        for e in board.entries
        if e["config_id"] in left and e["n"] <= left[e["config_id"]].seeds
    }
    if not marked:
        return board
    # one mark per exit (race, status, round), in that order
    symbols = {x: _symbol(i) for i, x in enumerate(sorted(set(marked.values())))}
    entries = []
    for e in board.entries:
        x = marked.get(e["config_id"])
        race = f"{x.status} at round {x.round} of {x.sweep}" if x else ""
        entries.append({**e, "race": race, "race_mark": symbols[x] if x else ""})
    notes = [
        f"{sym} left the race {x.sweep} at round {x.round} ({x.status}: {_LEFT[x.status]} on "
        f"{x.metric}); fewer seeds by design"
        for x, sym in symbols.items()
    ]
    return dataclasses.replace(
        board, entries=entries, columns=[*board.columns, "race"], notes=[*board.notes, *notes]
    )


def _left_races(results_dir: Path) -> dict[str, _Left]:
    """{config_id: its exit} from every sweeps/*/race.csv; a config that left several races: the
    exit with the most seeds (it explains the board's count)."""
    left: dict[str, _Left] = {}
    for path in sorted(results_dir.glob("sweeps/*/race.csv")):
        with path.open(newline="") as f:
            rows = list(csv_module.DictReader(f))
        missing = [c for c in _RACE_COLUMNS if rows and c not in rows[0]]
        if missing:
            raise InputError(f"{path}: no column {', '.join(missing)}; is it a race.csv?")
        for r in rows:
            if r["status"] not in _LEFT or r.get("max_seeds", "") == r["seeds"]:
                continue  # racing to the end, or out at the cap: every seed the race had
            if not (r["seeds"].isdigit() and r["round"].isdigit()):
                raise InputError(f"{path}: seeds={r['seeds']!r} round={r['round']!r}: not counts")
            x = _Left(path.parent.name, r["status"], int(r["round"]), r["metric"], int(r["seeds"]))
            if r["config_id"] not in left or x.seeds > left[r["config_id"]].seeds:
                left[r["config_id"]] = x
    return left


def _symbol(i: int) -> str:
    return _SYMBOLS[i] if i < len(_SYMBOLS) else f"{_SYMBOLS[0]}{i + 1}"


def fitted_table(board: Board, metrics: Sequence[str] | None, width: int) -> Table:
    """The rich table, fitted to `width` columns so that no cell wraps: as it is if it fits; else
    compact (lb.to_rich_table); then the metrics other than the sort key leave, from the right
    (AP50, AP75... first), and the caption names them. Still too wide with the sort metric alone:
    rich squeezes the config columns (number columns never wrap)."""
    table = lb.to_rich_table(board, metrics)
    if _natural_width(table) <= width:
        return table
    all_metrics = lb.table_metrics(board, metrics)
    shown = list(all_metrics)
    while True:
        gone = [m for m in all_metrics if m not in shown]
        note = f"not shown at {width} columns: {', '.join(gone)} (--metrics, or a wider terminal)"
        fitted = dataclasses.replace(board, notes=[note, *board.notes]) if gone else board
        table = lb.to_rich_table(fitted, shown, compact=True)
        others = [m for m in shown if m != board.sort]
        if not others or len(shown) == 1 or _natural_width(table) <= width:
            return table
        # AP50, AP75, APs... (mAP at one threshold or size) leave before the calibration metrics
        partial = [m for m in others if m in lb.COCO_STATS and m != "mAP"]
        shown.remove((partial or others)[-1])


def _natural_width(table: Table) -> int:
    """The table's width with no cell wrapped."""
    console = Console(width=10_000)
    return Measurement.get(console, console.options, table).maximum
