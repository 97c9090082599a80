"""Run folders and results/runs.csv, the append-only event log (one row per finished attempt).

Rows are appended under a file lock (filelock): unlocked, 8 concurrent writers produced duplicated
headers and interleaved rows. Readers take the latest row per run id. Files in a run folder are
written atomically (temporary file + rename) so a killed process never leaves a half-written
metrics.json or checkpoint. An attempt of a run id holds `run_lock` from its status check to its CSV
row, so one config never runs twice at once (a re-run started while a killed job still finishes
waits for it).
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

from filelock import FileLock, Timeout

from focalbench.errors import InputError

CSV_COLUMNS = (
    "run_id", "sweep_id", "status", "started", "wall_s", "model", "backbone", "loss", "alpha",
    "gamma", "matcher", "normalization", "dataset", "train_images", "val_images", "epochs",
    "image_size", "seed", "mAP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "laece0", "laace0",
    "lrp", "dece", "brier", "imgs_per_s", "device", "torch", "git_sha", "run_dir", "error",
)  # fmt: skip
STATUSES = ("ok", "failed", "diverged", "interrupted")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]{0,127}$")


def safe_name(value: str, option: str) -> str:
    """A folder name that cannot escape the results folder (no separators, '..' or leading dot)."""
    if not _SAFE_NAME.match(value) or ".." in value:
        raise InputError(
            f"{option}={value!r} is not a safe folder name; "
            "use letters, digits and . _ = , + - (max 128)"
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
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # interrupted or failed: leave the old file and no temporary one
        tmp.unlink(missing_ok=True)
        raise


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
    """Append one row (missing columns empty, unknown keys an error) under the file lock; header if
    the file is new."""
    unknown = set(row) - set(CSV_COLUMNS)
    assert not unknown, f"unknown CSV columns {sorted(unknown)}"
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(csv_path) + ".lock"):
        fd = os.open(csv_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            if _drop_torn_tail(fd) == 0:
                writer.writerow(CSV_COLUMNS)
            writer.writerow([format_cell(row.get(c)) for c in CSV_COLUMNS])
            # whole lines in one write(): a kill leaves the row entirely there or not at all (a
            # short write, e.g. on a full disk, leaves a fragment that the next writer cuts)
            data = memoryview(buf.getvalue().encode())
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)


def _drop_torn_tail(fd: int) -> int:
    """Cut a last line that has no newline (its writer died mid-write; under the lock no writer is
    live), so the next row starts on a line of its own instead of gluing onto the fragment.
    Returns the file's size after the cut."""
    size = end = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    cut = 0
    while end > 0:
        start = max(0, end - 65536)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            cut = start + newline + 1
            break
        end = start
    os.ftruncate(fd, cut)
    return cut


def read_rows(csv_path: str | Path) -> list[dict[str, str]]:
    """All rows of runs.csv. InputError for a missing file or a header that is not focalbench's."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(
            f"{csv_path}: no such results file (run `focalbench train` or `sweep` first)"
        )
    with open(csv_path, newline="") as f:
        text = f.read()
    # a last line without its newline is a row being written, or cut short by a crash: never misread
    # it (cut inside its last field, it would still have the right number of fields)
    reader = csv.reader(io.StringIO(text[: text.rfind("\n") + 1]))
    header = next(reader, None)
    if header is None:
        return []
    if tuple(header) != CSV_COLUMNS:
        foreign = sorted(set(header) - set(CSV_COLUMNS)) or sorted(set(CSV_COLUMNS) - set(header))
        raise InputError(
            f"{csv_path}: not a focalbench runs.csv (columns differ, e.g. {foreign[:3]}); "
            "`focalbench leaderboard --rebuild` regenerates it from the run folders"
        )
    # a malformed line (hand-edited, or written by something else) is skipped, never misread
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


def run_lock(results_dir: str | Path, run_id: str) -> FileLock:
    """The lock one attempt of `run_id` holds from its status check to its CSV row (results/locks/).

    The kernel drops it when its holder dies, even by SIGKILL; a stale file is harmless."""
    folder = Path(results_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / f"{run_id}.lock"))


def is_running(results_dir: str | Path, run_id: str) -> bool:
    """Whether some process holds `run_lock(results_dir, run_id)` right now."""
    path = Path(results_dir) / "locks" / f"{run_id}.lock"
    if not path.is_file():
        return False
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:  # a read-only results folder: nobody can be running there
        return False
    lock.release()
    return False
