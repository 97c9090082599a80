"""The command line as a user meets it: help, exit codes, one-line errors, an end-to-end smoke
run."""

import csv
import json
from pathlib import Path

import pytest

from focalbench.results.store import CSV_COLUMNS


def test_help_lists_commands(cli):
    result = cli("--help")
    assert result.returncode == 0
    for command in ("train", "sweep", "leaderboard", "evaluate", "data", "losses"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["train"],
        ["sweep"],
        ["leaderboard"],
        ["evaluate"],
        ["data", "synth"],
        ["data", "subset"],
        ["data", "check"],
        ["losses"],
    ],
)
def test_every_command_has_help(cli, command):
    result = cli(*command, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "loss=nope"], "unknown loss 'nope'; choose from"),
        (["train", "loss.gamma=-1"], "loss.gamma=-1"),
        (
            ["train", "data=coco", "data.ann=missing.json", "data.images=."],
            "data.ann='missing.json': no such file",
        ),
        (["evaluate", "missing_gt.json", "missing_dets.json"], "missing_gt.json"),
        (["leaderboard", "--csv", "missing.csv"], "missing.csv"),
        (["sweep", "loss=focal", "--gpus", "99"], "--gpus"),  # no CUDA, or no GPU 99
    ],
)
def test_bad_input_is_one_line_exit_2(cli, tmp_path, args, needle):
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results" / "runs.csv").exists()


def test_debug_shows_traceback(cli):
    result = cli("--debug", "train", "loss=nope")
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.slow
def test_train_smoke_end_to_end(cli, tmp_path):
    result = cli("train", "experiment=smoke", "train.progress=false")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "results" / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and tuple(rows[0]) == CSV_COLUMNS
    row = rows[0]
    assert row["status"] == "ok" and row["loss"] == "focal" and row["alpha"] == "0.25"
    assert row["normalization"] == "num_pos_batch" and row["dataset"] == "synthetic"
    assert 0.0 <= float(row["mAP"]) <= 1.0 and row["laece0"] != ""
    run_dir = tmp_path / row["run_dir"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in (
        "mAP",
        "AP50",
        "AP75",
        "APs",
        "APm",
        "APl",
        "AR1",
        "AR10",
        "AR100",
        "ARs",
        "ARm",
        "ARl",
    ):
        assert key in metrics
    assert abs(metrics["mAP"] - float(row["mAP"])) < 1e-5
    for name in (
        "config.yaml",
        "detections.json",
        "train_log.csv",
        "checkpoint.pt",
        "reliability.png",
    ):
        assert (run_dir / name).is_file(), name
    dets = json.loads((run_dir / "detections.json").read_text())
    assert dets and {"image_id", "category_id", "bbox", "score"} <= set(dets[0])

    # the same config again is skipped and leaves the CSV as it was
    again = cli("train", "experiment=smoke", "train.progress=false")
    assert again.returncode == 0 and "already done" in again.stdout
    assert len((tmp_path / "results" / "runs.csv").read_text().splitlines()) == 2

    # evaluate gives the same mAP for the run's own files
    gt = Path(metrics["val_ann"])  # the validation set the run recorded
    evaluated = cli("evaluate", str(gt), str(run_dir / "detections.json"), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert abs(json.loads(evaluated.stdout)["mAP"] - metrics["mAP"]) < 1e-9
