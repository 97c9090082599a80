"""`focalbench compare`: run ids, run folders and selectors; the table and --json; one-line errors
with exit code 2; no torch. Run folders are made by hand from synthetic ground truth and
detections (fast); one slow test compares two real tiny runs."""

import json
import subprocess
import sys

import numpy as np
import pytest

from focalbench.cli import main
from focalbench.metrics import evaluate
from focalbench.results import compare as cmp
from focalbench.results.run_files import val_ann_of
from focalbench.results.store import append_row
from tests.conftest import TINY
from tests.metrics.synthetic_runs import detections, ground_truth


def _folder(results, run_id, gt_path, dets, val_ann=True):
    folder = results / "runs" / run_id
    folder.mkdir(parents=True)
    (folder / "detections.json").write_text(json.dumps(dets))
    metrics = {"run_id": run_id, **({"val_ann": str(gt_path)} if val_ann else {})}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.fixture
def results(tmp_path, monkeypatch):
    """results/ with a validation set, focal (seeds 0, 1) and bce (seeds 0, 1) runs in runs.csv,
    and a run on another validation set. focal is the better detector."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    rng = np.random.default_rng(0)
    root = tmp_path / "results"
    gt = ground_truth(rng, 60)
    gt_path = root / "data" / "val.json"
    gt_path.parent.mkdir(parents=True)
    gt_path.write_text(json.dumps(gt))
    for loss, gamma, quality in (("focal", 2, {"jitter": 0.08, "miss": 0.15}), ("bce", 0, {})):
        for seed in (0, 1):
            rid = f"{loss}{seed}"
            _folder(root, rid, gt_path, detections(rng, gt, **quality))
            row = {"run_id": rid, "config_id": f"cfg-{loss}", "status": "ok", "loss": loss}
            row.update(gamma=gamma, dataset="synthetic", seed=seed, run_dir=f"results/runs/{rid}")
            append_row(root / "runs.csv", row)
    other = ground_truth(rng, 60)
    (root / "data" / "other.json").write_text(json.dumps(other))
    _folder(root, "elsewhere", root / "data" / "other.json", detections(rng, other))
    broken = {"run_id": "broken", "config_id": "cfg-x", "status": "failed", "loss": "qfl"}
    append_row(root / "runs.csv", {**broken, "run_dir": "results/runs/broken"})
    return root


def _main(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_run_folders_give_the_paired_numbers(results):
    r = cmp.compare(str(results / "runs" / "focal0"), "bce0", ["mAP", "laece0", "dece"], 200, 3)
    c = r.comparison
    assert (c.n_seeds_a, c.n_seeds_b, c.two_level, c.n_boot, c.n_images) == (1, 1, False, 200, 60)
    gt = json.loads((results / "data" / "val.json").read_text())
    for side, rid in (("a", "focal0"), ("b", "bce0")):
        plain = evaluate(gt, json.loads((results / "runs" / rid / "detections.json").read_text()))
        for d in c.metrics:
            assert getattr(d, side) == pytest.approx(plain[d.metric], abs=1e-12)
    m = {d.metric: d for d in c.metrics}
    assert m["mAP"].diff > 0 and m["mAP"].lo > 0 and m["mAP"].p_a_wins > 0.95  # focal wins
    assert m["laece0"].lower_is_better and m["dece"].lower_is_better
    assert not m["mAP"].lower_is_better
    assert r.gt == results / "data" / "val.json" and r.runs_b[0].run_id == "bce0"


def test_selectors_take_all_seeds_two_level_paired(results, capsys):
    code, out, err = _main(
        [
            "compare",
            "loss=focal",
            "loss.name=bce,gamma=0",
            "--json",
            "--n-boot",
            "100",
            "--metric",
            "map",
        ],
        capsys,
    )
    assert code == 0, err
    got = json.loads(out)
    assert got["A"]["run_ids"] == ["focal0", "focal1"] and got["B"]["seeds"] == [0, 1]
    assert got["two_level"] and got["seeds_paired"] and "two-level" in got["method"]
    (m,) = got["metrics"]
    assert m["metric"] == "mAP" and m["lo"] <= m["diff"] <= m["hi"] and m["n_valid"] == 100
    # the table: one row per metric with A, B, A - B, the interval, P(A wins), seeds per side
    code, out, _ = _main(["compare", "loss=focal", "loss=bce", "--n-boot", "50"], capsys)
    assert code == 0
    for needle in ("mAP ↑", "laece0 ↓", "95% CI", "P(A wins)", "2/2", "two-level"):
        assert needle in out, needle


def test_a_run_against_itself_is_exactly_zero(results, capsys):
    metrics = ["--metric", "mAP", "--metric", "laece0", "--metric", "lrp"]
    code, out, _ = _main(
        ["compare", "focal1", "focal1", "--json", "--n-boot", "64", *metrics], capsys
    )
    assert code == 0
    for m in json.loads(out)["metrics"]:
        assert (m["diff"], m["lo"], m["hi"], m["p_a_wins"]) == (0.0, 0.0, 0.0, 0.5), m
    code, out, _ = _main(
        ["compare", "loss=focal", "loss=focal", "--json", "--n-boot", "32"], capsys
    )
    assert code == 0 and all(m["hi"] == m["lo"] == 0.0 for m in json.loads(out)["metrics"])


def test_same_seed_same_numbers(results):
    first = cmp.compare("focal0", "bce1", None, 80, 11).comparison
    assert first == cmp.compare("focal0", "bce1", None, 80, 11).comparison
    assert first != cmp.compare("focal0", "bce1", None, 80, 12).comparison


def test_val_set_from_config_yaml_for_older_synthetic_folders(results):
    # a folder from before metrics.json recorded val_ann: the synthetic cache path from config.yaml
    gt_path = results / "data" / "synthetic-val-n60-s64-seed10003" / "annotations.json"
    gt_path.parent.mkdir()
    gt_path.write_text((results / "data" / "val.json").read_text())
    dets = json.loads((results / "runs" / "focal0" / "detections.json").read_text())
    folder = _folder(results, "old", gt_path, dets, val_ann=False)
    (folder / "config.yaml").write_text(
        "seed: 4\ndata:\n  name: synthetic\n  val_images: 60\n  image_size: 64\n  synth_seed: 3\n"
    )
    assert val_ann_of(folder) == gt_path
    r = cmp.compare(str(folder), "focal0", ["mAP"], 20, 0)
    assert r.runs_a[0].seed == 4 and r.comparison.metrics[0].hi == 0.0  # same detections


CASES = {
    "unknown_run": (["nope", "bce0"], "A 'nope': not a run folder, a key=value selector or a run"),
    "failed_run": (["focal0", "broken"], "B 'broken': its latest attempt is failed"),
    "selector_no_match": (["loss=varifocal", "bce0"], "A selector 'loss=varifocal' matches no ok"),
    "selector_two_configs": (["dataset=synthetic", "bce0"], "matches 2 configs; add keys"),
    "selector_bad_key": (["colour=red", "bce0"], "A selector 'colour=red': --where key 'colour'"),
    "different_val_sets": (["focal0", "results/runs/elsewhere"], "different validation sets"),
    "unknown_metric": (
        ["focal0", "bce0", "--metric", "f1"],
        "--metric 'f1' is unknown; choose from: mAP, AP50, AP75, AR100, laece0",
    ),
    "n_boot_zero": (["focal0", "bce0", "--n-boot", "0"], "--n-boot"),
    "missing_csv": (["focal0", "bce0", "--csv", "no.csv"], "no.csv: no such results file"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_nothing_written(case, results, capsys):
    args, needle = CASES[case]
    before = sorted(p.relative_to(results.parent) for p in results.parent.rglob("*"))
    code, out, err = _main(["compare", *args], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0] and out == "", err
    assert sorted(p.relative_to(results.parent) for p in results.parent.rglob("*")) == before


def test_compare_imports_no_torch(results):
    check = (
        "import sys\nfrom focalbench.cli import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit as e:\n    code = e.code\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'hydra')]\n"
        "assert not bad, bad\nsys.exit(code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", check, "compare", "focal0", "bce0", "--n-boot", "20", "--json"],
        capture_output=True,
        text=True,
        cwd=results.parent,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["A"]["run_ids"] == ["focal0"]


@pytest.mark.slow
def test_two_real_tiny_runs(tmp_path, monkeypatch, capsys):
    """What the engine writes is enough: compare finds both runs' detections and validation set."""
    from focalbench.config import compose
    from focalbench.engine.datasets import VAL_SEED_OFFSET
    from focalbench.engine.run import run
    from focalbench.results.run_files import SYNTH_VAL_SEED_OFFSET

    assert SYNTH_VAL_SEED_OFFSET == VAL_SEED_OFFSET
    monkeypatch.chdir(tmp_path)
    ids = [run(compose([*TINY, "train.epochs=1", *extra])).run_id for extra in ([], ["loss=bce"])]
    code, out, err = _main(["compare", *ids, "--json", "--n-boot", "50"], capsys)
    assert code == 0, err
    got = json.loads(out)
    assert got["n_images"] == 2 and got["A"]["run_ids"] == ids[:1]
    assert {m["metric"] for m in got["metrics"]} == {"mAP", "laece0"}


def test_help(capsys):
    code, out, _ = _main(["compare", "--help"], capsys)
    assert code == 0 and "Usage" in out and "--n-boot" in out and "selector" in out


def test_a_folder_without_a_known_val_set_is_bad_input(results, capsys):
    folder = _folder(results, "coco_run", results / "data" / "val.json", [], val_ann=False)
    (folder / "config.yaml").write_text("data:\n  name: coco\n  ann: a.json\n")
    code, _, err = _main(["compare", str(folder), "focal0"], capsys)
    assert code == 2 and "metrics.json names no val_ann and config.yaml no synthetic" in err
