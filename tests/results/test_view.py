"""What `focalbench leaderboard` shows (results/view.py): the marks of configs that left a race,
and the table fitted to an 80-column terminal."""

import csv
import io
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from focalbench.errors import InputError
from focalbench.results import leaderboard as lb
from focalbench.results.store import append_row, read_rows
from focalbench.results.view import race_marks, show_leaderboard

REFERENCE = Path(__file__).resolve().parents[2] / "results" / "reference"
RACE_COLUMNS = ["config_id", "config", "status", "round", "seeds", "max_seeds", "metric", "mean",
                "best_minus_config", "lo", "hi", "seed_variance"]  # fmt: skip
# config_id -> (loss, mAP per seed): focal raced to the cap (3 seeds), bce left at round 2 (out),
# qfl at round 2 too (tied), vfl left at round 1 but has 3 seeds since (a later grid): no mark
RUNS = {
    "c-focal": ("focal", (0.30, 0.32, 0.34)),
    "c-bce": ("bce", (0.20, 0.22)),
    "c-qfl": ("qfl", (0.29, 0.31)),
    "c-vfl": ("vfl", (0.25, 0.26, 0.27)),
}
RACE = [  # config_id, config, status, round, seeds
    ("c-focal", "loss=focal", "best", 3, 3),
    ("c-bce", "loss=bce", "out", 2, 2),
    ("c-qfl", "loss=qfl", "tied", 2, 2),
    ("c-vfl", "loss=vfl", "out", 1, 1),
]


def _write_runs(path: Path) -> None:
    for cid, (loss, maps) in RUNS.items():
        for seed, value in enumerate(maps):
            row = {"run_id": f"{cid}-s{seed}", "config_id": cid, "status": "ok", "seed": seed}
            append_row(path, {**row, "loss": loss, "mAP": value, "laece0": 0.1 + value / 10})


def _write_race(folder: Path, rows=RACE) -> None:
    folder.mkdir(parents=True)
    with (folder / "race.csv").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(RACE_COLUMNS)
        for cid, config, status, rnd, seeds in rows:
            writer.writerow([cid, config, status, rnd, seeds, 3, "mAP", 0.3, 0.01, -0.02, 0.04,
                             "pooled"])  # fmt: skip


@pytest.fixture
def raced(tmp_path):
    _write_runs(tmp_path / "runs.csv")
    _write_race(tmp_path / "sweeps" / "sweep-race1")
    return tmp_path / "runs.csv"


def _show(csv_path, width=200, noise=False, **kwargs):
    out = Console(width=width, record=True)
    err = Console(width=width, record=True, stderr=True)
    show_leaderboard(csv_path, out, err, noise=noise, **kwargs)
    return out.export_text()


def _cell_lines(text: str) -> list[str]:
    """The lines with a '±' but the caption's 'mean ± std over seeds'."""
    return [line for line in text.splitlines() if "±" in line and "over seeds" not in line]


def test_configs_that_left_a_race_are_marked(raced, capsys):
    text = _show(raced)
    rows = {line.split()[1]: line for line in text.splitlines() if line.startswith("│")}
    assert rows["bce"].rstrip(" │").endswith("2 †") and rows["qfl"].rstrip(" │").endswith("2 ‡")
    assert "†" not in rows["focal"] + rows["vfl"] and "‡" not in rows["focal"] + rows["vfl"]
    flat = " ".join(text.split())  # the caption wraps at the table's width
    assert (
        "† left the race sweep-race1 at round 2 (out: beyond noise worse than the best on mAP); "
        "fewer seeds by design" in flat
    )
    assert "‡ left the race sweep-race1 at round 2 (tied: within the --margin of the best" in flat
    assert "round 1" not in flat  # vfl has more seeds than the race gave it: not marked

    show_leaderboard(raced, Console(), Console(stderr=True), fmt="md", noise=False)
    md = capsys.readouterr().out
    table = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()]
    header, *body = [r for r in table if len(r) > 1]
    marks = {r[header.index("loss")]: r[header.index("n")] for r in body[1:]}
    assert marks == {"focal": "3", "qfl": "2 ‡", "vfl": "3", "bce": "2 †"}
    assert "\n\n† left the race sweep-race1 at round 2 (out: beyond noise worse" in md

    show_leaderboard(raced, Console(), Console(stderr=True), fmt="csv", noise=False)
    board = csv.DictReader(io.StringIO(capsys.readouterr().out))
    parsed = {r["config_id"]: r["race"] for r in board}
    assert parsed == {"c-focal": "", "c-qfl": "tied at round 2 of sweep-race1", "c-vfl": "",
                      "c-bce": "out at round 2 of sweep-race1"}  # fmt: skip


