"""Grouping by config_id (issue 15, part 0) on configs composed from the real conf/: run folders
and rows written by hand as the engine writes them (config.yaml via to_yaml, a row per attempt)."""

import csv
import os
import shutil
import subprocess
import sys

import pytest

from focalbench.config import compose, to_yaml
from focalbench.results import run_configs
from focalbench.results.leaderboard import leaderboard, to_markdown
from focalbench.results.schema import CONFIG_KEYS
from focalbench.results.store import (
    CSV_COLUMNS,
    LEGACY_COLUMNS,
    append_row,
    read_rows,
    rebuild,
    write_json,
)
from tests.conftest import TINY

FOCAL = [*TINY, "loss=focal"]


@pytest.fixture(scope="module")
def lr_configs():
    """focal at lr 0.001 and 0.01, seeds 0 and 1: what `sweep loss=focal train.lr=0.001,0.01
    seed=0,1` composes."""
    return {
        (lr, seed): compose([*FOCAL, f"train.lr={lr}", f"seed={seed}"])
        for lr in ("0.001", "0.01")
        for seed in (0, 1)
    }


def _write_run(tmp_path, cfg, map_, with_config_id=True):
    """The run folder (config.yaml, row.json) and the CSV row of one ok attempt."""
    folder = tmp_path / "runs" / cfg.run_id
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(to_yaml(cfg))
    params = cfg.loss.params
    row = {
        "run_id": cfg.run_id,
        "status": "ok",
        "started": f"2024-01-01T00:00:{len(list(tmp_path.glob('runs/*'))):02d}",
        "model": cfg.model.name,
        "backbone": cfg.model.backbone,
        "loss": cfg.loss.name,
        "alpha": params.get("alpha"),
        "gamma": params.get("gamma", params.get("beta")),
        "normalization": cfg.loss.normalization,
        "dataset": cfg.data.name,
        "train_images": cfg.data.train_images,
        "val_images": cfg.data.val_images,
        "epochs": cfg.train.epochs,
        "image_size": cfg.data.image_size,
        "seed": cfg.seed,
        "mAP": map_,
        "run_dir": str(folder),
    }
    if with_config_id:
        row["config_id"] = cfg.config_id
    write_json(folder / "row.json", row)
    append_row(tmp_path / "runs.csv", row)
    return row


# mAP by (lr, seed); means by hand: lr 0.001 -> (0.10 + 0.20) / 2 = 0.15, lr 0.01 -> 0.35
MAPS = {("0.001", 0): 0.10, ("0.001", 1): 0.20, ("0.01", 0): 0.30, ("0.01", 1): 0.40}


def test_seeds_share_a_config_id_and_learning_rates_do_not(lr_configs):
    ids = {key: cfg.config_id for key, cfg in lr_configs.items()}
    assert ids["0.001", 0] == ids["0.001", 1] != ids["0.01", 0] == ids["0.01", 1]
    assert len({cfg.run_id for cfg in lr_configs.values()}) == 4


@pytest.mark.parametrize("with_config_id", [True, False], ids=["new_rows", "rows_without_id"])
def test_two_learning_rates_are_two_groups(tmp_path, lr_configs, with_config_id):
    for key, cfg in lr_configs.items():
        _write_run(tmp_path, cfg, MAPS[key], with_config_id)
    rows = read_rows(tmp_path / "runs.csv")
    assert all(r["config_id"] == ("" if not with_config_id else r["config_id"]) for r in rows)
    board = leaderboard(rows)
    assert [e["n"] for e in board.entries] == [2, 2]
    assert [e["train.lr"] for e in board.entries] == ["0.01", "0.001"]
    assert [e["mAP_mean"] for e in board.entries] == pytest.approx([0.35, 0.15])
    assert [e["config_id"] for e in board.entries] == [
        lr_configs["0.01", 0].config_id,
        lr_configs["0.001", 0].config_id,
    ]
    # the learning rate is the one key that differs: its own column, after the CSV's
    assert board.extra_keys == ["train.lr"]
    assert board.columns[: len(CONFIG_KEYS) + 2] == [*CONFIG_KEYS, "train.lr", "config_id"]
    header = to_markdown(board).splitlines()[0]
    assert header.startswith("| loss | alpha | gamma | train.lr | mAP ↑")
    by_seed = leaderboard(rows, by_seed=True)
    assert sorted(e["train.lr"] for e in by_seed.entries) == ["0.001", "0.001", "0.01", "0.01"]


