"""The leaderboard: runs.csv -> latest row per run id -> ok runs grouped by config -> ranked.

Runs are grouped by config_id, the hash of the science config without the seed (so two learning
rates, or two box heads, are two groups even though runs.csv has no column for either). A row
without one (logged before the column existed) gets it from its run folder's config.yaml, or, when
the folder is gone, from its CSV config columns (CONFIG_KEYS). Next to CONFIG_KEYS the board shows,
as columns, the flat science keys that differ between the groups shown ("train.lr"), read from
each group's config.yaml: what a W&B "group by" shows as the varying parameters.

Per group and metric: the mean, the sample std (ddof=1) and n, the number of runs with a value for
that metric. The std of a single value is NaN, not 0: "one seed" and "the seeds agree exactly" are
different claims, and the tables print the former as a bare mean.
Outputs: a rich table (terminal), CSV (mean and std columns), markdown (papers); plots in plots.py.
noise.py adds the "vs best" column (within noise of the best config or not) to a built board.
Torch-free: the CLI's `leaderboard` must start fast.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from focalbench.config import RunConfig
from focalbench.config import run_id as config_hash
from focalbench.errors import InputError
from focalbench.results import run_configs
from focalbench.results.schema import (
    CONFIG_KEYS,
    LOWER_IS_BETTER,
    METRICS,
    SHOWN_BY_CSV,
    WITHIN_NOISE,
    Board,
)
from focalbench.results.store import CSV_COLUMNS, STATUSES, format_cell, latest_rows

_COARSE = {"imgs_per_s", "wall_s"}  # throughput and time: one decimal; scores: three


def _canon(value: str) -> str:
    """Numbers compare by value ("2" == "2.0" == "2.00"); anything else as the stripped string."""
    value = value.strip()
    try:
        x = float(value)
    except ValueError:
        return value
    return str(int(x)) if x.is_integer() else repr(x)


# the COCOeval stats among METRICS: -1 where the validation set has no object of that size
COCO_STATS = ("mAP", "AP50", "AP75", "APs", "APm", "APl", "AR100")


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
        key = _resolve(key.strip(), CSV_COLUMNS, "--where key")
        null = value.strip().lower() in ("null", "none", "~") or (key, value) == ("alpha", "off")
        filters.append((key, "" if null else _canon(value)))  # empty cell: null (alpha "off")
    return filters


class _RunConfigs:
    """The run folders' configs, each config.yaml read at most once per leaderboard."""

    def __init__(self) -> None:
        self._cache: dict[str, RunConfig | None] = {}

    def of(self, row: dict[str, str]) -> RunConfig | None:
        folder = row.get("run_dir", "")
        if folder not in self._cache:
            self._cache[folder] = run_configs.load(folder)
        return self._cache[folder]

    def config_id(self, row: dict[str, str]) -> str:
        """The row's config_id; else its folder's; else a hash of its CSV config columns (marked
        "csv-": such a group cannot know the keys the CSV lacks)."""
        if row.get("config_id"):
            return row["config_id"]
        cfg = self.of(row)
        if cfg is not None:
            return cfg.config_id
        return "csv-" + config_hash({k: _canon(row.get(k, "")) for k in CONFIG_KEYS})

    def flat(self, members: list[dict[str, str]]) -> dict[str, str]:
        """The flat science keys of a group, from the first member whose folder is readable
        (they share the config); {} when none is."""
        for r in members:
            cfg = self.of(r)
            if cfg is not None:
                return run_configs.flat_science(cfg)
        return {}


def _extra_keys(flats: list[dict[str, str]]) -> list[str]:
    """Flat keys outside SHOWN_BY_CSV with two or more values among the groups that have the key
    (a key only some groups have, such as matcher.* for DETR, is told apart by model already)."""
    order = dict.fromkeys(k for flat in flats for k in flat if k not in SHOWN_BY_CSV)
    return [k for k in order if len({f[k] for f in flats if k in f}) > 1]


