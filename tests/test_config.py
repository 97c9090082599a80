"""Config composition, range checks with one-line errors, and the run id."""

import dataclasses
import subprocess
import sys

import pytest

from focalbench.config import (
    DetrCfg,
    RetinaNetCfg,
    RunConfig,
    compose,
    from_container,
    group_options,
    run_id,
    to_yaml,
)
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
        (["loss=qfl", "loss.beta=-1"], "loss.beta=-1"),
        (["train.epochs=0"], "train.epochs=0"),
        (["train.batch_size=0"], "train.batch_size=0"),
        (["data.image_size=0"], "data.image_size=0"),
        (["loss.normalization=per_anchor"], "choose from ['num_pos_batch', 'num_pos_per_image']"),
        (["loss.foo=1"], "unknown option loss.foo; valid loss options"),
        # each model and loss takes only its own options
        (["model.d_model=64"], "unknown option model.d_model; valid model options for model=r"),
        (
            ["model=detr", "model.fpn_channels=64"],
            "valid model options for model=detr: ['aux_loss'",
        ),
        (
            ["model=detr", "experiment=smoke"],
            "unknown option model.fpn_channels; valid model option",
        ),
        (["loss.delta=1"], "unknown option loss.delta; valid loss options for loss=focal: ['alp"),
        (["model.norm=group"], "model.norm='group' is not valid; choose from ['adabn', 'auto', 'b"),
        (["model.weights=''"], "model.weights='' must be null, a torchvision weights name such as"),
        (["logger=csv"], "unknown logger 'csv'; choose from ['wandb']"),
        (["data=coco"], "data.ann"),
        (["train.optimizer=adam"], "choose from ['adamw', 'sgd']"),
        # per-class alpha: a list (focal, softmax_focal), or a word (focal)
        (["loss=vfl", "loss.alpha=[0.1,0.2]"], "per-class list is supported by focal and softm"),
        (["loss.alpha=[0.2,1.5]"], "loss.alpha[1]=1.5 is out of range; expected a value in [0.0,"),
        (["loss.alpha=[0.2,null]"], "loss.alpha[1]=None is not a number; per-class weights lie"),
        (["loss.alpha=balanced"], "loss.alpha='balanced' is not valid; give a number in [0, 1], n"),
        (["loss.alpha=balanced"], "or one of ['inverse_freq']"),
        (["loss=softmax_focal", "loss.alpha=inverse_freq"], "by loss=focal and poly1 only, not"),
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


