"""Leaderboard against numbers computed by hand from a hand-built runs.csv (2 configs x 3 seeds)."""

import csv
import io
import math

import pytest
from rich.console import Console

from focalbench.errors import InputError
from focalbench.results.leaderboard import (
    leaderboard,
    plot,
    to_csv,
    to_markdown,
    to_rich_table,
)
from focalbench.results.schema import CONFIG_KEYS, METRICS
from focalbench.results.store import STATUSES, append_row, read_rows, rebuild, write_json

BASE = {"model": "retinanet", "backbone": "r18", "normalization": "num_pos_batch",
        "dataset": "synthetic", "train_images": 64, "val_images": 16, "epochs": 2,
        "image_size": 128}  # fmt: skip
FOCAL = {**BASE, "loss": "focal", "alpha": 0.25}  # gamma is written as "2" and "2.0": one config
BCE = {**BASE, "loss": "bce", "alpha": "", "gamma": 0}  # alpha off

# Hand-picked metrics, means and sample stds (ddof=1) worked out by hand:
# focal mAP 0.30, 0.32, 0.34: mean 0.32, std sqrt((0.02^2 + 0 + 0.02^2) / 2) = 0.02.
# bce mAP 0.20, 0.25, 0.30: mean 0.25, std sqrt((0.05^2 + 0 + 0.05^2) / 2) = 0.05.
# focal laece0 0.10, 0.10, 0.13: mean 0.11, std sqrt((1e-4 + 1e-4 + 4e-4) / 2) = sqrt(3e-4).
# bce laece0 0.05, 0.06, 0.07: mean 0.06, std 0.01.
# So mAP ranks focal first and LaECE0 (lower is better) ranks bce first.
# bce seed 2 has no dece: mean over 2 runs (0.4 + 0.6) / 2 = 0.5, std sqrt(2 * 0.1^2 / 1) = 0.1414.
FOCAL_MAP, BCE_MAP = (0.30, 0.32, 0.34), (0.20, 0.25, 0.30)
FOCAL_LAECE, BCE_LAECE = (0.10, 0.10, 0.13), (0.05, 0.06, 0.07)
BCE_DECE = (0.4, 0.6, None)


def _metrics(map_, laece, dece=0.2):
    m = dict.fromkeys(METRICS, 0.5)
    m.update(mAP=map_, laece0=laece, dece=dece, wall_s=100.0)
    return m


def _rows():
    """The CSV rows in append order: one stale attempt, six latest ok attempts, one failed run."""
    rows = [
        {
            "run_id": "f0",
            "status": "ok",
            "started": "2024-01-01T00:00:00",
            "seed": 0,
            "gamma": 2,
            **FOCAL,
            **_metrics(0.99, 0.99),
        }
    ]  # older attempt of f0: superseded below
    for s in range(3):
        gamma = "2.0" if s == 1 else 2
        rows.append(
            {
                "run_id": f"f{s}",
                "status": "ok",
                "started": f"2024-01-02T00:00:0{s}",
                "seed": s,
                "gamma": gamma,
                **FOCAL,
                **_metrics(FOCAL_MAP[s], FOCAL_LAECE[s]),
            }
        )
        rows.append(
            {
                "run_id": f"b{s}",
                "status": "ok",
                "started": f"2024-01-03T00:00:0{s}",
                "seed": s,
                **BCE,
                **_metrics(BCE_MAP[s], BCE_LAECE[s], BCE_DECE[s]),
            }
        )
    failed = {"run_id": "b3", "status": "failed", "started": "2024-01-04T00:00:00", "seed": 3}
    rows.append({**failed, **BCE, "error": "RuntimeError: boom"})
    return rows


@pytest.fixture
def csv_rows(tmp_path):
    path = tmp_path / "runs.csv"
    for row in _rows():
        append_row(path, row)
    return read_rows(path)


