"""Run folders and results/runs.csv, the append-only event log (one row per finished attempt).

Rows are appended under a file lock (filelock): unlocked, 8 concurrent writers produced duplicated headers and
interleaved rows. Readers take the latest row per run id. Files in a run folder are written atomically
(temporary file + rename) so a killed process never leaves a half-written metrics.json or checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from filelock import FileLock

from focalbench.errors import InputError

CSV_COLUMNS = (
    "run_id", "sweep_id", "status", "started", "wall_s", "model", "backbone", "loss", "alpha", "gamma",
    "matcher", "normalization", "dataset", "train_images", "val_images", "epochs", "image_size", "seed",
    "mAP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "laece0", "laace0", "lrp", "dece", "brier",
    "imgs_per_s", "device", "torch", "git_sha", "run_dir", "error",
)  # fmt: skip
STATUSES = ("ok", "failed", "diverged", "interrupted")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]{0,127}$")


def safe_name(value: str, option: str) -> str:
    """A folder name that cannot escape the results folder (no separators, no '..', no leading dot)."""
    if not _SAFE_NAME.match(value) or ".." in value:
        raise InputError(
            f"{option}={value!r} is not a safe folder name; use letters, digits and . _ = , + - (max 128)"
        )
    return value


def run_dir(
    results_dir: str | Path, run_id: str, sweep_id: str | None = None, job_name: str | None = None
) -> Path:
    """results/runs/<run_id>/, or results/sweeps/<sweep_id>/<job_name>/ for a sweep job."""
    root = Path(results_dir)
    if sweep_id:
        job = safe_name(job_name, "job_name") if job_name else run_id
        return root / "sweeps" / safe_name(sweep_id, "sweep_id") / job
    return root / "runs" / run_id


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return " ".join(format_cell(v) for v in value)
    return str(value).replace("\n", " ").replace("\r", " ")


def append_row(csv_path: str | Path, row: dict[str, Any]) -> None:
    """Append one row (missing columns empty, unknown keys an error) under the file lock, header if new."""
    unknown = set(row) - set(CSV_COLUMNS)
    assert not unknown, f"unknown CSV columns {sorted(unknown)}"
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    with FileLock(str(csv_path) + ".lock"):
        new = not csv_path.exists() or csv_path.stat().st_size == 0
        if new:
            writer.writerow(CSV_COLUMNS)
        writer.writerow([format_cell(row.get(c)) for c in CSV_COLUMNS])
        # one write of whole lines: a reader never sees a torn row, even without the lock
        with open(csv_path, "a", newline="") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())


def read_rows(csv_path: str | Path) -> list[dict[str, str]]:
    """All rows of runs.csv. InputError for a missing file or a header that is not focalbench's."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(
            f"{csv_path}: no such results file (run `focalbench train` or `sweep` first)"
        )
    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return []
        if tuple(header) != CSV_COLUMNS:
            foreign = sorted(set(header) - set(CSV_COLUMNS)) or sorted(
                set(CSV_COLUMNS) - set(header)
            )
            raise InputError(
                f"{csv_path}: not a focalbench runs.csv (columns differ, e.g. {foreign[:3]}); "
                "`focalbench leaderboard --rebuild` regenerates it from the run folders"
            )
        # a row cut short by a crash (no trailing newline, fewer fields) is skipped, never misread
        return [dict(zip(CSV_COLUMNS, r)) for r in reader if len(r) == len(CSV_COLUMNS)]


def latest_rows(rows: Iterable[dict[str, str]]) -> dict[str, dict[str, str]]:
    """The latest row per run id (the log is append-only, so the last one wins)."""
    latest: dict[str, dict[str, str]] = {}
    for row in rows:
        latest[row["run_id"]] = row
    return latest


def status_of(csv_path: str | Path) -> dict[str, str]:
    """run id -> status of its latest attempt; empty when there is no runs.csv yet."""
    if not Path(csv_path).is_file():
        return {}
    return {rid: row["status"] for rid, row in latest_rows(read_rows(csv_path)).items()}
