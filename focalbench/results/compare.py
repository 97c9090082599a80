"""`focalbench compare A B`: is A better than B beyond noise? A paired bootstrap over the validation
images both predicted (metrics/bootstrap.py; with several seeds a side, a two-level one).

A and B are each a run id (its latest row in runs.csv), a run folder, or a config selector
`key=value[,key=value...]` with the keys of `leaderboard --where` (CSV columns; a Hydra-style group
prefix is dropped: `loss.gamma=2` is `gamma=2`), which takes every ok seed of the one config it
matches. From each run folder: detections.json and the validation ground truth, whose path is
metrics.json's "val_ann"; folders written before that field get it from config.yaml (the embedded
synthetic data, whose cache path follows from the data config). All runs must share one
validation set (same image ids and annotations). Bad input -> InputError, nothing written.
Torch-free (cli -> compare -> metrics, results).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from focalbench.errors import InputError
from focalbench.metrics.bootstrap import Comparison, paired_bootstrap
from focalbench.metrics.evaluate import detection_set, load_json
from focalbench.metrics.resample import LOWER_IS_BETTER, METRICS, ResampledMetrics
from focalbench.results.leaderboard import leaderboard
from focalbench.results.run_files import fingerprint, folder_of, recorded, val_ann_of
from focalbench.results.store import read_rows

DEFAULT_METRICS = ("mAP", "laece0")
# engine/datasets.VAL_SEED_OFFSET (not imported: that module loads torch); a test pins the two
# dotted config keys whose runs.csv column is not their last component
_COLUMN_OF = {
    "model.name": "model",
    "loss.name": "loss",
    "matcher.name": "matcher",
    "data.name": "dataset",
    "loss.beta": "gamma",
}


@dataclass(frozen=True)
class Run:
    run_id: str
    folder: Path
    seed: int | None


@dataclass(frozen=True)
class Result:
    spec_a: str
    spec_b: str
    runs_a: tuple[Run, ...]
    runs_b: tuple[Run, ...]
    gt: Path  # the validation ground truth every run was scored on
    comparison: Comparison

    def to_dict(self) -> dict[str, Any]:
        def side(spec: str, runs: tuple[Run, ...]) -> dict[str, Any]:
            return {
                "spec": spec,
                "run_ids": [r.run_id for r in runs],
                "seeds": [r.seed for r in runs],
                "run_dirs": [str(r.folder) for r in runs],
            }

        return {
            "A": side(self.spec_a, self.runs_a),
            "B": side(self.spec_b, self.runs_b),
            "validation_gt": str(self.gt),
            **self.comparison.to_dict(),
        }


def parse_metrics(names: Sequence[str] | None) -> list[str]:
    """--metric values (case-insensitive) -> metric names; default mAP and laece0."""
    folded = {m.lower(): m for m in METRICS}
    chosen = []
    for name in names or DEFAULT_METRICS:
        if name.lower() not in folded:
            raise InputError(f"--metric {name!r} is unknown; choose from: {', '.join(METRICS)}")
        chosen.append(folded[name.lower()])
    return list(dict.fromkeys(chosen))


def _seed_of(folder: Path) -> int | None:
    import yaml  # only read here: PyYAML comes with hydra

    try:
        seed = yaml.safe_load((folder / "config.yaml").read_text()).get("seed")
    except (OSError, AttributeError, yaml.YAMLError):
        return None
    return int(seed) if isinstance(seed, int) else None


def _selector(spec: str) -> list[str]:
    items = []
    for item in spec.split(","):
        key, _, value = item.partition("=")
        key = key.strip()
        if "." in key:
            key = _COLUMN_OF.get(key, key.rsplit(".", 1)[1])
        items.append(f"{key}={value}")
    return items


def resolve(spec: str, csv_path: Path, side: str) -> list[Run]:
    """A run folder, a key=value selector (all ok seeds of one config) or a run id -> its runs."""
    folder = Path(spec)
    if folder.is_dir():
        if not (folder / "detections.json").is_file():
            raise InputError(f"{side} {spec!r}: a folder without detections.json is no run folder")
        rid = recorded(folder, "run_id")
        return [Run(str(rid or folder.name), folder, _seed_of(folder))]
    rows = read_rows(csv_path)
    if "=" in spec:
        try:
            board = leaderboard(rows, where=_selector(spec))
        except InputError as exc:
            raise InputError(f"{side} selector {spec!r}: {exc}") from None
        if not board.rows:
            raise InputError(f"{side} selector {spec!r} matches no ok run in {csv_path}")
        if len(board.entries) > 1:
            raise InputError(
                f"{side} selector {spec!r} matches {len(board.entries)} configs; add keys until "
                f"it names one (`focalbench leaderboard --where ...` lists them)"
            )
        picked = board.rows
    else:
        picked = [r for r in rows if r["run_id"] == spec][-1:]
        if not picked:
            raise InputError(
                f"{side} {spec!r}: not a run folder, a key=value selector or a run id in {csv_path}"
            )
        if picked[0]["status"] != "ok":
            raise InputError(f"{side} {spec!r}: its latest attempt is {picked[0]['status']}")
    runs = []
    for row in picked:
        where = folder_of(row, csv_path)
        if not (where / "detections.json").is_file():
            raise InputError(f"{side} {spec!r}: run {row['run_id']} has no {where}/detections.json")
        seed = int(row["seed"]) if row.get("seed", "").strip().lstrip("-").isdigit() else None
        runs.append(Run(row["run_id"], where, seed))
    return sorted(runs, key=lambda r: (r.seed is None, r.seed or 0, r.run_id))


def scorers(runs: list[Run], metrics: list[str], gts: dict[Path, Any]) -> list[ResampledMetrics]:
    """One resampling scorer per run (its detections against its validation set); `gts` caches
    the ground truths read, by path."""
    out = []
    for run in runs:
        gt_path = val_ann_of(run.folder)
        if gt_path not in gts:
            gts[gt_path] = load_json(gt_path, "validation ground-truth")
        dets = load_json(run.folder / "detections.json", "detections")
        ds = detection_set(gts[gt_path], dets, str(gt_path), str(run.folder / "detections.json"))
        out.append(ResampledMetrics(ds, metrics))
    return out


def check_same_validation_set(gts: dict[Path, Any]) -> None:
    """InputError unless every ground truth holds the same images and annotations (the files may
    differ: a copy, or a re-serialization)."""
    (first, ref), *others = ((p, fingerprint(g)) for p, g in gts.items())
    for path, fp in others:
        if fp != ref:
            what = "image ids" if fp[0] != ref[0] else "annotations"
            raise InputError(
                f"A/B: the runs were scored on different validation sets ({first} vs {path}: "
                f"{what} differ); compare needs the same images"
            )


def _seeds(runs: list[Run]) -> list[int] | None:
    """The runs' training seeds, or None when a run's is unknown (then seeds are not paired)."""
    seeds = [r.seed for r in runs if r.seed is not None]
    return seeds if len(seeds) == len(runs) else None


def compare(
    a: str,
    b: str,
    metrics: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    csv_path: str | Path = "results/runs.csv",
) -> Result:
    """Resolve A and B, check they share a validation set, run the paired bootstrap."""
    chosen = parse_metrics(metrics)
    if n_boot < 1:
        raise InputError(f"--n-boot: got {n_boot}; need at least 1 resample")
    csv_path = Path(csv_path)
    runs_a, runs_b = resolve(a, csv_path, "A"), resolve(b, csv_path, "B")
    gts: dict[Path, Any] = {}
    scorers_a, scorers_b = scorers(runs_a, chosen, gts), scorers(runs_b, chosen, gts)
    check_same_validation_set(gts)
    comparison = paired_bootstrap(
        scorers_a, scorers_b, chosen, n_boot, seed, _seeds(runs_a), _seeds(runs_b)
    )
    return Result(a, b, tuple(runs_a), tuple(runs_b), next(iter(gts)), comparison)


def _num(x: float, signed: bool = False, digits: int = 4) -> str:
    return "–" if not math.isfinite(x) else f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def to_rich_table(result: Result) -> Table:
    """metric, A, B, A - B, 95% CI (bold when it excludes 0), P(A wins), seeds per side (A/B);
    the caption says how it was resampled."""
    c = result.comparison
    a_ids = ",".join(r.run_id for r in result.runs_a)
    b_ids = ",".join(r.run_id for r in result.runs_b)
    table = Table(
        title=f"A = {result.spec_a} ({a_ids})  vs  B = {result.spec_b} ({b_ids})",
        caption=f"{c.describe()}; n: seeds A/B",
    )
    for col in ("metric", "A", "B", "A−B", f"{c.level:.0%} CI", "P(A wins)", "n"):
        table.add_column(col, justify="left" if col == "metric" else "right", no_wrap=True)
    for m in c.metrics:
        arrow = "↓" if m.lower_is_better else "↑"
        ci = f"[{_num(m.lo, True)}, {_num(m.hi, True)}]"
        clear = np.isfinite(m.lo) and (m.lo > 0 or m.hi < 0)  # the interval excludes 0
        table.add_row(
            f"{m.metric} {arrow}",
            _num(m.a),
            _num(m.b),
            _num(m.diff, True),
            f"[bold]{ci}[/]" if clear else ci,
            _num(m.p_a_wins, digits=3),
            f"{c.n_seeds_a}/{c.n_seeds_b}",
        )
    return table


def to_json(result: Result) -> str:
    return json.dumps(result.to_dict(), indent=2, allow_nan=False)


__all__ = ["LOWER_IS_BETTER", "METRICS", "Result", "Run", "compare", "to_json", "to_rich_table"]