def leaderboard(
    rows: list[dict[str, str]],
    sort: str = "mAP",
    where: Iterable[str] = (),
    by_seed: bool = False,
    known_configs: dict[str, dict[str, str]] | None = None,
) -> Board:
    """Latest row per run id, filtered by `where` (AND of key=value items), ok rows grouped by
    config_id (or one entry per run with by_seed), sorted by `sort`: descending unless in
    LOWER_IS_BETTER, NaN last. An unknown sort metric or where key -> InputError.
    known_configs: flat keys per config_id (a freeze, results/frozen.py) for groups whose run
    folders are gone."""
    sort = _resolve(sort, METRICS, "--sort")
    filters = _parse_where(where)
    configs = _RunConfigs()
    latest = [{**r, "config_id": configs.config_id(r)} for r in latest_rows(rows).values()]
    latest = [r for r in latest if all(_canon(r.get(k, "")) == v for k, v in filters)]
    not_ok = {s: 0 for s in STATUSES if s != "ok"}
    for r in latest:
        if r["status"] != "ok":
            not_ok[r["status"]] = not_ok.get(r["status"], 0) + 1
    ok = [r for r in latest if r["status"] == "ok"]

    groups: dict[str, list[dict[str, str]]] = {}
    for r in ok:
        groups.setdefault(r["config_id"], []).append(r)
    # with one group nothing varies: no config.yaml needs reading
    known = known_configs or {}
    flats = (
        {cid: configs.flat(m) or known.get(cid, {}) for cid, m in groups.items()}
        if len(groups) > 1
        else {}
    )
    extra = _extra_keys(list(flats.values()))

    def config_of(r: dict[str, str]) -> dict[str, str]:
        flat = flats.get(r["config_id"], {})
        return {
            **{k: _canon(r.get(k, "")) for k in CONFIG_KEYS},
            **{k: flat.get(k, "") for k in extra},
            "config_id": r["config_id"],
        }

    if by_seed:
        columns = [*CONFIG_KEYS, *extra, "config_id", "seed", "run_id", *METRICS]
        entries = [
            {
                **config_of(r),
                **{"seed": r["seed"], "run_id": r["run_id"]},
                **{m: _number(r[m]) for m in METRICS},
            }
            for r in ok
        ]
        value_key = sort
    else:
        stats = (f"{m}_{s}" for m in METRICS for s in ("mean", "std"))
        columns = [*CONFIG_KEYS, *extra, "config_id", *stats, "n"]
        entries = [{**config_of(m[0]), **_aggregate(m)} for m in groups.values()]
        value_key = f"{sort}_mean"

    sign = 1.0 if sort in LOWER_IS_BETTER else -1.0
    ident_keys = (*CONFIG_KEYS, *extra, "config_id", "seed", "run_id")

    def rank(e: dict[str, Any]) -> tuple[bool, float, tuple[str, ...]]:
        x = e[value_key]
        # ties (and NaNs among themselves) fall back to the config, so the order is deterministic
        ident = tuple(e.get(k, "") for k in ident_keys)
        return (math.isnan(x), 0.0 if math.isnan(x) else sign * x, ident)

    entries.sort(key=rank)
    return Board(entries, columns, sort, by_seed, not_ok, ok, extra, flats=flats)


def _aggregate(members: list[dict[str, str]]) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for m in METRICS:
        values = [x for x in (_number(r[m]) for r in members) if not math.isnan(x)]
        if m in COCO_STATS:  # COCOeval's -1: no ground truth in that area range, not a score
            values = [x for x in values if x >= 0]
        entry[f"{m}_mean"] = statistics.fmean(values) if values else math.nan
        entry[f"{m}_std"] = statistics.stdev(values) if len(values) > 1 else math.nan  # ddof=1
        entry[f"{m}_n"] = len(values)
    entry["n"] = len(members)
    return entry


# --- output ---------------------------------------------------------------------------------------


def _cell(board: Board, e: dict[str, Any], m: str, compact: bool = False) -> str:
    """'0.312 ± 0.010' ('0.312±0.010' compact); a bare mean when n<2; '–' if missing; '(n=2)' if
    some runs lack it."""
    digits = 1 if m in _COARSE else 3
    if board.by_seed:
        x = e[m]
        return "–" if math.isnan(x) else f"{x:.{digits}f}"
    mean, std, n = e[f"{m}_mean"], e[f"{m}_std"], e[f"{m}_n"]
    if math.isnan(mean):
        return "–"
    pm = "±" if compact else " ± "
    text = f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f}{pm}{std:.{digits}f}"
    return text if n == e["n"] else f"{text} (n={n})"


def _split_config(board: Board) -> tuple[list[str], dict[str, str]]:
    """Config columns to show (loss, alpha, gamma always; other CONFIG_KEYS if they vary; the
    extra keys, which vary by construction), and the constant ones for the title (empty constants,
    e.g. no matcher for RetinaNet, left out). config_id is shown too when two configs would
    otherwise look alike (a key that tells them apart is in no readable config.yaml)."""
    varying, constant = [], {}
    for k in CONFIG_KEYS:
        values = {e[k] for e in board.entries}
        if len(values) > 1 or k in ("loss", "alpha", "gamma"):
            varying.append(k)
        elif values and (v := board.entries[0][k]) != "":
            constant[k] = v
    varying += board.extra_keys
    if not board.by_seed and len({tuple(e[k] for k in varying) for e in board.entries}) < len(
        board.entries
    ):
        varying.append("config_id")
    return varying, constant


def _left(board: Board, header: str) -> bool:
    """Text columns are left-aligned, numbers right-aligned."""
    return header in (*board.config_keys, "config_id", "run_id", _VS_BEST)


