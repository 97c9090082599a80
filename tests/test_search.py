"""The adaptive search: its grammar, its bad input, and the ask/tell loop with resume; the runs are
faked by rows written straight into runs.csv (real runs: the end-to-end test in test_cli)."""

import math

import pytest

from focalbench.errors import InputError
from focalbench.results.store import append_row, read_rows
from focalbench.sweep import search


def test_space_from_hydra_optuna_grammar():
    space = search.parse_space(
        [
            "loss=focal",
            "loss.alpha=interval(0.05,0.95)",
            "loss.gamma=tag(log,interval(0.1,5))",
            "model.head_convs=int(interval(1,4))",
            "loss.normalization=num_pos_batch,num_pos_per_image",
        ]
    )
    assert space.fixed == ["loss=focal"]
    alpha, gamma = space.dims["loss.alpha"], space.dims["loss.gamma"]
    assert (alpha.low, alpha.high, alpha.log) == (0.05, 0.95, False)
    assert (gamma.low, gamma.high, gamma.log) == (0.1, 5.0, True)
    assert type(space.dims["model.head_convs"]).__name__ == "IntDistribution"
    assert space.dims["loss.normalization"].choices == ("num_pos_batch", "num_pos_per_image")


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "loss.gamma=interval(5,0)",
            r"loss.gamma=interval\(5,0\): lo must be below hi \(got 5 and 0\)",
        ),
        ("loss.gamma=interval(1,1)", "lo must be below hi"),
        ("loss.gamma=tag(log,interval(0,5))", "a log scale needs lo > 0"),
    ],
)
def test_bad_intervals(override, message):
    with pytest.raises(InputError, match=message):
        search.parse_space([override])


def test_no_dimension_and_bad_objectives():
    with pytest.raises(InputError, match="at least one search dimension"):
        search.parse_space(["loss=focal"])
    with pytest.raises(InputError, match=r"--objective 'AP51' is not a metric; choose from \["):
        search.directions(["AP51"])
    assert search.directions(["mAP", "laece0"]) == ["maximize", "minimize"]


def test_trial_overrides_round_floats():
    space = search.parse_space(["loss=focal", "loss.gamma=interval(0,5)"])
    assert search.trial_overrides(space, {"loss.gamma": 1.234567}) == [
        "loss=focal",
        "loss.gamma=1.2346",
    ]


def _fake_map(overrides):
    """A known objective: best at alpha 0.25, gamma 2."""
    values = dict(o.split("=", 1) for o in overrides)
    a, g = float(values["loss.alpha"]), float(values["loss.gamma"])
    return 0.5 - (a - 0.25) ** 2 - 0.02 * (g - 2) ** 2


class FakeRuns:
    """Stands in for sweep.execute_plan: writes an ok row per job, or stops like Ctrl-C."""

    def __init__(self, stop_at_call=None):
        self.calls, self.jobs, self.stop_at_call = 0, 0, stop_at_call

    def __call__(self, plan, **kwargs):
        self.calls += 1
        if self.calls == self.stop_at_call:
            raise KeyboardInterrupt
        for job in plan.jobs:
            self.jobs += 1
            cfg = job.cfg
            row = {"run_id": cfg.run_id, "sweep_id": cfg.sweep_id, "status": "ok", "seed": 0}
            row |= {"mAP": _fake_map(job.overrides), "laece0": 0.1 + 0.01 * cfg.loss.gamma}
            append_row(f"{cfg.results_dir}/runs.csv", row)


OVERRIDES = ["experiment=smoke", "loss=focal", "loss.alpha=interval(0.05,0.95)",
             "loss.gamma=interval(0,5)"]  # fmt: skip


def test_search_resumes_to_exactly_n_trials(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake = FakeRuns(stop_at_call=3)
    monkeypatch.setattr("focalbench.sweep.execute.execute_plan", fake, raising=False)
    with pytest.raises(KeyboardInterrupt):
        search.run_search(OVERRIDES, trials=6, jobs=2)
    assert fake.jobs == 4  # two batches of two ran; the third was stopped
    fake.stop_at_call = None
    assert search.run_search(OVERRIDES, trials=6, jobs=2) == 0
    study = search.make_study(
        search.study_name(search.parse_space(OVERRIDES), ["mAP"], "tpe", 0),
        "results",
        ["mAP"],
        6,
        0,
    )
    trials = study.get_trials()
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)
    rows = read_rows("results/runs.csv")
    assert len(rows) == 6 and len({r["run_id"] for r in rows}) == 6
    # each trial's value is its run's row
    by_id = {r["run_id"]: float(r["mAP"]) for r in rows}
    assert sorted(t.value for t in trials) == pytest.approx(sorted(by_id.values()))
    # the same command once more: nothing asked, nothing run
    runs_before = fake.jobs
    assert search.run_search(OVERRIDES, trials=6, jobs=2) == 0
    assert fake.jobs == runs_before and len(study.get_trials()) == 6


def test_a_trial_with_an_ok_row_is_told_not_trained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake = FakeRuns()
    monkeypatch.setattr("focalbench.sweep.execute.execute_plan", fake, raising=False)
    # two configs, four trials: the trials after the first of each config read its ok row
    grid = ["experiment=smoke", "loss=focal", "loss.alpha=0.25", "loss.gamma=choice(1,2)"]
    assert search.run_search(grid, trials=4) == 0
    rows = read_rows("results/runs.csv")
    assert fake.jobs == len(rows) == len({r["run_id"] for r in rows}) <= 2
    study = search.make_study(search.study_name(search.parse_space(grid), ["mAP"], "tpe", 0),
                              "results", ["mAP"], 4, 0)  # fmt: skip
    assert len(study.get_trials()) == 4


def test_two_objectives_give_a_pareto_front(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("focalbench.sweep.execute.execute_plan", FakeRuns(), raising=False)
    assert search.run_search(OVERRIDES, trials=5, objectives=["mAP", "laece0"], jobs=2) == 0
    name = search.study_name(search.parse_space(OVERRIDES), ["mAP", "laece0"], "tpe", 0)
    assert (tmp_path / "results" / "sweeps" / name / "pareto.png").is_file()
    study = search.make_study(name, "results", ["mAP", "laece0"], 5, 0)
    front = study.best_trials
    # the front is what it claims: no completed trial dominates a front member
    for f in front:
        for t in study.get_trials():
            dominates = t.values[0] >= f.values[0] and t.values[1] <= f.values[1]
            strictly = t.values[0] > f.values[0] or t.values[1] < f.values[1]
            assert not (dominates and strictly)
    assert all(math.isfinite(v) for t in study.get_trials() for v in t.values)


def test_bad_search_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="--trials 0"):
        search.run_search(OVERRIDES, trials=0)
    with pytest.raises(InputError, match="--objective 'nope'"):
        search.run_search(OVERRIDES, trials=2, objectives=["nope"])
    assert not (tmp_path / "results").exists()  # nothing written
