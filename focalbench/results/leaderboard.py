"""The leaderboard: runs.csv -> latest row per run id -> ok runs grouped by config -> ranked.

The grouping key is CONFIG_KEYS, the science config without the seed. Per group and metric: the
mean, the sample std (ddof=1) and n, the number of runs with a value for that metric. The std of a
single value is NaN, not 0: "one seed" and "the seeds agree exactly" are different claims, and the
tables print the former as a bare mean.
Outputs: a rich table (terminal), CSV (mean and std columns), markdown (papers); plots in plots.py.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock
from rich.table import Table

from focalbench.errors import InputError
from focalbench.results.store import (
    CSV_COLUMNS,
    STATUSES,
    atomic_write_text,
    format_cell,
    latest_rows,
)

METRICS = ("mAP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "laece0", "laace0", "lrp", "dece",
           "brier", "imgs_per_s", "wall_s")  # fmt: skip
CONFIG_KEYS = ("model", "backbone", "loss", "alpha", "gamma", "matcher", "normalization", "dataset",
               "train_images", "val_images", "epochs", "image_size")  # fmt: skip
LOWER_IS_BETTER = {"laece0", "laace0", "lrp", "dece", "brier", "wall_s"}
_COARSE = {"imgs_per_s", "wall_s"}  # throughput and time: one decimal; scores: three


@dataclass
class Board:
    """A ranked leaderboard.

    entries: one dict per config (per run with by_seed). Grouped: the config keys (str), per
      metric f"{m}_mean", f"{m}_std" (float; NaN when missing or n<2) and f"{m}_n" (int), and "n"
      (runs). by_seed: the config keys, "seed", "run_id" (str) and one float per metric.
    columns: the columns of to_csv, in order.
    not_ok: latest attempts (after --where) left out by status: {"failed": 1, "diverged": 0, ...}.
    rows: the ok rows behind the entries (plots regroups them when by_seed).
    """

    entries: list[dict[str, Any]]
    columns: list[str]
    sort: str = "mAP"
    by_seed: bool = False
    not_ok: dict[str, int] = field(default_factory=dict)
    rows: list[dict[str, str]] = field(default_factory=list)


def _canon(value: str) -> str:
    """Numbers compare by value ("2" == "2.0" == "2.00"); anything else as the stripped string."""
    value = value.strip()
    try:
        x = float(value)
    except ValueError:
        return value
    return str(int(x)) if x.is_integer() else repr(x)


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:  # empty cell: the metric was not computed
        return math.nan


def _resolve(name: str, choices: Sequence[str], option: str) -> str:
    """Exact name, else a case-insensitive match (--sort map); else an error listing the choices."""
    if name in choices:
        return name
    folded = {c.lower(): c for c in choices}
    if name.lower() in folded:
        return folded[name.lower()]
    raise InputError(f"{option} {name!r} is unknown; choose from: {', '.join(choices)}")


def _parse_where(where: Iterable[str]) -> list[tuple[str, str]]:
    filters = []
    for item in where:
        if "=" not in item:
            raise InputError(f"--where {item!r}: expected key=value, e.g. loss=focal or gamma=2")
        key, value = item.split("=", 1)
        filters.append((_resolve(key.strip(), CSV_COLUMNS, "--where key"), _canon(value)))
    return filters


def leaderboard(
    rows: list[dict[str, str]], sort: str = "mAP", where: Iterable[str] = (), by_seed: bool = False
) -> Board:
    """Latest row per run id, filtered by `where` (AND of key=value items), ok rows grouped by
    config (or one entry per run with by_seed), sorted by `sort`: descending unless in
    LOWER_IS_BETTER, NaN last. An unknown sort metric or where key -> InputError."""
    sort = _resolve(sort, METRICS, "--sort")
    filters = _parse_where(where)
    latest = [r for r in latest_rows(rows).values() if all(_canon(r[k]) == v for k, v in filters)]
    not_ok = {s: 0 for s in STATUSES if s != "ok"}
    for r in latest:
        if r["status"] != "ok":
            not_ok[r["status"]] = not_ok.get(r["status"], 0) + 1
    ok = [r for r in latest if r["status"] == "ok"]

    if by_seed:
        columns = [*CONFIG_KEYS, "seed", "run_id", *METRICS]
        entries = [
            {
                **{k: _canon(r[k]) for k in CONFIG_KEYS},
                **{"seed": r["seed"], "run_id": r["run_id"]},
                **{m: _number(r[m]) for m in METRICS},
            }
            for r in ok
        ]
        value_key = sort
    else:
        columns = [*CONFIG_KEYS, *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")), "n"]
        groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
        for r in ok:
            groups.setdefault(tuple(_canon(r[k]) for k in CONFIG_KEYS), []).append(r)
        entries = [_aggregate(key, members) for key, members in groups.items()]
        value_key = f"{sort}_mean"

    sign = 1.0 if sort in LOWER_IS_BETTER else -1.0

    def rank(e: dict[str, Any]) -> tuple[bool, float, tuple[str, ...]]:
        x = e[value_key]
        # ties (and NaNs among themselves) fall back to the config, so the order is deterministic
        ident = tuple(e.get(k, "") for k in (*CONFIG_KEYS, "seed", "run_id"))
        return (math.isnan(x), 0.0 if math.isnan(x) else sign * x, ident)

    entries.sort(key=rank)
    return Board(entries, columns, sort, by_seed, not_ok, ok)


def _aggregate(key: tuple[str, ...], members: list[dict[str, str]]) -> dict[str, Any]:
    entry: dict[str, Any] = dict(zip(CONFIG_KEYS, key))
    for m in METRICS:
        values = [x for x in (_number(r[m]) for r in members) if not math.isnan(x)]
        entry[f"{m}_mean"] = statistics.fmean(values) if values else math.nan
        entry[f"{m}_std"] = statistics.stdev(values) if len(values) > 1 else math.nan  # ddof=1
        entry[f"{m}_n"] = len(values)
    entry["n"] = len(members)
    return entry


# --- output ---------------------------------------------------------------------------------------


def _cell(board: Board, e: dict[str, Any], m: str) -> str:
    """'0.312 ± 0.010'; a bare mean when n<2; '–' if missing; '(n=2)' if some runs lack it."""
    digits = 1 if m in _COARSE else 3
    if board.by_seed:
        x = e[m]
        return "–" if math.isnan(x) else f"{x:.{digits}f}"
    mean, std, n = e[f"{m}_mean"], e[f"{m}_std"], e[f"{m}_n"]
    if math.isnan(mean):
        return "–"
    text = f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"
    return text if n == e["n"] else f"{text} (n={n})"


def _split_config(board: Board) -> tuple[list[str], dict[str, str]]:
    """Config columns to show (loss, alpha, gamma always; others if they vary), and the constant
    ones for the title (empty constants, e.g. no matcher for RetinaNet, left out)."""
    varying, constant = [], {}
    for k in CONFIG_KEYS:
        values = {e[k] for e in board.entries}
        if len(values) > 1 or k in ("loss", "alpha", "gamma"):
            varying.append(k)
        elif values and (v := board.entries[0][k]) != "":
            constant[k] = v
    return varying, constant


# what fits an 80-column terminal; --metrics all (or a list) shows more
TABLE_METRICS = ("mAP", "AP50", "laece0", "lrp")


def select_metrics(names: str | None, sort: str) -> list[str] | None:
    """--metrics 'mAP,laece0' or 'all' -> metric names (validated); None: the format's default."""
    if names is None:
        return None
    if names.strip().lower() == "all":
        return list(METRICS)
    chosen = [_resolve(n.strip(), METRICS, "--metrics") for n in names.split(",") if n.strip()]
    return chosen if sort in chosen else [sort, *chosen]


