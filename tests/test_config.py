"""Config composition, range checks with one-line errors, and the run id."""

import pytest

from focalbench.config import RunConfig, compose, group_options, run_id
from focalbench.errors import InputError


def test_compose_defaults_and_experiment():
    cfg = compose(["experiment=smoke"])
    assert cfg.model.name == "retinanet" and cfg.loss.name == "focal"
    assert cfg.train.epochs == 1 and cfg.data.image_size == 128
    assert cfg.loss.alpha == 0.25 and cfg.loss.normalization == "num_pos_batch"


def test_alpha_null_means_no_balancing():
    assert compose(["loss.alpha=null"]).loss.alpha is None


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["loss=foo"], "unknown loss 'foo'; choose from ['bce', 'ce'"),
        (["model=foo"], "unknown model 'foo'; choose from"),
        (["data=foo"], "unknown data 'foo'"),
        (["experiment=foo"], "unknown experiment 'foo'; choose from"),
        (["loss.alpha=1.5"], "loss.alpha=1.5 is out of range"),
        (["loss.alpha=-0.1"], "loss.alpha=-0.1 is out of range"),
        (["loss.gamma=-1"], "loss.gamma=-1"),
        (["loss.beta=-1"], "loss.beta=-1"),
        (["train.epochs=0"], "train.epochs=0"),
        (["train.batch_size=0"], "train.batch_size=0"),
        (["data.image_size=0"], "data.image_size=0"),
        (["loss.normalization=per_anchor"], "choose from ['num_pos_batch', 'num_pos_per_image']"),
        (["loss.foo=1"], "unknown option loss.foo; valid loss options"),
        (["data=coco"], "data.ann"),
        (["train.optimizer=adam"], "choose from ['adamw', 'sgd']"),
        (["loss=focal", "loss.alpha=[0.1,0.2]"], "per-class list"),
    ],
)
def test_bad_config_is_one_line_naming_the_option(overrides, needle):
    with pytest.raises(InputError) as info:
        compose(overrides)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_group_options_lists_the_yaml_files():
    assert {"focal", "bce", "softmax_focal", "ce", "qfl", "vfl"} <= set(group_options("loss"))
    assert {"smoke", "demo"} <= set(group_options("experiment"))


def test_run_id_hashes_science_only():
    a = compose(["experiment=smoke"])
    b = compose(
        [
            "experiment=smoke",
            "results_dir=/elsewhere",
            "train.device=cpu",
            "train.threads=1",
            "logger=wandb",
        ]
    )
    assert a.run_id == b.run_id  # paths, device, threads and logging do not change the science
    assert len(a.run_id) == 10
    assert compose(["experiment=smoke", "seed=1"]).run_id != a.run_id
    assert compose(["experiment=smoke", "loss.gamma=1"]).run_id != a.run_id
    assert compose(["experiment=smoke", "loss=bce"]).run_id != a.run_id


def test_run_id_is_stable():
    # a hand-computed anchor: the id of a fixed dict must never drift between versions
    import hashlib
    import json

    science = {"b": 1, "a": [1, 2]}
    expected = hashlib.sha1(
        json.dumps({"a": [1, 2], "b": 1}, separators=(",", ":")).encode()
    ).hexdigest()
    assert run_id(science) == expected[:10]


def test_matcher_only_in_detr_identity():
    cfg = RunConfig()
    assert "matcher" not in cfg.science()


def test_loss_params_mirror_the_registry():
    from focalbench.config import LOSS_PARAMS
    from focalbench.losses import LOSSES

    for name, used in LOSS_PARAMS.items():
        registry = set(LOSSES[name].params) & {"alpha", "gamma", "beta"}
        assert set(used) == registry, name


def test_unused_hyperparameters_do_not_split_the_run_id():
    bce = compose(["loss=bce"])
    assert compose(["loss=bce", "loss.gamma=2", "loss.alpha=0.5"]).run_id == bce.run_id
    assert compose(["loss=qfl", "loss.gamma=5"]).run_id == compose(["loss=qfl"]).run_id
    assert compose(["loss=qfl", "loss.beta=1"]).run_id != compose(["loss=qfl"]).run_id


def test_gfl_experiment_is_qfl_with_the_dfl_head():
    cfg = compose(["experiment=gfl"])
    assert cfg.loss.name == "qfl" and cfg.model.box_head == "dfl"
