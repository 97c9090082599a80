"""`focalbench sweep --search tpe --prune NAME`: the pruners (engine/prune.py), what the search does
with a pruned run (told PRUNED, final, no failure), a grid's view of a pruned row (kept like a
failed one), the bad input, and one real search whose trials are pruned by the median pruner."""

from __future__ import annotations

import csv

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from focalbench.cli import main
from focalbench.config import PRUNERS, PruneCfg, compose
from focalbench.engine.prune import epoch_judge, make_pruner, subset_ground_truth
from focalbench.errors import InputError
from focalbench.results.store import STATUSES, append_row, read_rows
from focalbench.sweep import search
from focalbench.sweep.plan import make_plan
from focalbench.sweep.search_prune import prune_settings
from tests.conftest import TINY


@pytest.mark.parametrize(
    "name, kind",
    [
        ("median", optuna.pruners.MedianPruner),
        ("percentile", optuna.pruners.PercentilePruner),
        ("halving", optuna.pruners.SuccessiveHalvingPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
    ],
)
def test_make_pruner_names(name, kind):
    assert isinstance(make_pruner(name, startup=2, warmup=1), kind)


def test_every_config_pruner_is_built():
    assert {type(make_pruner(n, 1, 1)).__name__ for n in PRUNERS} == {
        "MedianPruner", "PercentilePruner", "SuccessiveHalvingPruner", "HyperbandPruner"
    }  # fmt: skip


@pytest.mark.parametrize("name", ["wilcoxon", "nope", "Median"])
def test_bad_pruner_names(name):
    with pytest.raises(InputError, match=rf"--prune '{name}' is not a pruner; choose from \["):
        make_pruner(name, 1, 1)


def test_settings_subset_and_off_costs_nothing():
    assert prune_settings(2) == (1, 1) and prune_settings(16) == (4, 1)
    assert prune_settings(100) == (5, 1)
    gt = {"images": [{"id": 1}, {"id": 2}], "annotations": [{"image_id": 1}, {"image_id": 2}],
          "categories": [{"id": 7}]}  # fmt: skip
    sub = subset_ground_truth(gt, [2])
    assert sub["images"] == [{"id": 2}] and sub["annotations"] == [{"image_id": 2}]
    assert sub["categories"] == gt["categories"]
    # pruning off: no study opened, no evaluation (the model and data are never touched)
    assert epoch_judge(PruneCfg(), 3, None, None, 64, 2, None) is None
    assert "pruned" in STATUSES


def test_the_prune_section_leaves_the_run_id_alone():
    plain = compose(TINY)
    pruned = compose([*TINY, "prune.pruner=median", "prune.study='s'", "prune.trial=4",
                      "prune.storage='sqlite:////tmp/x.db'"])  # fmt: skip
    assert pruned.prune.trial == 4 and pruned.run_id == plain.run_id
    assert pruned.config_id == plain.config_id
    with pytest.raises(InputError, match="prune.pruner=median needs prune.study"):
        compose([*TINY, "prune.pruner=median"])


def test_a_grid_keeps_a_pruned_row_like_a_failed_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose(TINY)
    append_row("results/runs.csv", {"run_id": cfg.run_id, "status": "pruned", "seed": 0})
    assert make_plan(TINY).jobs[0].state == "failed"
    assert make_plan(TINY, retry_failed=True).jobs[0].state == "pending"


OVERRIDES = ["experiment=smoke", "loss=focal", "loss.gamma=interval(0,5)"]


class FakeRuns:
    """execute_plan's stand-in: each job's row is `pruned` when its gamma is above 2.5, else ok;
    records the prune section each job's config got."""

    def __init__(self):
        self.prune: list[PruneCfg] = []

    def __call__(self, plan, **kwargs):
        for job in plan.jobs:
            cfg = job.cfg
            self.prune.append(cfg.prune)
            status = "pruned" if cfg.loss.gamma > 2.5 else "ok"
            row = {"run_id": cfg.run_id, "status": status, "seed": 0}
            row |= {"mAP": 0.3} if status == "ok" else {"error": "pruned after epoch 2 by ..."}
            append_row(f"{cfg.results_dir}/runs.csv", row)


def test_pruned_runs_are_told_pruned_and_never_fail_the_search(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake = FakeRuns()
    monkeypatch.setattr("focalbench.sweep.execute.execute_plan", fake, raising=False)
    assert search.run_search(OVERRIDES, trials=4, jobs=2, prune="percentile") == 0
    name = search.study_name(search.parse_space(OVERRIDES), ["mAP"], "tpe", 0)
    study = search.make_study(name, "results", ["mAP"], 4, 0)
    by_id = {t._trial_id: t for t in study.get_trials()}
    # every run got the study, its storage and its own trial's id
    assert len(fake.prune) == 4 and {p.trial for p in fake.prune} == set(by_id)
    assert {(p.pruner, p.study, p.storage) for p in fake.prune} == {
        ("percentile", name, search.storage_url(name, "results"))
    }
    assert {t.state for t in by_id.values()} == {TrialState.PRUNED, TrialState.COMPLETE}
    for p in fake.prune:
        gamma = by_id[p.trial].params["loss.gamma"]
        assert by_id[p.trial].state == (TrialState.PRUNED if gamma > 2.5 else TrialState.COMPLETE)


def test_a_running_trial_with_a_pruned_row_is_told_not_trained(tmp_path, monkeypatch):
    """A search stopped between a run's pruned row and its tell: the trial is told PRUNED from the
    row on the next call, nothing is trained."""
    monkeypatch.chdir(tmp_path)
    space = search.parse_space(OVERRIDES)
    study = search.make_study(search.study_name(space, ["mAP"], "tpe", 0), "results", ["mAP"], 1, 0)
    trial = study.ask(dict(space.dims))
    cfg = compose([*search.trial_overrides(space, trial.params)])
    append_row("results/runs.csv", {"run_id": cfg.run_id, "status": "pruned", "seed": 0})

    def no_training(plan, **kwargs):
        raise AssertionError(f"trained {[j.run_id for j in plan.jobs]}")

    monkeypatch.setattr("focalbench.sweep.execute.execute_plan", no_training, raising=False)
    assert search.run_search(OVERRIDES, trials=1, prune="median") == 0
    assert study.get_trials()[0].state == TrialState.PRUNED


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prune", "median"], "--prune median stops a search's trials early: add --search tpe"),
        (["--race", "loss=focal,bce", "--prune", "median"], "does not combine with --race"),
        (["--search", "tpe", "--prune", "wilcoxon"], "--prune 'wilcoxon' is not a pruner; choose"),
        (["--search", "tpe", "--prune", "nope"], "choose from ['median', 'percentile', 'halving'"),
        (["--search", "tpe", "--prune", "median", "--objective", "mAP", "--objective", "laece0"],
         "--prune judges one objective per epoch"),
    ],
)  # fmt: skip
def test_bad_prune_options_are_one_line_exit_2(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", *TINY, "loss.gamma=interval(0,5)", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "results").exists()  # nothing written, nothing run


@pytest.mark.slow
def test_a_smoke_trial_below_a_strong_trial_is_pruned(tmp_path, monkeypatch, capsys):
    """A study holding one completed trial with mAP 1.0 at every epoch: the median pruner stops the
    real trial (mAP ~0) after epoch 2 (epoch 1 is the warm-up; the last, 3, is never judged). Its
    row says `pruned`, under the plain run's id; Optuna says PRUNED; the table shows it; the same
    command again trains nothing."""
    monkeypatch.chdir(tmp_path)
    grid = [*TINY, "train.epochs=3", "loss=focal", "loss.gamma=interval(0,5)"]
    space = search.parse_space(grid)
    name = search.study_name(space, ["mAP"], "tpe", 0)
    study = search.make_study(name, "results", ["mAP"], 2, 0)
    study.add_trial(create_trial(params={"loss.gamma": 2.0}, distributions=space.dims, value=1.0,
                                 intermediate_values={0: 1.0, 1: 1.0, 2: 1.0}))  # fmt: skip
    command = ["sweep", *grid, "--search", "tpe", "--trials", "2", "--prune", "median"]

    def sweep() -> str:
        with pytest.raises(SystemExit) as exit_info:
            main(command)
        out = capsys.readouterr()
        assert exit_info.value.code == 0, out.out + out.err  # pruned is no failure
        return out.out

    first = sweep()
    (row,) = read_rows("results/runs.csv")
    assert row["status"] == "pruned", row
    assert "pruned after epoch 2 by the median pruner" in row["error"]
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert trials[1].last_step == 1  # steps count epochs from 0
    assert row["run_id"] == compose(search.trial_overrides(space, trials[1].params)).run_id
    assert "pruned at epoch 2" in first, first
    log = tmp_path / "results" / "sweeps" / name / row["run_id"] / "train_log.csv"
    assert [r["epoch"] for r in csv.DictReader(open(log))] == ["1", "2"]  # stopped there

    again = sweep()
    assert "2 ended before" in again and "trial 1:" not in again and "pruned at epoch 2" in again
    assert len(read_rows("results/runs.csv")) == 1  # nothing trained again