def test_qfl_and_gfl_differ_by_box_head(tmp_path):
    """loss=qfl and experiment=gfl log the same CSV config columns; the box head tells them
    apart."""
    qfl, gfl = compose(["loss=qfl"]), compose(["experiment=gfl"])  # as the issue runs them
    assert (qfl.loss.name, gfl.loss.name) == ("qfl", "qfl")
    _write_run(tmp_path, qfl, 0.2)
    _write_run(tmp_path, gfl, 0.3)
    rows = read_rows(tmp_path / "runs.csv")
    assert {k: rows[0][k] for k in CONFIG_KEYS} == {k: rows[1][k] for k in CONFIG_KEYS}
    board = leaderboard(rows)
    assert [(e["model.box_head"], e["n"]) for e in board.entries] == [("dfl", 1), ("l1", 1)]
    assert "model.box_head" in board.extra_keys


def test_freeze_keeps_the_keys_that_tell_groups_apart(tmp_path, lr_configs, monkeypatch, capsys):
    """`leaderboard --freeze` keeps train.lr beside the CSV: once the folders are deleted the
    same command still shows it (results/frozen.py)."""
    from focalbench.cli import main

    for key, cfg in lr_configs.items():
        _write_run(tmp_path, cfg, MAPS[key])
    monkeypatch.chdir(tmp_path)
    args = ["leaderboard", "--csv", "runs.csv", "--format", "md", "--no-noise"]

    def md(*extra):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, *extra])
        assert exit_info.value.code == 0
        return capsys.readouterr().out

    before = md("--freeze")
    assert "train.lr" in before.splitlines()[0]
    shutil.rmtree(tmp_path / "runs")
    assert md() == before
    (tmp_path / "runs.frozen.json").unlink()
    assert "train.lr" not in md().splitlines()[0]  # without it: config_id tells them apart


def test_folder_gone_falls_back_to_csv_columns(tmp_path, lr_configs):
    """Rows without config_id whose folders were deleted group by their CSV columns, as before
    the column existed; a config that no shown key tells apart gets its config_id shown."""
    for key, cfg in lr_configs.items():
        row = _write_run(tmp_path, cfg, MAPS[key], with_config_id=False)
        if key[0] == "0.01":
            for f in (tmp_path / "runs" / cfg.run_id).iterdir():
                f.unlink()
    rows = read_rows(tmp_path / "runs.csv")
    board = leaderboard(rows)
    by_id = {e["config_id"]: e for e in board.entries}
    assert len(by_id) == 2 and by_id[lr_configs["0.001", 0].config_id]["n"] == 2
    (fallback,) = (e for cid, e in by_id.items() if cid.startswith("csv-"))
    assert fallback["n"] == 2 and fallback["mAP_mean"] == pytest.approx(0.35)
    # train.lr is known for one group only: not a varying key, so config_id tells them apart
    assert board.extra_keys == [] and row["loss"] == "focal"
    assert "config_id" in to_markdown(board).splitlines()[0]