def test_means_stds_latest_row_and_failed(csv_rows):
    board = leaderboard(csv_rows)
    assert [e["loss"] for e in board.entries] == ["focal", "bce"]
    focal, bce = board.entries
    assert focal["gamma"] == "2" and bce["alpha"] == ""  # gamma "2" and "2.0": one group
    assert focal["n"] == 3 and bce["n"] == 3  # the stale f0 attempt (mAP 0.99) is not a 4th run
    assert focal["mAP_mean"] == pytest.approx(0.32) and focal["mAP_std"] == pytest.approx(0.02)
    assert bce["mAP_mean"] == pytest.approx(0.25) and bce["mAP_std"] == pytest.approx(0.05)
    assert focal["laece0_mean"] == pytest.approx(0.11)
    assert focal["laece0_std"] == pytest.approx(math.sqrt(3e-4))
    assert bce["laece0_mean"] == pytest.approx(0.06) and bce["laece0_std"] == pytest.approx(0.01)
    assert bce["dece_n"] == 2 and bce["dece_mean"] == pytest.approx(0.5)
    assert bce["dece_std"] == pytest.approx(math.sqrt(0.02))
    assert focal["AP50_std"] == 0.0  # equal values: std 0, not NaN
    # every other status (failed, diverged, pruned...) counted, zeros included
    assert board.not_ok == {**{s: 0 for s in STATUSES if s != "ok"}, "failed": 1}
    assert len(board.rows) == 6


def test_sort_directions_and_case(csv_rows):
    assert [e["loss"] for e in leaderboard(csv_rows, sort="laece0").entries] == ["bce", "focal"]
    assert [e["loss"] for e in leaderboard(csv_rows, sort="map").entries] == ["focal", "bce"]
    by_seed = leaderboard(csv_rows, sort="mAP", by_seed=True)
    assert [e["mAP"] for e in by_seed.entries] == [0.34, 0.32, 0.30, 0.30, 0.25, 0.20]
    # NaN last in both directions: b2 has no dece
    assert leaderboard(csv_rows, sort="dece", by_seed=True).entries[-1]["run_id"] == "b2"
    assert leaderboard(csv_rows, sort="laece0", by_seed=True).entries[0]["run_id"] == "b0"


def test_where_filters_with_number_normalisation(csv_rows):
    board = leaderboard(csv_rows, where=["gamma=2.00"])
    assert [(e["loss"], e["n"]) for e in board.entries] == [("focal", 3)]
    assert board.not_ok["failed"] == 0  # the failed run is a bce run: filtered out before counting
    assert [e["loss"] for e in leaderboard(csv_rows, where=["alpha="]).entries] == ["bce"]
    for null in ("null", "None", "~", "off"):  # as an override writes it, or as the board shows it
        board = leaderboard(csv_rows, where=[f"alpha={null}"])
        assert [e["loss"] for e in board.entries] == ["bce"]
    assert (
        leaderboard(csv_rows, where=["loss=focal", "seed=1"], by_seed=True).entries[0]["run_id"]
        == "f1"
    )
    assert leaderboard(csv_rows, where=["loss=qfl"]).entries == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sort": "accuracy"}, "--sort 'accuracy' is unknown; choose from: mAP, AP50"),
        (
            {"where": ["lossname=x"]},
            "--where key 'lossname' is unknown; choose from: run_id, sweep",
        ),
        ({"where": ["focal"]}, "expected key=value"),
    ],
)
def test_errors_name_valid_columns(csv_rows, kwargs, match):
    with pytest.raises(InputError, match=match):
        leaderboard(csv_rows, **kwargs)


def test_by_seed_entries(csv_rows):
    board = leaderboard(csv_rows, by_seed=True)
    assert sorted(e["run_id"] for e in board.entries) == ["b0", "b1", "b2", "f0", "f1", "f2"]
    f0 = next(e for e in board.entries if e["run_id"] == "f0")
    assert f0["seed"] == "0" and f0["mAP"] == 0.30  # latest attempt, not the stale 0.99
    assert board.columns == [*CONFIG_KEYS, "config_id", "seed", "run_id", *METRICS]


def test_csv_parses_back(csv_rows):
    board = leaderboard(csv_rows)
    parsed = list(csv.DictReader(io.StringIO(to_csv(board))))
    assert list(parsed[0]) == [
        *CONFIG_KEYS,
        "config_id",
        *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")),
        "n",
    ]
    assert [r["loss"] for r in parsed] == ["focal", "bce"]
    assert float(parsed[0]["mAP_mean"]) == pytest.approx(0.32)
    assert float(parsed[1]["laece0_std"]) == pytest.approx(0.01)
    assert parsed[0]["n"] == "3" and parsed[1]["alpha"] == ""


