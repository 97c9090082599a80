"""GHM-C, the first loss with state across iterations (issue 24): its running bin counts are the
criterion's buffer, saved in the checkpoint, so a run killed after epoch 2 of 4 and resumed gives
the metrics of the uninterrupted run; and what the config does with it."""

from __future__ import annotations

import pytest
import torch

from focalbench.config import compose
from focalbench.engine import train as engine_train
from focalbench.engine.run import run
from focalbench.errors import InputError
from tests.conftest import TINY

GHMC = [*TINY, "loss=ghmc", "loss.momentum=0.75", "train.epochs=4", "train.progress=false"]
METRICS = ("mAP", "AP50", "laece0", "lrp", "brier")


def _interrupt_at(monkeypatch, stop_epoch: int) -> None:
    """Ctrl-C as epoch `stop_epoch` starts (after the checkpoint of the epochs before it)."""
    real = engine_train.train_one_epoch

    def one_epoch(model, loader, training, device, epoch, progress):
        if epoch == stop_epoch:
            raise KeyboardInterrupt
        return real(model, loader, training, device, epoch, progress)

    monkeypatch.setattr(engine_train, "train_one_epoch", one_epoch)


def _losses(log_path) -> list[list[str]]:
    """train_log.csv without its timing columns."""
    rows = [line.split(",") for line in log_path.read_text().splitlines()]
    keep = [i for i, col in enumerate(rows[0]) if col not in ("time_s", "imgs_per_s")]
    return [[row[i] for i in keep] for row in rows]


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [GHMC, [*TINY, "loss=focal", "train.epochs=4", "train.progress=false"]],
    ids=["ghmc", "focal"],
)
def test_a_killed_and_resumed_run_equals_the_uninterrupted_one(tmp_path, monkeypatch, overrides):
    """Also for a stateless loss: the data order of the epochs left comes from the checkpoint (the
    loader's shuffling generator), not the first epochs' order again."""
    whole = run(compose([*overrides, f"results_dir={tmp_path / 'whole'}"]))
    assert whole.status == "ok", whole.error

    cfg = compose([*overrides, f"results_dir={tmp_path / 'cut'}"])
    with monkeypatch.context() as m:
        _interrupt_at(m, 2)
        with pytest.raises(KeyboardInterrupt):
            run(cfg)
    saved = torch.load(tmp_path / "cut" / "runs" / cfg.run_id / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 2
    if cfg.loss.name == "ghmc":  # the running counts are in the checkpoint
        counts = saved["model"]["cls_loss.ghm_acc_sum"]
        assert counts.shape == (30,) and counts.sum() > 0

    resumed = run(cfg)
    assert resumed.status == "ok", resumed.error
    assert resumed.metrics["resumed_from_epoch"] == 2
    for key in METRICS:
        assert resumed.metrics[key] == pytest.approx(whole.metrics[key], abs=1e-9), key
    assert _losses(resumed.run_dir / "train_log.csv") == _losses(whole.run_dir / "train_log.csv")


@pytest.mark.slow
def test_the_state_matters_a_resume_without_it_trains_differently(tmp_path, monkeypatch):
    """The check above can fail: zeroing the saved counts changes the epochs after the resume."""
    cfg = compose([*GHMC, "train.epochs=3", f"results_dir={tmp_path}"])
    with monkeypatch.context() as m:
        _interrupt_at(m, 1)
        with pytest.raises(KeyboardInterrupt):
            run(cfg)
    path = tmp_path / "runs" / cfg.run_id / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    kept = run(compose([*GHMC, "train.epochs=3", f"results_dir={tmp_path / 'kept'}"]))
    state["model"]["cls_loss.ghm_acc_sum"].zero_()
    torch.save(state, path)
    lost = run(cfg)
    assert lost.status == "ok" and kept.status == "ok"
    assert _losses(kept.run_dir / "train_log.csv") != _losses(lost.run_dir / "train_log.csv")


def test_ghmc_normalizes_by_itself_so_normalization_is_not_in_its_run_id():
    a = compose(["loss=ghmc", "loss.normalization=num_pos_batch"])
    b = compose(["loss=ghmc", "loss.normalization=num_pos_per_image"])
    assert a.run_id == b.run_id
    assert "normalization" not in a.science()["loss"]
    c = compose(["loss=ghmc", "loss.bins=10"])
    assert c.run_id != a.run_id and c.science()["loss"] == {
        "name": "ghmc",
        "bins": 10,
        "momentum": 0.75,
    }


def test_detr_refuses_ghmc_and_says_why():
    with pytest.raises(InputError, match="loss=ghmc is for dense detectors"):
        compose(["model=detr", "loss=ghmc"])


def test_poly1_epsilon_enters_the_run_id_and_alpha_words_resolve_as_for_focal():
    a, b = compose(["loss=poly1"]), compose(["loss=poly1", "loss.epsilon=-0.5"])
    assert a.run_id != b.run_id
    assert b.science()["loss"]["epsilon"] == -0.5
    assert compose(["loss=poly1", "loss.alpha=inverse_freq"]).loss.alpha == "inverse_freq"
    # the other losses' ids do not move: the new keys are not theirs
    assert "epsilon" not in compose(["loss=focal"]).science()["loss"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("loss.epsilon=abc", "loss.epsilon='abc' is not a number"),
        ("loss.bins=0", "loss.bins=0 is out of range; expected an integer >= 1"),
        ("loss.momentum=1.0", r"loss.momentum=1.0 is out of range; expected a value in \[0, 1\)"),
        ("loss.momentum=-0.1", r"loss.momentum=-0.1 is out of range"),
    ],
)
def test_bad_poly1_and_ghmc_options(override, message):
    loss = "poly1" if "epsilon" in override else "ghmc"
    with pytest.raises(InputError, match=message):
        compose([f"loss={loss}", override])