_VS_BEST = "vs best"  # noise.mark's column, shown right after the sort metric


def _with_mark(board: Board, metrics: list[str], cells: list[str], mark: str) -> list[str]:
    """The metric cells with `mark` inserted after the sort metric's (if the board has marks)."""
    if "vs_best" not in board.columns:
        return cells
    at = metrics.index(board.sort) + 1 if board.sort in metrics else len(metrics)
    return [*cells[:at], mark, *cells[at:]]


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
    board: Board, e: dict[str, Any], varying: list[str], metrics: list[str], compact: bool = False
) -> list[str]:
    config = [e[k] if e[k] != "" else "off" if k == "alpha" else "–" for k in varying]
    ident = [e["seed"], e["run_id"]] if board.by_seed else []
    # a config that left a race (view.race_marks) has its mark beside its seed count
    tail = [] if board.by_seed else [" ".join(filter(None, [str(e["n"]), e.get("race_mark")]))]
    cells = [_cell(board, e, m, compact) for m in metrics]
    mark = "≈" if e.get("vs_best") == WITHIN_NOISE else e.get("vs_best", "")
    return [*config, *ident, *_with_mark(board, metrics, cells, mark), *tail]


def _headers(board: Board, varying: list[str], metrics: list[str]) -> list[str]:
    return [
        *varying,
        *(["seed", "run_id"] if board.by_seed else []),
        *_with_mark(
            board,
            metrics,
            [f"{m} {'↓' if m in LOWER_IS_BETTER else '↑'}" for m in metrics],
            _VS_BEST,
        ),
        *([] if board.by_seed else ["n"]),
    ]


def _notes(board: Board, constant: dict[str, str]) -> tuple[str, str]:
    title = ", ".join(f"{k}={v}" for k, v in constant.items())
    excluded = ", ".join(f"{n} {s}" for s, n in board.not_ok.items() if n)
    how = "one row per run" if board.by_seed else "mean ± std over seeds (sample std; n = runs)"
    return title, f"{how}; sorted by {board.sort}" + (f"; excluded: {excluded}" if excluded else "")


def table_metrics(board: Board, metrics: Sequence[str] | None = None) -> list[str]:
    """The metrics to_rich_table shows: `metrics`, else TABLE_METRICS (plus the sort key)."""
    default = TABLE_METRICS if board.sort in TABLE_METRICS else (board.sort, *TABLE_METRICS)
    return _shown_metrics(board, metrics or default)


def to_rich_table(
    board: Board, metrics: Sequence[str] | None = None, compact: bool = False
) -> Table:
    """Constant config columns go to the title; the caption counts failed/diverged/interrupted,
    then board.notes. Shows table_metrics(board, metrics). Number columns never wrap (the config
    columns give way). compact, for a narrow terminal (view.fitted_table): no vertical rules,
    'mean±std', dotted keys by their last part (train.lr -> lr) where no two end alike."""
    varying, constant = _split_config(board)
    metrics = table_metrics(board, metrics)
    title, caption = _notes(board, constant)
    kind = {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False, "collapse_padding": True}
    table = Table(
        title=title or None, caption="\n".join([caption, *board.notes]), **(kind if compact else {})
    )
    headers = _headers(board, varying, metrics)
    short = [h.rsplit(".", 1)[-1] for h in headers]
    for h, s in zip(headers, short):
        table.add_column(
            s if compact and short.count(s) == 1 else h,
            justify="left" if _left(board, h) else "right",
            style="bold" if h.split(" ")[0] == board.sort else None,
            no_wrap=not _left(board, h),
        )
    for e in board.entries:
        table.add_row(*_row_cells(board, e, varying, metrics, compact))
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
    """A GitHub/pandoc pipe table (config columns, mean ± std, n), then one line of notes and
    board.notes, each a paragraph of its own."""
    varying, constant = _split_config(board)
    metrics = _shown_metrics(board, metrics)
    headers = _headers(board, varying, metrics)
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(":---" if _left(board, h) else "---:" for h in headers) + "|",
    ]
    lines += [
        "| " + " | ".join(_row_cells(board, e, varying, metrics)) + " |" for e in board.entries
    ]
    title, caption = _notes(board, constant)
    notes = [(f"{title}; " if title else "") + caption, *board.notes]
    return "\n".join(lines) + "".join(f"\n\n{n}" for n in notes) + "\n"


def plot(board: Board, path: str | Path, metric: str = "mAP") -> list[Path]:
    """Heatmaps + scatter PNGs of the configs (a by_seed board is regrouped first); see plots.py
    (matplotlib is imported only here)."""
    from focalbench.results import plots

    grouped = leaderboard(board.rows, sort=board.sort) if board.by_seed else board
    return plots.plot(grouped, path, metric)