def test_no_race_csv_leaves_the_board_as_it_was(tmp_path):
    _write_runs(tmp_path / "runs.csv")
    board = lb.leaderboard(read_rows(tmp_path / "runs.csv"))
    assert race_marks(board, tmp_path / "runs.csv") is board
    _write_race(tmp_path / "sweeps" / "grid", rows=[("c-focal", "loss=focal", "best", 3, 3)])
    assert race_marks(board, tmp_path / "runs.csv") is board  # nobody left: nothing to mark
    by_seed = lb.leaderboard(read_rows(tmp_path / "runs.csv"), by_seed=True)
    assert race_marks(by_seed, tmp_path / "runs.csv") is by_seed


def test_two_races_and_a_foreign_race_csv(raced):
    """A config out of two races: the one that gave it the most seeds explains its count."""
    _write_race(raced.parent / "sweeps" / "sweep-race0", rows=[("c-bce", "loss=bce", "out", 1, 1)])
    board = race_marks(lb.leaderboard(read_rows(raced)), raced)
    assert {e["config_id"]: e["race_mark"] for e in board.entries}["c-bce"] == "†"
    assert not any("sweep-race0" in n for n in board.notes)
    (raced.parent / "sweeps" / "sweep-race0" / "race.csv").write_text("name,score\nx,1\n")
    with pytest.raises(InputError, match="no column config_id, status, round, seeds, metric"):
        race_marks(lb.leaderboard(read_rows(raced)), raced)


def _study(tmp_path, monkeypatch) -> Path:
    """The committed study board (12 configs, vs-best marks from its freeze, a box-head column)."""
    for name in ("study_runs.csv", "study_runs.frozen.json"):
        shutil.copy(REFERENCE / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)  # no run folder can be found: the marks come from the freeze
    return Path("study_runs.csv")


CELL = re.compile(r"\d\.\d{3} ?± ?\d\.\d{3}")


@pytest.mark.parametrize("sort", ["mAP", "laece0"])
def test_80_columns_no_cell_wraps(tmp_path, monkeypatch, sort):
    text = _show(_study(tmp_path, monkeypatch), width=80, sort=sort, noise=True)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80
    rows = _cell_lines(text)
    assert len(rows) == 12  # one line per config
    for line in rows:  # every "±" between a whole mean and a whole std
        assert line.count("±") == len(CELL.findall(line)) >= 2, line
    assert "not shown at 80 columns: AP50, lrp (--metrics, or a wider terminal)" in " ".join(
        " ".join(lines).split()
    )
    assert "vs best" in next(line for line in lines if "mAP ↑" in line)  # headers on one line


def test_wide_terminal_keeps_the_full_table(tmp_path, monkeypatch):
    text = _show(_study(tmp_path, monkeypatch), width=200, noise=True)
    assert "0.375 ± 0.014" in text and "model.box_head" in text and "lrp ↓" in text
    assert "not shown" not in text


def test_too_narrow_even_for_the_sort_metric_wraps_config_columns_only(tmp_path, monkeypatch):
    text = _show(_study(tmp_path, monkeypatch), width=56, metrics="mAP,laece0", noise=True)
    rows = _cell_lines(text)
    assert len(rows) == 12 and all(line.count("±") == len(CELL.findall(line)) == 1 for line in rows)
    assert "not shown at 56 columns: laece0" in " ".join(text.split())