def test_legacy_csv_is_read_then_upgraded_by_the_next_row(tmp_path, lr_configs):
    path = tmp_path / "runs.csv"
    cfg = lr_configs["0.001", 0]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(LEGACY_COLUMNS)
        writer.writerow(LEGACY_COLUMNS)  # each cell holds its column's name
    legacy = {c: c for c in LEGACY_COLUMNS}
    (old,) = read_rows(path)
    assert old == {**legacy, "config_id": ""} and tuple(old) == CSV_COLUMNS
    append_row(path, {"run_id": cfg.run_id, "config_id": cfg.config_id, "status": "ok"})
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == list(CSV_COLUMNS) and all(len(line) == len(CSV_COLUMNS) for line in lines)
    old, new = read_rows(path)
    assert old == {**legacy, "config_id": ""}
    assert (new["run_id"], new["config_id"]) == (cfg.run_id, cfg.config_id)


def test_rebuild_recomputes_a_missing_config_id(tmp_path, lr_configs):
    for key, cfg in lr_configs.items():
        _write_run(tmp_path, cfg, MAPS[key], with_config_id=False)
    assert rebuild(tmp_path, tmp_path / "rebuilt.csv") == 4
    rebuilt = {r["run_id"]: r["config_id"] for r in read_rows(tmp_path / "rebuilt.csv")}
    assert rebuilt == {cfg.run_id: cfg.config_id for cfg in lr_configs.values()}


def test_run_configs_reads_back_what_to_yaml_wrote(tmp_path, lr_configs):
    cfg = lr_configs["0.01", 1]
    (tmp_path / "config.yaml").write_text(to_yaml(cfg))
    back = run_configs.load(tmp_path)
    assert back is not None and (back.run_id, back.config_id) == (cfg.run_id, cfg.config_id)
    flat = run_configs.flat_science(back)
    assert flat["train.lr"] == "0.01" and flat["loss.name"] == "focal" and "seed" not in flat
    assert run_configs.load(tmp_path / "gone") is None
    (tmp_path / "config.yaml").write_text("model: [not, a, mapping")
    assert run_configs.config_id_of(tmp_path) == ""


def test_leaderboard_reads_configs_without_torch(tmp_path, lr_configs):
    for key, cfg in lr_configs.items():
        _write_run(tmp_path, cfg, MAPS[key], with_config_id=False)
    code = (
        "import sys; from focalbench.results.leaderboard import leaderboard; "
        "from focalbench.results.store import read_rows; "
        f"b = leaderboard(read_rows({str(tmp_path / 'runs.csv')!r})); "
        "assert len(b.entries) == 2 and b.extra_keys == ['train.lr'], b.extra_keys; "
        "assert 'torch' not in sys.modules"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


def test_plot_panels_never_mix_learning_rates(tmp_path, lr_configs):
    from focalbench.results import plots
    from focalbench.results.leaderboard import plot

    for key, cfg in lr_configs.items():
        _write_run(tmp_path, cfg, MAPS[key])
    board = leaderboard(read_rows(tmp_path / "runs.csv"))
    assert plots._panel_keys(board) == ["loss", "train.lr"]  # a panel per lr, not one cell
    by_seed = leaderboard(read_rows(tmp_path / "runs.csv"), by_seed=True)
    with pytest.raises(ValueError, match="grouped board"):
        plots.plot(by_seed, tmp_path / "x.png")
    paths = plot(by_seed, tmp_path / "heat.png")  # leaderboard.plot regroups it
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


@pytest.mark.slow
def test_sweep_of_two_learning_rates_ranks_two_groups(cli, tmp_path):
    """The issue's case for real: `sweep loss=focal train.lr=0.001,0.01` -> two leaderboard rows."""
    sweep = cli("sweep", *FOCAL, "train.lr=0.001,0.01", "--jobs", "2", timeout=600)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    board = cli("leaderboard", "--format", "csv")
    assert board.returncode == 0, board.stderr
    parsed = list(csv.DictReader(board.stdout.splitlines()))
    assert sorted(r["train.lr"] for r in parsed) == ["0.001", "0.01"]
    assert [r["n"] for r in parsed] == ["1", "1"]
    rebuilt = cli("leaderboard", "--rebuild", "--format", "csv")
    assert rebuilt.returncode == 0 and list(csv.DictReader(rebuilt.stdout.splitlines())) == parsed