def _shown_metrics(board: Board, metrics: Sequence[str] | None = None) -> list[str]:
    """Metrics with a value somewhere (a metric no run logged would be a column of dashes)."""
    key = "{}" if board.by_seed else "{}_mean"
    pool = list(metrics) if metrics else list(METRICS)
    shown = [m for m in pool if any(not math.isnan(e[key.format(m)]) for e in board.entries)]
    return shown or pool


def _row_cells(
    board: Board, e: dict[str, Any], varying: list[str], metrics: list[str]
) -> list[str]:
    config = [e[k] if e[k] != "" else "off" if k == "alpha" else "–" for k in varying]
    ident = [e["seed"], e["run_id"]] if board.by_seed else []
    tail = [] if board.by_seed else [str(e["n"])]
    return [*config, *ident, *(_cell(board, e, m) for m in metrics), *tail]


def _headers(board: Board, varying: list[str], metrics: list[str]) -> list[str]:
    return [
        *varying,
        *(["seed", "run_id"] if board.by_seed else []),
        *(f"{m} {'↓' if m in LOWER_IS_BETTER else '↑'}" for m in metrics),
        *([] if board.by_seed else ["n"]),
    ]


def _notes(board: Board, constant: dict[str, str]) -> tuple[str, str]:
    title = ", ".join(f"{k}={v}" for k, v in constant.items())
    excluded = ", ".join(f"{n} {s}" for s, n in board.not_ok.items() if n)
    how = "one row per run" if board.by_seed else "mean ± std over seeds (sample std; n = runs)"
    return title, f"{how}; sorted by {board.sort}" + (f"; excluded: {excluded}" if excluded else "")