def test_markdown_parses_back(csv_rows):
    text = to_markdown(leaderboard(csv_rows, sort="laece0"))
    table = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    header, rows = cells[0], cells[2:]
    assert header[:3] == ["loss", "alpha", "gamma"]  # constant config columns dropped...
    assert "model=retinanet" in text and "excluded: 1 failed" in text  # ...and named in the note
    bce = dict(zip(header, rows[0]))
    assert bce["loss"] == "bce" and bce["alpha"] == "off"
    assert bce["mAP ↑"] == "0.250 ± 0.050" and bce["laece0 ↓"] == "0.060 ± 0.010"
    assert bce["dece ↓"] == "0.500 ± 0.141 (n=2)" and bce["wall_s ↓"] == "100.0 ± 0.0"
    assert bce["n"] == "3"
    unlogged = [{**r, "imgs_per_s": ""} for r in csv_rows]  # a metric no run logged: no column
    assert "imgs_per_s" not in to_markdown(leaderboard(unlogged)).splitlines()[0]


def test_rich_table_renders(csv_rows):
    console = Console(record=True, width=400)
    console.print(to_rich_table(leaderboard(csv_rows)))
    text = console.export_text()
    assert "0.320 ± 0.020" in text and "excluded: 1 failed" in text and "backbone=r18" in text
    single = leaderboard(csv_rows, where=["run_id=f1"])
    console.print(to_rich_table(single))  # n=1: a bare mean, no "± nan"
    text = console.export_text()
    assert "0.320 " in text and "± nan" not in text and "focal" in text


def test_plot_writes_pngs(csv_rows, tmp_path):
    paths = plot(
        leaderboard(csv_rows, by_seed=True), tmp_path / "out" / "heat.png", metric="laece0"
    )
    assert [p.name for p in paths] == ["heat.png", "heat_scatter.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    with pytest.raises(InputError, match="no ok runs"):
        plot(leaderboard(csv_rows, where=["loss=qfl"]), tmp_path / "x.png")


def test_rebuild_round_trip(tmp_path):
    """Run folders (as the engine writes them) -> the latest attempts of the original CSV."""
    original = tmp_path / "runs.csv"
    # a second attempt overwrites its folder's row.json: the latest attempt wins
    for row in _rows():
        folder = tmp_path / ("sweeps/s1" if row["loss"] == "focal" else "runs") / row["run_id"]
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "row.json", {**row, "run_dir": str(folder)})
        append_row(original, {**row, "run_dir": str(folder)})
    rebuilt = tmp_path / "rebuilt.csv"
    assert rebuild(tmp_path, rebuilt) == 7
    expected = sorted(
        (r for r in read_rows(original) if r["started"] != "2024-01-01T00:00:00"),
        key=lambda r: r["started"],
    )
    assert read_rows(rebuilt) == expected
    assert leaderboard(read_rows(rebuilt)).entries == leaderboard(read_rows(original)).entries
    assert not list(tmp_path.glob(".rebuilt.csv.tmp*"))


def test_rebuild_without_run_folders_keeps_csv(tmp_path):
    csv_path = tmp_path / "runs.csv"
    append_row(csv_path, {"run_id": "a", "status": "ok"})
    before = csv_path.read_text()
    with pytest.raises(InputError, match="no run folders"):
        rebuild(tmp_path, csv_path)
    assert csv_path.read_text() == before


def test_cocoevals_minus_one_is_no_value(tmp_path):
    """COCOeval writes -1 for an area range without ground truth (no large objects at 160 px): the
    board shows no value there, not a mean of -1."""
    path = tmp_path / "runs.csv"
    for s in (0, 1):
        row = {"run_id": f"r{s}", "status": "ok", "seed": s, "loss": "focal", "mAP": 0.3 + s / 10}
        append_row(path, {**row, "APl": -1.0})
    (entry,) = leaderboard(read_rows(path)).entries
    assert entry["mAP_mean"] == pytest.approx(0.35) and entry["APl_n"] == 0
    assert math.isnan(entry["APl_mean"])
