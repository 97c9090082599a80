"""Run folders and results/runs.csv, the append-only event log (one row per finished attempt).

Rows are appended under a file lock (filelock): unlocked, 8 concurrent writers produced duplicated
headers and interleaved rows. Readers take the latest row per run id. Files in a run folder are
written atomically (temporary file + rename) so a killed process never leaves a half-written
metrics.json or checkpoint. An attempt of a run id holds `run_lock` from its status check to its CSV
row, so one config never runs twice at once (a re-run started while a killed job still finishes
waits for it). `rebuild` regenerates the log from the run folders under the same CSV lock.
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

from focalbench import utils
from focalbench.errors import InputError
from focalbench.results import run_configs

CSV_COLUMNS = (
    "run_id", "sweep_id", "config_id", "status", "started", "wall_s", "model", "backbone", "loss",
    "alpha", "gamma", "matcher", "normalization", "dataset", "train_images", "val_images", "epochs",
    "image_size", "seed", "mAP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "laece0", "laace0",
    "lrp", "dece", "brier", "imgs_per_s", "device", "torch", "git_sha", "run_dir", "error",
)  # fmt: skip
# runs.csv as written before config_id (the science config without the seed) had a column: still
# read (config_id empty; the leaderboard recomputes it from the run folder), and rewritten once in
# today's columns by the next append_row so that new rows line up with the header
LEGACY_COLUMNS = tuple(c for c in CSV_COLUMNS if c != "config_id")
# pruned: a search's pruner stopped the run after an epoch (engine/prune.py); final for the search,
# kept like a failed run by a grid (--retry-failed re-runs it), never ranked
STATUSES = ("ok", "failed", "diverged", "pruned", "interrupted")
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
    """utils.atomic_write_text, flushed to disk before the rename: run-folder records (metrics,
    row.json) must survive a power cut. Kept here because engine/run.py imports it from store."""
    utils.atomic_write_text(path, text, fsync=True)


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


def csv_lock(csv_path: str | Path) -> FileLock:
    """The lock every writer of runs.csv holds: append_row for a row, rebuild for the whole file."""
    return FileLock(str(csv_path) + ".lock")


def _csv_text(rows: Iterable[dict[str, Any]]) -> str:
    """Header + rows in CSV_COLUMNS (missing keys empty, others ignored)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([format_cell(r.get(c)) for c in CSV_COLUMNS])
    return buf.getvalue()


def append_row(csv_path: str | Path, row: dict[str, Any]) -> None:
    """Append one row (missing columns empty, unknown keys an error) under the file lock; header if
    the file is new. A file in LEGACY_COLUMNS is first rewritten in today's columns."""
    unknown = set(row) - set(CSV_COLUMNS)
    assert not unknown, f"unknown CSV columns {sorted(unknown)}"
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_lock(csv_path):
        _upgrade_legacy(csv_path)
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


def _upgrade_legacy(csv_path: Path) -> None:
    """Rewrite a runs.csv with LEGACY_COLUMNS in CSV_COLUMNS (config_id empty), with the rows
    read_rows reads (lines it skips, torn or malformed, are dropped). Caller holds the CSV lock, so
    no row is lost between the read and the rename."""
    try:
        with open(csv_path, newline="") as f:
            header = f.readline()
    except FileNotFoundError:
        return
    if header.rstrip("\r\n") == ",".join(LEGACY_COLUMNS):
        atomic_write_text(csv_path, _csv_text(read_rows(csv_path)))


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
    """All rows of runs.csv, as dicts over CSV_COLUMNS ("" config_id for a file in LEGACY_COLUMNS).
    InputError for a missing file or a header that is not focalbench's."""
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
    columns = tuple(header)
    if columns not in (CSV_COLUMNS, LEGACY_COLUMNS):
        foreign = sorted(set(header) - set(CSV_COLUMNS)) or sorted(set(CSV_COLUMNS) - set(header))
        raise InputError(
            f"{csv_path}: not a focalbench runs.csv (columns differ, e.g. {foreign[:3]}); "
            "`focalbench leaderboard --rebuild` regenerates it from the run folders"
        )
    # a malformed line (hand-edited, or written by something else) is skipped, never misread
    blank = dict.fromkeys(CSV_COLUMNS, "")
    return [{**blank, **dict(zip(columns, r))} for r in reader if len(r) == len(columns)]


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


def rebuild(results_dir: str | Path, csv_path: str | Path) -> int:
    """Regenerate runs.csv from results_dir/runs/*/row.json and results_dir/sweeps/*/*/row.json.

    Each row.json holds the latest attempt of its run folder, so the rebuilt log has one row per
    folder (earlier attempts are gone), sorted by "started". A row.json from before config_id gets
    it from its folder's config.yaml. Written atomically under csv_lock, the lock of append_row;
    folders are listed inside it, so a run finishing meanwhile is in the rebuilt file or appended
    after it (at worst twice, which latest_rows absorbs). No row.json -> InputError and the CSV is
    left untouched: an empty rebuild must not wipe a log. Returns the number of rows.
    """
    results_dir, csv_path = Path(results_dir), Path(csv_path)
    if not results_dir.is_dir():
        raise InputError(f"--rebuild: results folder {results_dir} does not exist")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_lock(csv_path):
        files = sorted(results_dir.glob("runs/*/row.json")) + sorted(
            results_dir.glob("sweeps/*/*/row.json")
        )
        if not files:
            raise InputError(
                f"--rebuild: no run folders with row.json under {results_dir}/runs or "
                f"{results_dir}/sweeps; {csv_path} left unchanged"
            )
        rows = [_read_row_json(f) for f in files]
        for f, r in zip(files, rows):
            if not r.get("config_id"):
                r["config_id"] = run_configs.config_id_of(f.parent)
        rows.sort(key=lambda r: str(r.get("started") or ""))  # stable: ties keep folder order
        atomic_write_text(csv_path, _csv_text(rows))
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
