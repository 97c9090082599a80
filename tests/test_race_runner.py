"""`focalbench sweep GRID --race` (sweep/race.py) on recorded detections: each "run" of the fake
runner writes the detections of a detector of its config's quality on a fixed validation set, and
its row. Checks that a clearly worse config leaves the race, that the truly best stays, and that a
race stopped mid-round (Ctrl-C) resumes to the same decisions as an uninterrupted one, with no run
trained twice."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from focalbench.cli import main
from focalbench.config import to_yaml
from focalbench.metrics.evaluate import detection_set
from focalbench.metrics.resample import ResampledMetrics
from focalbench.results.store import append_row, read_rows
from focalbench.results.view import show_leaderboard
from focalbench.sweep import race
from tests.conftest import TINY
from tests.metrics.synthetic_runs import detections, ground_truth
from tests.test_reliability import _cleanup, _start, _wait_for, linux_only

# miss rate of each loss's "detector": focal and qfl close, bce far worse
QUALITY = {"focal": 0.20, "qfl": 0.23, "bce": 0.75, "ce": 0.5, "softmax_focal": 0.5}
GRID = [*TINY, "loss=focal,bce,qfl"]


class FakeRunner:
    """execute_plan's stand-in: writes each pending job's run folder and ok row; raises
    KeyboardInterrupt before the job number `stop_at` (counting from 0) if given."""

    def __init__(self, gt_path: Path, stop_at: int | None = None) -> None:
        self.gt_path, self.stop_at, self.ran = gt_path, stop_at, []
        self.gt = json.loads(gt_path.read_text())

    def __call__(self, plan, *args, **kwargs) -> int:
        for job in plan.to_run:
            if self.stop_at is not None and len(self.ran) == self.stop_at:
                raise KeyboardInterrupt
            cfg = job.cfg
            seed = int(hashlib.sha1(f"{cfg.loss.name}-{cfg.seed}".encode()).hexdigest()[:8], 16)
            dets = detections(np.random.default_rng(seed), self.gt, miss=QUALITY[cfg.loss.name])
            folder = Path(cfg.results_dir) / "sweeps" / plan.sweep_id / job.run_id
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "detections.json").write_text(json.dumps(dets))
            (folder / "metrics.json").write_text(json.dumps({"val_ann": str(self.gt_path)}))
            (folder / "config.yaml").write_text(to_yaml(cfg))
            full = ResampledMetrics(detection_set(self.gt, dets), ["mAP"]).full()
            row = {"run_id": job.run_id, "status": "ok", "loss": cfg.loss.name, "seed": cfg.seed}
            append_row(Path(cfg.results_dir) / "runs.csv", {**row, "mAP": full["mAP"],
                                                            "run_dir": str(folder)})  # fmt: skip
            self.ran.append(job.run_id)
        return 0


def _race(results: Path, runner: FakeRunner, monkeypatch, **options) -> tuple[int, str]:
    monkeypatch.setattr(race, "execute_plan", runner)
    console = Console(record=True, width=200)
    code = race.run_race([*GRID, f"results_dir={results}"], console=console, n_boot=300,
                         **options)  # fmt: skip
    return code, console.export_text()


@pytest.fixture
def gt_path(tmp_path):
    path = tmp_path / "val.json"
    path.write_text(json.dumps(ground_truth(np.random.default_rng(0), n_img=80)))
    return path


def test_a_clearly_worse_config_leaves_and_the_best_stays(tmp_path, gt_path, monkeypatch):
    runner = FakeRunner(gt_path)
    code, text = _race(tmp_path / "a", runner, monkeypatch, max_seeds=4)
    assert code == 0, text
    round_1 = next(line for line in text.splitlines() if line.startswith("round 1:"))
    assert "nothing decided" in round_1  # no seed variance yet: one seed each
    assert "out: loss=bce" in next(ln for ln in text.splitlines() if ln.startswith("round 2:"))
    table = text[text.index("race on mAP") :]
    bce = next(line for line in table.splitlines() if "loss=bce" in line)
    assert "out at round 2" in bce  # far worse: out as soon as a seed variance exists
    assert "loss=bce" not in [line for line in text.splitlines() if line.startswith("round 3")][0]
    focal = next(line for line in table.splitlines() if "loss=focal" in line)
    assert " best " in focal
    # bce ran 2 seeds, focal and qfl 4 each (qfl within noise of focal at the cap)
    assert len(runner.ran) == 2 + 4 + 4
    assert "within noise at the cap" in next(ln for ln in table.splitlines() if "loss=qfl" in ln)


def test_a_near_tie_stops_early_with_futility_and_the_board_says_why(
    tmp_path, gt_path, monkeypatch
):
    """The same race with --futility 0.2: qfl, within noise of focal, cannot be
    separated from it by seed 4, so it stops at round 2 with its chance recorded; 6 runs, not 10.
    The leaderboard marks it as a config that left the race, and says why."""
    results = tmp_path / "f"
    runner = FakeRunner(gt_path)
    code, text = _race(results, runner, monkeypatch, max_seeds=4, futility=0.2)
    assert code == 0, text
    assert "futile below 0.2 conditional power" in text
    round_2 = next(ln for ln in text.splitlines() if ln.startswith("round 2:"))
    assert "out: loss=bce" in round_2 and "inseparable by the cap: loss=qfl" in round_2
    assert "the race ends: the others are out or inseparable from the best by the cap" in text
    assert len(runner.ran) == 2 + 2 + 2
    row = {r["config"]: r for r in csv.DictReader(open(next(results.glob("sweeps/*/race.csv"))))}
    qfl = row["loss=qfl"]
    assert qfl["status"] == "futile" and qfl["round"] == "2" and float(qfl["lo"]) < 0
    chance = float(qfl["chance_by_cap"])
    assert 0 <= chance < 0.2
    table = text[text.index("race on mAP") :]
    line = next(ln for ln in table.splitlines() if "loss=qfl" in ln)
    assert f"within noise, stopped at round 2 ({chance:.0%} chance by the cap)" in line
    board = Console(record=True, width=300)
    show_leaderboard(results / "runs.csv", board, Console(stderr=True), noise=False)
    flat = " ".join(board.export_text().split())
    assert "(futile: within noise of the best, and more seeds were unlikely" in flat


def test_a_stopped_race_resumes_to_the_same_decisions(tmp_path, gt_path, monkeypatch):
    _, whole = _race(tmp_path / "whole", FakeRunner(gt_path), monkeypatch, max_seeds=3)
    cut = FakeRunner(gt_path, stop_at=4)  # round 2: after focal (and bce) of seed 1
    with pytest.raises(KeyboardInterrupt):
        _race(tmp_path / "cut", cut, monkeypatch, max_seeds=3)
    again = FakeRunner(gt_path)
    code, resumed = _race(tmp_path / "cut", again, monkeypatch, max_seeds=3)
    assert code == 0
    assert resumed[resumed.index("race on mAP") :] == whole[whole.index("race on mAP") :]
    ids = [r["run_id"] for r in read_rows(tmp_path / "cut" / "runs.csv")]
    assert len(ids) == len(set(ids)) == len(cut.ran) + len(again.ran)  # nothing ran twice


def test_earlier_runs_of_other_losses_give_a_prior_and_round_1_decides(
    tmp_path, gt_path, monkeypatch
):
    """Earlier ok runs of the same budget but another loss (3 seeds of ce and softmax_focal) pool
    into a prior seed variance, so bce can leave at round 1; the race's own runs and other
    budgets do not count, and race.csv records the decisions for the leaderboard."""
    results = tmp_path / "p"
    earlier = FakeRunner(gt_path)
    for overrides in ([*TINY, "loss=ce,softmax_focal", "seed=0,1,2"],
                      [*TINY, "loss=ce", "train.lr=0.5", "seed=0,1"]):  # fmt: skip
        plan = race.mark_states(race.Plan("earlier", [
            race.Job(o, race.resolved(race.compose([*o, f"results_dir={results}"])))
            for o in race.expand_grid(overrides)]))  # fmt: skip
        earlier(plan)
    values = {}
    for row in read_rows(results / "runs.csv"):
        if row["run_id"] in earlier.ran[:6]:
            values.setdefault(row["loss"], []).append(float(row["mAP"]))
    want = sum(sum((v - np.mean(x)) ** 2 for v in x) for x in values.values()) / 4
    racers = race.make_racers([*GRID, f"results_dir={results}"], 3, "r")
    prior = race.earlier_seed_variance(racers, results / "runs.csv", "mAP")
    assert prior is not None and prior.df == 4 and prior.value == pytest.approx(want)
    assert "2 other-loss configs" in prior.source  # lr 0.5 is another budget: left out

    runner = FakeRunner(gt_path)
    code, text = _race(results, runner, monkeypatch, max_seeds=3)
    assert code == 0 and "prior seed variance from earlier runs" in text
    round_1 = next(line for line in text.splitlines() if line.startswith("round 1:"))
    assert "out: loss=bce" in round_1, round_1
    rows = {r["config"]: r for r in csv.DictReader(open(next(results.glob("sweeps/*/race.csv"))))}
    assert rows["loss=bce"]["status"] == "out" and rows["loss=bce"]["round"] == "1"
    assert rows["loss=bce"]["config_id"] == racers[1].seeds[0].config_id


@pytest.mark.parametrize(
    "args, message",
    [
        (["loss=focal"], "--race needs a grid of at least two configs, got 1"),
        (["loss=focal,bce", "seed=0,1"], "--race chooses the seeds"),
        (["loss=focal,bce", "--max-seeds", "1"], "--max-seeds 1: a race needs at least 2 seeds"),
        (["loss=focal,bce", "--level", "1.5"], "--level 1.5: choose a value in (0, 1)"),
        (["loss=focal,bce", "--futility", "1"], "--futility 1.0: choose a chance in [0, 1)"),
        (["loss=focal,bce", "--metric", "AP51"], "--metric 'AP51' is not scored by the paired"),
        (["loss.gamma=interval(0,5)", "--search", "tpe"], "does not combine with --search"),
        (["loss=focal,bce", "--dry-run"], "--race runs round by round"),
    ],
)
def test_bad_race_options_are_one_line_exit_2(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--race", *TINY, *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "results" / "runs.csv").exists()


def test_power_and_compares_hint_from_the_race_runs(tmp_path, gt_path, monkeypatch, capsys):
    """`power` on two configs with 3 seeds: the variance parts and the seeds a difference needs;
    one seed a side or --diff <= 0 is bad input."""
    results = tmp_path / "r"
    _race(results, FakeRunner(gt_path), monkeypatch, max_seeds=3)
    csv = str(results / "runs.csv")
    with pytest.raises(SystemExit) as exit_info:
        main(["power", "loss=focal", "loss=qfl", "--diff", "0.01", "--csv", csv, "--n-boot", "200"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0, out
    assert "seed level: sd of one run" in out and "image level: sd of the difference" in out
    assert "to resolve +0.010 (80% power, 95% level)" in out
    one_run = read_rows(results / "runs.csv")[0]["run_id"]  # a run id: one seed
    for args, message in (
        (["loss=focal", "loss=qfl", "--diff", "0"], "--diff 0.0: give the difference to resolve"),
        ([one_run, "loss=qfl", "--diff", "0.01"], "A has 1 seed; power needs at least two seeds"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["power", *args, "--csv", csv])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err


@linux_only
@pytest.mark.slow
def test_a_race_stopped_by_ctrl_c_resumes_to_the_same_decisions_on_smoke(tmp_path):
    """The same on real `smoke`-sized runs and a real Ctrl-C: a race in a terminal of its own is
    sent SIGINT while round 1 trains (one of its two runs recorded), exits 130, and the same
    command finishes it with the decisions of an uninterrupted race and no run trained twice."""
    args = [*TINY, "data.val_images=6", "loss=focal,bce", "--race", "--max-seeds", "2"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    try:
        for folder in (whole, cut):
            folder.mkdir()
        done = _start(whole, args)
        stopped = _start(cut, args)
        csv_path = cut / "results" / "runs.csv"
        _wait_for(lambda: csv_path.exists() and len(read_rows(csv_path)) >= 1, 180,
                  "the first run of round 1", stopped)  # fmt: skip
        os.killpg(stopped.pid, signal.SIGINT)
        out, _ = stopped.communicate(timeout=120)
        assert stopped.returncode == 130, out[-3000:]
        resumed = _start(cut, args)
        out, _ = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, out[-3000:]
        ref, _ = done.communicate(timeout=300)
        assert done.returncode == 0, ref[-3000:]
        assert out[out.index("race on mAP") :] == ref[ref.index("race on mAP") :]
        ok = [r["run_id"] for r in read_rows(csv_path) if r["status"] == "ok"]
        assert len(ok) == len(set(ok)) == 4  # 2 configs x 2 seeds: nothing trained twice
        assert sorted(ok) == sorted(r["run_id"] for r in read_rows(whole / "results" / "runs.csv"))
    finally:
        for folder in (whole, cut):
            _cleanup(folder)
