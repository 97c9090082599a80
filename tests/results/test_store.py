"""runs.csv under a lock (8 concurrent writers, torn rows), latest row per run id, run locks, safe
folder names."""

import csv
import multiprocessing as mp

import pytest

from focalbench.errors import InputError
from focalbench.results.store import (
    CSV_COLUMNS,
    append_row,
    is_running,
    latest_rows,
    read_rows,
    run_dir,
    run_lock,
    safe_name,
    status_of,
)


def test_columns_in_design_order():
    assert CSV_COLUMNS[:5] == ("run_id", "sweep_id", "config_id", "status", "started")
    assert CSV_COLUMNS[-3:] == ("git_sha", "run_dir", "error")
    assert len(CSV_COLUMNS) == 37


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
    """8 processes x 200 rows at once: 1600 parseable rows, one header, no interleaved lines."""
    path = tmp_path / "runs.csv"
    workers, n = 8, 200
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, n)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    rows = read_rows(path)
    assert len(rows) == workers * n and len({r["run_id"] for r in rows}) == workers * n
    text = path.read_text()
    assert text.count("run_id,sweep_id") == 1 and text.endswith("\n")
    with open(path, newline="") as f:
        assert all(len(line) == len(CSV_COLUMNS) for line in csv.reader(f))
    for w in range(workers):  # each writer's rows in its own order
        mine = [int(r["run_id"].split("-")[1]) for r in rows if r["run_id"].startswith(f"w{w}-")]
        assert mine == list(range(n))


def test_torn_last_line_is_never_read_and_is_cut_by_the_next_writer(tmp_path):
    """A writer killed mid-row leaves a line without its newline: readers skip it (even when it is
    cut inside its last field, so the field count looks right) and the next append drops it instead
    of gluing its own row onto it."""
    path = tmp_path / "runs.csv"
    append_row(path, {"run_id": "a", "status": "ok", "error": "all good"})
    whole = path.read_text()
    with open(path, "a") as f:  # a row cut inside its last field: 36 fields, no newline
        f.write(whole.splitlines()[1][: -len("good")].replace("a,", "torn,", 1))
    assert [r["run_id"] for r in read_rows(path)] == ["a"]
    append_row(path, {"run_id": "b", "status": "ok"})
    assert [r["run_id"] for r in read_rows(path)] == ["a", "b"]
    assert path.read_text().startswith(whole) and "torn" not in path.read_text()


def test_torn_header_is_rewritten(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("run_id,sweep_id,sta")  # killed while writing the header of a new file
    assert read_rows(path) == []
    append_row(path, {"run_id": "a", "status": "ok"})
    assert [r["run_id"] for r in read_rows(path)] == ["a"]
    assert path.read_text().count("run_id,sweep_id") == 1


def test_run_lock_is_exclusive_and_observable(tmp_path):
    assert not is_running(tmp_path, "abc")
    with run_lock(tmp_path, "abc"):
        assert is_running(tmp_path, "abc")
        assert not is_running(tmp_path, "other")
    assert not is_running(tmp_path, "abc")


@pytest.mark.parametrize("bad", ["../x", "a/b", ".hidden", "", "x" * 200, "a..b"])
def test_unsafe_names_rejected(bad):
    with pytest.raises(InputError):
        safe_name(bad, "sweep_id")


def test_run_dir_layout(tmp_path):
    assert run_dir(tmp_path, "abc") == tmp_path / "runs" / "abc"
    assert run_dir(tmp_path, "abc", "s1", "job-0") == tmp_path / "sweeps" / "s1" / "job-0"
