"""`leaderboard --noise`: is each config's gap to the best one beyond noise? (issue 15, part 2)

For the sort metric, every config group is compared with the best group (the board's first) by
the paired bootstrap of `focalbench compare` (metrics/bootstrap.py): A = the best's runs, B = the
config's, resampled over the validation images both predicted and, with several seeds a side, over
the seeds too. The config is within noise when the 95% interval of (best - config) contains 0, and
worse when it excludes 0 in the best's favour. Every comparison draws the same resamples (one
seed): `focalbench compare <best> <config> --metric M --n-boot N --seed S` prints the same
interval, and the best's runs are scored on those resamples once, not once per config.

A config is n/a, never an error, when a run of it has no run folder with detections.json (the CSV
outlived its folders), an unknown or unreadable validation set, or another validation set than the
best's; all are n/a when the best's runs are, or when the sort metric is not one the bootstrap
scores. The notes say why. Run folders and validation sets are found as `compare` finds them
(results/run_files.py); the metrics code (numpy, scipy: ~0.4 s to import) is imported only once
some run folder exists, so a board over a bare CSV stays fast. Torch-free.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from focalbench.errors import InputError
from focalbench.results import frozen
from focalbench.results.run_files import fingerprint, folder_of, has_folder, val_ann_of
from focalbench.results.schema import (
    BEST,
    BETTER,
    NOISE_COLUMNS,
    NOT_COMPARED,
    WITHIN_NOISE,
    WORSE,
    Board,
)

_NO_FOLDER = "no run folder with detections.json"


@dataclasses.dataclass(frozen=True)
class _Mark:
    vs_best: str
    lo: float = math.nan  # the 95% interval of best - config in the sort metric
    hi: float = math.nan
    p_best_wins: float = math.nan
    why: str = ""  # for n/a: the reason, counted in the notes


def mark(
    board: Board, csv_path: str | Path, n_boot: int = 1000, seed: int = 0, freeze: bool = False
) -> Board:
    """The board with NOISE_COLUMNS in every entry and in its CSV columns, and notes saying how
    they were computed (and why any is n/a). A by_seed or empty board comes back unchanged.
    csv_path: the runs CSV the board was read from (relative run_dir values are resolved
    against it, as by compare). With no run folder at all, marks frozen for this very board
    (results/frozen.py) are used; freeze=True writes the marks computed here to that file."""
    if n_boot < 1:
        raise InputError(f"--n-boot: got {n_boot}; need at least 1 resample")
    if board.by_seed or not board.entries:
        return board
    csv_path = Path(csv_path)
    groups: dict[str, list[dict[str, str]]] = {}
    for r in board.rows:
        groups.setdefault(r["config_id"], []).append(r)
    ids = [e["config_id"] for e in board.entries]
    key = frozen.board_key(
        board.sort, n_boot, seed, [(c, [r["run_id"] for r in groups[c]]) for c in ids]
    )
    has_folders = any(has_folder(r, csv_path) for r in board.rows)
    store = frozen.load(csv_path) if freeze or not has_folders else frozen.empty()
    if not has_folders and key in store["boards"]:
        marks, n_images = _thawed(store["boards"][key])
    else:
        marks, n_images = _marks(ids, groups, board.sort, csv_path, n_boot, seed)
        if freeze and has_folders:
            store["boards"][key] = _frozen(marks, n_images)
            frozen.save(csv_path, store)
    entries = [
        {
            **e,
            "vs_best": (m := marks[e["config_id"]]).vs_best,
            "vs_best_lo": m.lo,
            "vs_best_hi": m.hi,
            "p_best_wins": m.p_best_wins,
        }
        for e in board.entries
    ]
    notes = [*board.notes, *_notes(list(marks.values()), board.sort, n_images, n_boot, seed)]
    return dataclasses.replace(
        board, entries=entries, columns=[*board.columns, *NOISE_COLUMNS], notes=notes
    )


def _frozen(marks: dict[str, _Mark], n_images: int | None) -> dict[str, Any]:
    enc = frozen.encode_float
    return {
        "n_images": n_images,
        "marks": {
            cid: [m.vs_best, enc(m.lo), enc(m.hi), enc(m.p_best_wins), m.why]
            for cid, m in marks.items()
        },
    }


def _thawed(data: dict[str, Any]) -> tuple[dict[str, _Mark], int | None]:
    dec = frozen.decode_float
    marks = {
        cid: _Mark(vs, dec(lo), dec(hi), dec(p), why)
        for cid, (vs, lo, hi, p, why) in data["marks"].items()
    }
    return marks, data["n_images"]


def _marks(
    ids: list[str],
    groups: dict[str, list[dict[str, str]]],
    metric: str,
    csv_path: Path,
    n_boot: int,
    seed: int,
) -> tuple[dict[str, _Mark], int | None]:
    """{config_id: its mark} (ids[0] is the best) and the number of validation images compared
    (None when nothing was)."""
    best, others = ids[0], ids[1:]
    marks = {best: _Mark(BEST)}

    def all_na(why: str) -> tuple[dict[str, _Mark], None]:
        return {**marks, **{c: _Mark(NOT_COMPARED, why=why) for c in others}}, None

    if not others:
        return marks, None
    if not any(has_folder(r, csv_path) for rows in groups.values() for r in rows):
        return all_na(_NO_FOLDER)  # the cheap common case: a CSV without its run folders
    from focalbench.metrics.bootstrap import paired_bootstrap
    from focalbench.metrics.resample import METRICS as RESAMPLED

    if metric not in RESAMPLED:
        return all_na(f"{metric} is not resampled (the bootstrap scores {', '.join(RESAMPLED)})")
    sides = _Sides(csv_path, metric)
    ref = sides.load(groups[best])
    if isinstance(ref, str):
        return all_na(f"the best config: {ref}")
    ref_scorers = [_Once(s) for s in ref.scorers]  # see _Once: scored once for all comparisons
    for cid in others:
        side = sides.load(groups[cid])
        if isinstance(side, str):
            marks[cid] = _Mark(NOT_COMPARED, why=side)
        elif side.validation != ref.validation:
            marks[cid] = _Mark(NOT_COMPARED, why="another validation set than the best's")
        else:
            c = paired_bootstrap(
                ref_scorers, side.scorers, [metric], n_boot, seed, ref.seeds, side.seeds
            )
            marks[cid] = _verdict(c.metrics[0].lo, c.metrics[0].hi, c.metrics[0].p_a_wins, metric)
    return marks, ref.scorers[0].n_images


def _verdict(lo: float, hi: float, p: float, metric: str) -> _Mark:
    """lo, hi: the interval of best - config. The best is better where the difference is > 0, or
    < 0 for a lower-is-better metric."""
    from focalbench.metrics.resample import LOWER_IS_BETTER

    if not (math.isfinite(lo) and math.isfinite(hi)):
        return _Mark(NOT_COMPARED, why=f"{metric} undefined on every resample")
    if lo <= 0.0 <= hi:
        return _Mark(WITHIN_NOISE, lo, hi, p)
    best_better = hi < 0.0 if metric in LOWER_IS_BETTER else lo > 0.0
    return _Mark(WORSE if best_better else BETTER, lo, hi, p)


@dataclasses.dataclass(frozen=True)
class _Side:
    scorers: list[Any]  # metrics.resample.ResampledMetrics, one per run, in compare's run order
    seeds: list[int] | None  # None when a run's seed is unknown (then seeds are not paired)
    validation: tuple[Any, ...]  # the fingerprint of the validation set every run was scored on


def _seed(row: dict[str, str]) -> int | None:
    text = row.get("seed", "").strip()
    return int(text) if text.lstrip("-").isdigit() else None


class _Sides:
    """Each config's runs as scorers of one metric; the validation ground truths read once."""

    def __init__(self, csv_path: Path, metric: str) -> None:
        self.csv_path, self.metric = csv_path, metric
        self._validation: dict[Path, Any] = {}  # gt path -> (gt, fingerprint), or the reason

    def load(self, rows: Sequence[dict[str, str]]) -> _Side | str:
        """The config's side, or why it cannot be compared."""
        from focalbench.metrics.evaluate import detection_set, load_json
        from focalbench.metrics.resample import ResampledMetrics

        # compare's run order (seed, then run id): the same resamples give the same numbers
        rows = sorted(rows, key=lambda r: (_seed(r) is None, _seed(r) or 0, r["run_id"]))
        scorers, prints = [], set()
        for row in rows:
            folder = folder_of(row, self.csv_path)
            dets_path = folder / "detections.json"
            if not dets_path.is_file():
                return _NO_FOLDER
            try:
                gt_path = val_ann_of(folder)
            except InputError:
                why = "no val_ann in metrics.json, no synthetic data in config.yaml"
                return f"unknown validation set ({why})"
            if gt_path not in self._validation:
                try:
                    gt = load_json(gt_path, "validation ground-truth")
                    self._validation[gt_path] = (gt, fingerprint(gt))
                except InputError:
                    self._validation[gt_path] = "validation set file missing or unreadable"
            if isinstance(got := self._validation[gt_path], str):
                return got
            gt, fp = got
            try:
                ds = detection_set(
                    gt, load_json(dets_path, "detections"), str(gt_path), str(dets_path)
                )
            except InputError:
                return "unreadable detections.json"
            scorers.append(ResampledMetrics(ds, [self.metric]))
            prints.add(fp)
        if len(prints) > 1:
            return "its runs were scored on different validation sets"
        seeds = [s for s in map(_seed, rows) if s is not None]
        return _Side(scorers, seeds if len(seeds) == len(rows) else None, prints.pop())