def to_rich_table(board: Board, metrics: Sequence[str] | None = None) -> Table:
    """Constant config columns go to the title; the caption counts failed/diverged/interrupted.
    Shows TABLE_METRICS (plus the sort key) unless `metrics` names others."""
    varying, constant = _split_config(board)
    default = TABLE_METRICS if board.sort in TABLE_METRICS else (board.sort, *TABLE_METRICS)
    metrics = _shown_metrics(board, metrics or default)
    title, caption = _notes(board, constant)
    table = Table(title=title or None, caption=caption)
    for h in _headers(board, varying, metrics):
        bold = h.split(" ")[0] == board.sort
        table.add_column(
            h,
            justify="left" if h in (*CONFIG_KEYS, "run_id") else "right",
            style="bold" if bold else None,
            no_wrap=bold,
        )
    for e in board.entries:
        table.add_row(*_row_cells(board, e, varying, metrics))
    return table


def to_csv(board: Board) -> str:
    """board.columns as the header; floats as in runs.csv (6 significant digits), NaN empty."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(board.columns)
    for e in board.entries:
        writer.writerow(
            [
                "" if isinstance(v, float) and math.isnan(v) else format_cell(v)
                for v in (e[c] for c in board.columns)
            ]
        )
    return buf.getvalue()


def to_markdown(board: Board, metrics: Sequence[str] | None = None) -> str:
    """A GitHub/pandoc pipe table (config columns, mean ± std, n), then one line of notes."""
    varying, constant = _split_config(board)
    metrics = _shown_metrics(board, metrics)
    headers = _headers(board, varying, metrics)
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(":---" if h in (*CONFIG_KEYS, "run_id") else "---:" for h in headers) + "|",
    ]
    lines += [
        "| " + " | ".join(_row_cells(board, e, varying, metrics)) + " |" for e in board.entries
    ]
    title, caption = _notes(board, constant)
    return "\n".join(lines) + "\n\n" + (f"{title}; " if title else "") + caption + "\n"


def plot(
    board_or_rows: Board | list[dict[str, str]], path: str | Path, metric: str = "mAP"
) -> list[Path]:
    """Heatmaps + scatter PNGs (see plots.py; matplotlib is imported only here)."""
    from focalbench.results import plots

    return plots.plot(board_or_rows, path, metric)


# --- rebuild --------------------------------------------------------------------------------------


def rebuild(results_dir: Path, csv_path: Path) -> int:
    """Regenerate runs.csv from results_dir/runs/*/row.json and results_dir/sweeps/*/*/row.json.

    Each row.json holds the latest attempt of its run folder, so the rebuilt log has one row per
    folder (earlier attempts are gone), sorted by "started". Written atomically under the lock of
    store.append_row; folders are listed inside the lock, so a run finishing meanwhile is in the
    rebuilt file or appended after it (at worst twice, which latest_rows absorbs). No row.json ->
    InputError and the CSV is left untouched: an empty rebuild must not wipe a log.
    """
    results_dir, csv_path = Path(results_dir), Path(csv_path)
    if not results_dir.is_dir():
        raise InputError(f"--rebuild: results folder {results_dir} does not exist")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(csv_path) + ".lock"):
        files = sorted(results_dir.glob("runs/*/row.json")) + sorted(
            results_dir.glob("sweeps/*/*/row.json")
        )
        if not files:
            raise InputError(
                f"--rebuild: no run folders with row.json under {results_dir}/runs or "
                f"{results_dir}/sweeps; {csv_path} left unchanged"
            )
        rows = [_read_row_json(f) for f in files]
        rows.sort(
            key=lambda r: str(r.get("started") or "")
        )  # stable: same start keeps folder order
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for r in rows:  # keys outside CSV_COLUMNS are ignored
            writer.writerow([format_cell(r.get(c)) for c in CSV_COLUMNS])
        atomic_write_text(csv_path, buf.getvalue())
    return len(rows)


def _read_row_json(path: Path) -> dict[str, Any]:
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(
            f"--rebuild: cannot read {path} ({exc}); fix or delete that run folder"
        ) from None
    if not isinstance(row, dict) or "run_id" not in row:
        raise InputError(f"--rebuild: {path} is not a row.json (expected an object with run_id)")
    return row