def test_config_reads_the_loss_table_without_torch():
    """config.py knows each loss's hyper-parameters from losses/params.py, which imports nothing:
    validating a config must not pay for torch."""
    code = (
        "import sys; from focalbench.config import LOSS_PARAMS, compose; compose(['loss=qfl']); "
        "assert 'torch' not in sys.modules, 'torch imported'; print(sorted(LOSS_PARAMS))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # one table row per loss config group, and the registry's params (vfl's iou_weighted is a
    # function argument, not a config option)
    assert eval(out.stdout) == group_options("loss")
    from focalbench.config import LOSS_PARAMS
    from focalbench.losses import LOSSES

    assert LOSS_PARAMS["qfl"] == ("beta",) and LOSS_PARAMS["bce"] == ()
    assert set(LOSS_PARAMS["vfl"]) == set(LOSSES["vfl"].params) - {"iou_weighted"}


def test_unused_hyperparameters_do_not_split_the_run_id():
    bce = compose(["loss=bce"])
    assert compose(["loss=bce", "loss.gamma=2", "loss.alpha=0.5"]).run_id == bce.run_id
    # qfl.yaml sets no gamma, the base in config.yaml has the key: a grid across losses composes
    assert compose(["loss=qfl", "loss.gamma=5"]).run_id == compose(["loss=qfl"]).run_id
    assert compose(["loss=focal", "loss.beta=5"]).run_id == compose(["loss=focal"]).run_id
    from focalbench.sweep.plan import make_plan

    plan = make_plan(["experiment=smoke", "loss=focal,qfl,bce", "loss.gamma=1,2", "loss.beta=1,2"])
    assert len(plan.jobs) == 2 + 2 + 1  # focal per gamma, qfl per beta, bce once
    assert compose(["loss=qfl", "loss.beta=1"]).run_id != compose(["loss=qfl"]).run_id


def test_gfl_experiment_is_qfl_with_the_dfl_head():
    cfg = compose(["experiment=gfl"])
    assert cfg.loss.name == "qfl" and cfg.model.box_head == "dfl"


# Run ids of today's configs, and the ids the first schema (one flat ModelCfg with every field of
# both models, and weights_path) gave them, computed by that code before RetinaNetCfg/DetrCfg
# existed. An accidental change of the science dict fails here for every config at once. That
# schema knew only the images now called data.difficulty=hard; with them the ids are unchanged.
# (experiment=demo and demo_sweep were retuned since: their ids changed on purpose.)
PINNED = [
    ([], "a796c683d8", "00bd00969b"),
    (["experiment=smoke"], "5ffeb7eb01", "b6e7cc142c"),
    (["model=detr"], "28523e232e", "2d59551ac6"),
    (["model=detr", "experiment=detr_smoke"], "d00214cf9f", "e39010e600"),
    (["model=detr", "loss=softmax_focal", "matcher=ce", "seed=3"], "9cba119954", "dfa454438f"),
    (["loss=qfl", "experiment=gfl"], "4661784db5", "274a9a3aea"),
    # the first schema left weights_path out of the id; with the BatchNorm it always used, a file
    # of weights is that config still (model.norm=auto would freeze BatchNorm: another config)
    (
        ["model.weights=/data/r18.pth", "model.norm=bn", "model.trainable_layers=5"],
        "c2e48da9ff",
        "00bd00969b",
    ),  # fmt: skip
]


@pytest.mark.parametrize(("overrides", "current", "legacy"), PINNED)
def test_run_ids_are_pinned_and_keep_the_first_schemas_id(overrides, current, legacy):
    cfg = compose([*overrides, "data.difficulty=hard"])
    assert cfg.run_id == current
    assert cfg.run_ids == (current, legacy)
    # the easy preset (the default now) is other images: another run, with no old id
    easy = compose(overrides)
    assert easy.run_id != current and easy.run_ids == (easy.run_id,)


def test_configs_the_first_schema_could_not_express_have_no_old_id():
    for overrides in (["model.weights=/data/r18.pth"], ["model.norm=frozen_bn"],
                      ["model.weights=IMAGENET1K_V1"], ["model.weights=synthetic"],
                      ["model.trainable_layers=3"]):  # fmt: skip
        cfg = compose([*overrides, "data.difficulty=hard"])
        assert cfg.run_ids == (cfg.run_id,), overrides


def test_the_other_models_options_are_not_in_the_run_id():
    assert "d_model" not in RunConfig().science()["model"]
    assert "fpn_channels" not in RunConfig(model=DetrCfg()).science()["model"]
    assert set(RunConfig().science()["model"]) == {
        f.name for f in dataclasses.fields(RetinaNetCfg)
    } - {"weights", "norm", "trainable_layers", "anchor_sizes_from"}  # scratch, BN, all stages
    # model.anchor_sizes=auto: the fitted sizes are in the run id, the word is not


def test_anchor_sizes_auto_and_its_sizes_typed_by_hand_are_one_run():
    import dataclasses as dc

    word = compose(["model.anchor_sizes=auto"])
    assert word.model.anchor_sizes == "auto"  # compose reads no data: engine.resolve resolves
    sizes = (15, 30, 45, 60, 90)
    resolved = dc.replace(word, model=dc.replace(word.model, anchor_sizes=sizes,
                                                 anchor_sizes_from="auto"))  # fmt: skip
    typed = compose(["model.anchor_sizes=[15,30,45,60,90]"])
    assert resolved.run_id == typed.run_id and resolved.run_ids == typed.run_ids
    with pytest.raises(InputError, match="model.anchor_sizes='kmeans' is not valid; give 5"):
        compose(["model.anchor_sizes=kmeans"])


@pytest.mark.parametrize(
    ("weights", "norm", "kind", "resolved"),
    [
        ("/data/r18.pth", "auto", "file", "frozen_bn"),
        ("weights/r18.pt", "bn", "file", None),
        ("IMAGENET1K_V1", "auto", "torchvision:IMAGENET1K_V1", "frozen_bn"),
        ("DEFAULT", "auto", "torchvision:DEFAULT", "frozen_bn"),
        ("synthetic", "auto", "synthetic", "frozen_bn"),
        (None, "frozen_bn", None, "frozen_bn"),
    ],
)
def test_the_run_id_has_the_kind_of_weights_never_a_path(weights, norm, kind, resolved):
    science = RunConfig(model=RetinaNetCfg(weights=weights, norm=norm)).science()["model"]
    assert science.get("weights") == kind and science.get("norm") == resolved
    assert str(weights) not in str(science) or kind != "file"
    if kind == "file":  # another place of the same file: the same run
        moved = RunConfig(model=RetinaNetCfg(weights="/elsewhere/x.pt", norm=norm))
        assert moved.run_id == RunConfig(model=RetinaNetCfg(weights=weights, norm=norm)).run_id


def test_a_config_yaml_of_the_first_schema_reads_as_todays_config():
    """A run folder's config.yaml from before RetinaNetCfg/DetrCfg: a flat model section with both
    models' fields and weights_path. It reads as today's config, and its old id is the folder's."""
    import yaml

    saved = yaml.safe_load(to_yaml(compose(["experiment=smoke"])))
    del saved["data"]["difficulty"]  # that schema had none: its images are the hard preset's
    saved["model"] = {
        "name": "retinanet", "backbone": "resnet18", "weights_path": None, "box_head": "l1",
        "reg_max": 8, "fpn_channels": 128, "head_convs": 2,
        "anchor_sizes": [16, 32, 64, 128, 256], "score_thresh": 0.01, "detections_per_img": 100,
        "d_model": 128, "nheads": 8, "enc_layers": 2, "dec_layers": 2, "dim_feedforward": 512,
        "num_queries": 50, "dropout": 0.0, "aux_loss": True, "noobj_weight": 0.1,
        "weight_class": 2.0, "weight_bbox": 5.0, "weight_giou": 2.0,
    }  # fmt: skip
    # the science sections, as results/run_configs.py reads them
    cfg = from_container(
        {k: saved[k] for k in ("model", "loss", "matcher", "data", "train", "seed")}
    )
    assert cfg.model == RetinaNetCfg(fpn_channels=128, head_convs=2, norm="bn", trainable_layers=5)
    assert cfg.data.difficulty == "hard"
    assert cfg.run_ids == ("5ffeb7eb01", "b6e7cc142c")


def test_logging_to_wandb_is_a_group_option_off_by_default():
    assert not compose([]).wandb.enabled
    assert compose(["logger=wandb"]).wandb.enabled


# ---- per-class alpha: loss.alpha=[...] and loss.alpha=inverse_freq -----------------------------


def test_inverse_freq_alpha_formula():
    from focalbench.config import inverse_freq_alpha

    assert inverse_freq_alpha([50, 50, 50, 50]) == (0.25, 0.25, 0.25, 0.25)  # balanced: Lin's 0.25
    # 1/n = [1, 1/2, 1/4], mean 7/12: alpha = 0.25 * (1/n) * 12/7 = [3/7, 3/14, 3/28]
    assert inverse_freq_alpha([1, 2, 4]) == (0.4286, 0.2143, 0.1071)  # 4 significant digits
    # clipped to 1: 1/n = [1, 1/1000 x 9], mean ~0.109 -> 0.25 / 0.109 > 1
    assert inverse_freq_alpha([1] + [1000] * 9)[0] == 1.0
    assert inverse_freq_alpha([0, 1]) == (0.25, 0.25)  # a class without annotations counts as 1


def test_inverse_freq_resolves_to_the_run_of_its_list():
    """The run id records the resolved list: inverse_freq and the same list typed by hand are one
    config (alpha_from, where the list came from, is not science); config.yaml keeps both."""
    import yaml

    word = compose(["loss.alpha=inverse_freq"])
    assert word.loss.alpha == "inverse_freq"  # compose does not read data: engine.resolve resolves
    resolved = dataclasses.replace(word, loss=word.loss.with_class_counts([10, 20, 40, 5, 5, 20]))
    assert resolved.loss.alpha_from == "inverse_freq" and len(resolved.loss.alpha) == 6
    typed = compose(["loss.alpha=[" + ",".join(map(str, resolved.loss.alpha)) + "]"])
    assert typed.loss.alpha_from is None and typed.run_id == resolved.run_id != word.run_id
    assert resolved.science()["loss"]["alpha"] == resolved.loss.alpha
    saved = yaml.safe_load(to_yaml(resolved))
    assert saved["loss"]["alpha"] == list(resolved.loss.alpha)
    assert saved["loss"]["alpha_from"] == "inverse_freq"
    back = from_container({k: saved[k] for k in ("model", "loss", "matcher", "data", "train")})
    assert back.loss == resolved.loss and back.run_id == resolved.run_id
    # a per-class list keeps ids apart from the float, as any other value does
    assert compose(["loss.alpha=[0.25,0.25]"]).run_id != compose(["loss.alpha=0.25"]).run_id


def test_inverse_freq_run_records_the_list(tmp_path, monkeypatch):
    """A real run: the counts come from the training annotations, and the run id, CSV row,
    config.yaml and metrics.json carry the list used."""
    import json

    import yaml

    from focalbench.engine.resolve import class_counts, resolve_alpha, training_annotations
    from focalbench.engine.run import run
    from focalbench.results.store import read_rows
    from tests.conftest import TINY

    monkeypatch.chdir(tmp_path)
    cfg = compose([*TINY, "loss.alpha=inverse_freq", "train.progress=false"])
    resolved = resolve_alpha(cfg)
    ann = json.loads(training_annotations(cfg).read_text())
    counts = [0] * len(ann["categories"])
    order = sorted(c["id"] for c in ann["categories"])
    for a in ann["annotations"]:
        counts[order.index(a["category_id"])] += 1
    assert class_counts(training_annotations(cfg)) == counts
    from focalbench.config import inverse_freq_alpha

    assert resolved.loss.alpha == inverse_freq_alpha(counts)
    result = run(cfg)
    assert result.status == "ok", result.error
    assert result.run_id == resolved.run_id
    (row,) = read_rows(tmp_path / "results" / "runs.csv")
    assert row["run_id"] == resolved.run_id
    assert row["alpha"] == "[" + ",".join(f"{a:.6g}" for a in resolved.loss.alpha) + "]"
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["loss"]["alpha"] == list(resolved.loss.alpha) and saved["run_id"] == result.run_id
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["loss_alpha"] == list(resolved.loss.alpha)
    assert metrics["loss_alpha_from"] == "inverse_freq"
    assert run(cfg).status == "skipped"  # the same word again: the same (resolved) run


def test_anchor_sizes_auto_run_records_the_fitted_sizes(tmp_path, monkeypatch):
    """A real run: model.anchor_sizes=auto is fitted to the training boxes at data.image_size
    (data/anchors.fit_anchor_sizes, recomputed here), before the run id; the plan of a sweep knows
    the same id, and config.yaml keeps the sizes and the word."""
    import yaml

    from focalbench.data import load_coco_json
    from focalbench.data.anchors import fit_anchor_sizes
    from focalbench.data.stats import run_size_boxes
    from focalbench.engine.resolve import resolve_words, training_annotations
    from focalbench.engine.run import run
    from focalbench.sweep.plan import make_plan
    from tests.conftest import TINY

    monkeypatch.chdir(tmp_path)
    cfg = compose([*TINY, "model.anchor_sizes=auto", "train.progress=false"])
    boxes = run_size_boxes(load_coco_json(training_annotations(cfg)), cfg.data.image_size)
    sides = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) ** 0.5
    want = fit_anchor_sizes(
        sides, 5, boxes=boxes, image_size=cfg.data.image_size, start=(16, 32, 64, 128, 256)
    )
    resolved = resolve_words(cfg)
    assert resolved.model.anchor_sizes == want and resolved.model.anchor_sizes_from == "auto"
    (job,) = make_plan([*TINY, "model.anchor_sizes=auto", "train.progress=false"]).jobs
    assert job.run_id == resolved.run_id
    result = run(cfg)
    assert result.status == "ok", result.error and result.run_id == resolved.run_id
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["model"]["anchor_sizes"] == list(want)
    assert saved["model"]["anchor_sizes_from"] == "auto"
