"""runs.csv under a lock, latest row per run id, safe folder names."""

import csv
import multiprocessing as mp

import pytest

from focalbench.errors import InputError
from focalbench.results.store import (
    CSV_COLUMNS,
    append_row,
    latest_rows,
    read_rows,
    run_dir,
    safe_name,
    status_of,
)


def test_columns_in_design_order():
    assert CSV_COLUMNS[:4] == ("run_id", "sweep_id", "status", "started")
    assert CSV_COLUMNS[-3:] == ("git_sha", "run_dir", "error")
    assert len(CSV_COLUMNS) == 36


def test_append_and_latest(tmp_path):
    path = tmp_path / "runs.csv"
    append_row(path, {"run_id": "a", "status": "failed", "error": "boom,\nsecond line"})
    append_row(path, {"run_id": "b", "status": "ok", "mAP": 0.5})
    append_row(path, {"run_id": "a", "status": "ok", "mAP": 0.25})
    rows = read_rows(path)
    assert [r["run_id"] for r in rows] == ["a", "b", "a"]
    assert rows[0]["error"] == "boom, second line"  # one physical line per row
    assert latest_rows(rows)["a"]["mAP"] == "0.25"
    assert status_of(path) == {"a": "ok", "b": "ok"}
    with open(path) as f:
        assert next(csv.reader(f)) == list(CSV_COLUMNS)


def test_missing_and_foreign_csv(tmp_path):
    with pytest.raises(InputError, match="no such results file"):
        read_rows(tmp_path / "nope.csv")
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(InputError, match="not a focalbench runs.csv"):
        read_rows(foreign)


def _writer(path, worker, n):
    for i in range(n):
        append_row(path, {"run_id": f"w{worker}-{i}", "status": "ok", "error": "x" * 200})


def test_concurrent_writers(tmp_path):
    path = tmp_path / "runs.csv"
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, w, 50)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    rows = read_rows(path)
    assert len(rows) == 200 and len({r["run_id"] for r in rows}) == 200
    assert path.read_text().count("run_id,sweep_id") == 1


@pytest.mark.parametrize("bad", ["../x", "a/b", ".hidden", "", "x" * 200, "a..b"])
def test_unsafe_names_rejected(bad):
    with pytest.raises(InputError):
        safe_name(bad, "sweep_id")


def test_run_dir_layout(tmp_path):
    assert run_dir(tmp_path, "abc") == tmp_path / "runs" / "abc"
    assert run_dir(tmp_path, "abc", "s1", "job-0") == tmp_path / "sweeps" / "s1" / "job-0"