class _Once:
    """A scorer that keeps its last resample's values. Every comparison with the best draws the
    same image counts (same seed, same image count), so the best's runs are scored once."""

    def __init__(self, scorer: Any) -> None:
        self._scorer = scorer
        self.metrics, self.n_images = scorer.metrics, scorer.n_images
        self._last: tuple[Any, dict[str, Any]] | None = None
        self._full: dict[str, float] | None = None

    def __call__(self, counts: Any) -> dict[str, Any]:
        import numpy as np

        if self._last is None or not np.array_equal(self._last[0], counts):
            self._last = (counts, self._scorer(counts))
        return self._last[1]

    def full(self) -> dict[str, float]:
        if self._full is None:
            self._full = self._scorer.full()
        return self._full


def _notes(
    marks: list[_Mark], metric: str, n_images: int | None, n_boot: int, seed: int
) -> list[str]:
    """How vs best was computed, and a count of the n/a reasons. No paths or timings: the
    markdown must be the same bytes for the same CSV, folders and seed."""
    images = f"the {n_images} validation images" if n_images else "the validation images"
    better = any(m.vs_best == BETTER for m in marks)
    notes = [
        f"vs best: best − config in {metric}, paired bootstrap of `focalbench compare` over "
        f"{images} (and the seeds, where several), {n_boot} resamples, seed {seed}; "
        "≈ = within noise: the 95% interval of best − config contains 0; worse: it excludes 0"
        + (
            "; better: it favours the config (the CSV and the run folders disagree)"
            if better
            else ""
        )
    ]
    why = Counter(m.why for m in marks if m.vs_best == NOT_COMPARED)
    if why:
        parts = [f"{n} config{'s' if n > 1 else ''}: {reason}" for reason, n in sorted(why.items())]
        notes.append("vs best n/a: " + "; ".join(parts))
    return notes
