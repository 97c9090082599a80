"""Entry point: result layout and types, calib_threshold, bad-input errors, PNG, `python -m`."""

import json
import subprocess
import sys

import pytest

from focalbench.errors import InputError
from focalbench.metrics import COCO_STAT_KEYS, evaluate, evaluate_files, plot_reliability
from focalbench.metrics.evaluate import to_json

from .test_calibration import TOY_DETS, TOY_GT


def write(tmp_path, gt=TOY_GT, dets=TOY_DETS, raw_dets=None):
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(raw_dets if raw_dets is not None else json.dumps(dets))
    return tmp_path / "gt.json", tmp_path / "dets.json"


def plain(obj):
    """Only plain Python types anywhere (no numpy scalars)."""
    if isinstance(obj, dict):
        return all(isinstance(k, str) and plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(plain(v) for v in obj)
    return obj is None or type(obj) in (float, int, str, bool)


def test_result_layout_and_types():
    r = evaluate(TOY_GT, TOY_DETS)
    for key in (*COCO_STAT_KEYS, "laece0", "laace0", "lrp", "dece", "brier"):
        assert type(r[key]) is float
    assert plain(r)
    assert set(r["per_class"]) == {"cat", "dog", "bird", "fish"}
    assert set(r["per_class"]["cat"]) >= {
        "AP",
        "laece0",
        "laace0",
        "lrp",
        "threshold",
        "n_dets",
        "n_gt",
    }
    p = r["protocol"]
    assert p["tau"] == 0.0 and p["laece0"]["bins"] == 25 and p["mAP"]["max_dets"] == [1, 10, 100]
    assert (p["dece"]["iou"], p["dece"]["bins"], p["dece"]["score_min"], p["brier"]["iou"]) == (
        0.5,
        10,
        0.3,
        0.5,
    )
    rel = r["reliability"]
    assert len(rel["edges"]) == 26 and len(rel["pooled"]["count"]) == 25
    # pooled = kept detections of the classes with ground truth: cat 4 + dog 2
    assert sum(rel["pooled"]["count"]) == 6 and rel["per_class"]["cat"]["count"][22] == 2
    assert rel["per_class"]["cat"]["mean_target"][22] == pytest.approx(
        0.5
    )  # d1 (IoU 1) and d2 (FP) share it
    assert (
        json.loads(to_json(r))["per_class"]["bird"]["laece0"] is None
    )  # NaN -> null in strict JSON


@pytest.mark.parametrize(
    "value, expected", [("lrp", "lrp"), ("NONE", "none"), ("0.25", 0.25), (1, 1.0)]
)
def test_calib_threshold_choices(value, expected):
    mode = evaluate(TOY_GT, TOY_DETS, calib_threshold=value)["protocol"]["calib_threshold"]
    assert mode["mode"] == (expected if isinstance(expected, str) else "fixed")


@pytest.mark.parametrize("value", ["optimal", "1.5", "-0.1", "nan", None, True])
def test_bad_calib_threshold(value):
    with pytest.raises(InputError, match=r"--calib-threshold.*lrp, none or a number"):
        evaluate(TOY_GT, TOY_DETS, calib_threshold=value)


def test_evaluate_files_matches_evaluate(tmp_path):
    gt, dets = write(tmp_path)
    assert to_json(evaluate_files(gt, dets, "none")) == to_json(evaluate(TOY_GT, TOY_DETS, "none"))


def _bad(**change):
    dets = [dict(d) for d in TOY_DETS]
    dets[3].update(change)
    return dets


@pytest.mark.parametrize(
    "raw, message",
    [
        (json.dumps(TOY_DETS)[:-40], r"dets.json: invalid JSON"),
        (json.dumps({"annotations": TOY_DETS}), r"dets.json: expected a list of detections"),
        (
            json.dumps(_bad(image_id=999)),
            r"dets.json: detection 3 has image_id 999 not in .*gt.json",
        ),
        (
            json.dumps(_bad(category_id=7)),
            r"dets.json: detection 3 has category_id 7 not in .*gt.json",
        ),
        (json.dumps(_bad(score=float("nan"))), r"dets.json: detection 3 has score nan"),
        (json.dumps(_bad(score=-0.1)), r"dets.json: detection 3 has score -0.1 outside \[0, 1\]"),
        (
            json.dumps(_bad(score="0.5")),
            r"dets.json: detection 3 has score '0.5'; expected a finite number",
        ),
        (
            json.dumps(_bad(bbox=[0, 0, 0, 5])),
            r"dets.json: detection 3 has bbox \[0, 0, 0, 5\] with non-pos",
        ),
        (
            json.dumps(_bad(bbox=[0, 0, 5])),
            r"dets.json: detection 3 has bbox \[0, 0, 5\]; expected a list of 4",
        ),
        (
            json.dumps([*TOY_DETS[:3], {"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]),
            r"detection 3 has no 'cat",
        ),
        (json.dumps([*TOY_DETS[:3], 5]), r"dets.json: detection 3 is not an object"),
    ],
)
def test_bad_detections_file(tmp_path, raw, message):
    gt, dets = write(tmp_path, raw_dets=raw)
    with pytest.raises(InputError, match=message) as err:
        evaluate_files(gt, dets)
    assert "\n" not in str(err.value)


def test_bad_ground_truth_and_missing_files(tmp_path):
    gt, dets = write(tmp_path)
    with pytest.raises(InputError, match=r"nope.json: ground-truth file not found"):
        evaluate_files(tmp_path / "nope.json", dets)
    bad_gt = {
        **TOY_GT,
        "annotations": [
            *TOY_GT["annotations"],
            {**TOY_GT["annotations"][0], "id": 9, "image_id": 8},
        ],
    }
    gt, dets = write(tmp_path, gt=bad_gt)
    with pytest.raises(
        InputError, match=r"gt.json: annotation 5 has image_id 8 not in .*gt.json images"
    ):
        evaluate_files(gt, dets)
    gt, dets = write(tmp_path, gt={"images": []})
    with pytest.raises(
        InputError, match=r"gt.json: expected a COCO ground-truth object with a list 'categories'"
    ):
        evaluate_files(gt, dets)


def test_optional_gt_fields_default_like_coco(tmp_path):
    # no 'area' -> box area, no 'iscrowd' -> 0, no 'id' -> position + 1
    bare = {
        **TOY_GT,
        "annotations": [
            {k: a[k] for k in ("image_id", "category_id", "bbox")} for a in TOY_GT["annotations"]
        ],
    }
    full = {**TOY_GT, "annotations": [{**a, "iscrowd": 0} for a in TOY_GT["annotations"]]}
    assert to_json(evaluate(bare, TOY_DETS)) == to_json(evaluate(full, TOY_DETS))


@pytest.mark.parametrize("per_class", [False, True])
def test_plot_reliability_writes_a_png(tmp_path, per_class):
    out = plot_reliability(evaluate(TOY_GT, TOY_DETS), tmp_path / "rel.png", per_class=per_class)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_module_entry_point_prints_json_and_imports_no_torch(tmp_path):
    gt, dets = write(tmp_path)
    heavy = ("torch", "torchvision", "matplotlib", "pycocotools", "typer", "rich", "wandb", "hydra")
    check = (
        "import sys; from focalbench.metrics.evaluate import main; rc = main(sys.argv[1:]); "
        f"bad = [k for k in sys.modules if k.split('.')[0] in {heavy}]; assert not bad, bad; "
        "sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", check, str(gt), str(dets)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    # the command scripts/bench_eval.py times; no runpy warning on stderr
    proc = subprocess.run(
        [sys.executable, "-m", "focalbench.metrics.evaluate", str(gt), str(dets)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and proc.stderr == ""
    assert json.loads(proc.stdout)["per_class"]["cat"]["threshold"] == 0.62
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "focalbench.metrics.evaluate",
            str(gt),
            str(tmp_path / "missing.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
