"""`leaderboard --noise` (results/noise.py): the "vs best" column on hand-made run folders.

Three configs of two seeds each, on one synthetic validation set: two of one detector quality
(gamma 1 and gamma 2; whichever ranks first is the best, the other is within noise of it) and a
much worse one (bce); plus a config scored on another validation set. The folders are built by
hand from synthetic ground truth and detections (tests/metrics/synthetic_runs.py): fast, no torch.
"""

import csv
import io
import json
import math
import shutil
import subprocess
import sys

import pytest

from focalbench.cli import main
from focalbench.errors import InputError
from focalbench.metrics import evaluate
from focalbench.results import compare as cmp
from focalbench.results import noise
from focalbench.results.leaderboard import leaderboard, plot, to_csv, to_markdown
from focalbench.results.schema import NOISE_COLUMNS
from focalbench.results.store import append_row, read_rows
from tests.metrics.synthetic_runs import detections, ground_truth

GOOD = {"jitter": 0.08, "miss": 0.15}
BAD = {"jitter": 0.25, "miss": 0.6}
N_BOOT = 200


def _run(root, rid, cfg, gt_path, gt, quality, rng, seed):
    folder = root / "runs" / rid
    folder.mkdir(parents=True)
    dets = detections(rng, gt, **quality)
    (folder / "detections.json").write_text(json.dumps(dets))
    (folder / "metrics.json").write_text(json.dumps({"run_id": rid, "val_ann": str(gt_path)}))
    scores = evaluate(gt, dets)
    row = {"run_id": rid, "config_id": cfg["config_id"], "status": "ok", "seed": seed}
    row.update(cfg, dataset="synthetic", run_dir=f"results/runs/{rid}")
    row.update({m: scores[m] for m in ("mAP", "AP50", "laece0", "lrp")})
    append_row(root / "runs.csv", row)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """results/ as described in the module docstring (built once; tests that change it copy it)."""
    import numpy as np

    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("noise") / "results"
    gt = ground_truth(rng, 80)
    gt_path = root / "data" / "val.json"
    gt_path.parent.mkdir(parents=True)
    gt_path.write_text(json.dumps(gt))
    configs = [
        ({"config_id": "cfg-g1", "loss": "focal", "gamma": 1}, GOOD),
        ({"config_id": "cfg-g2", "loss": "focal", "gamma": 2}, GOOD),
        ({"config_id": "cfg-bce", "loss": "bce", "gamma": 0}, BAD),
    ]
    for cfg, quality in configs:
        for seed in (0, 1):
            _run(root, f"{cfg['config_id']}-s{seed}", cfg, gt_path, gt, quality, rng, seed)
    other = ground_truth(rng, 80)
    other_path = root / "data" / "other.json"
    other_path.write_text(json.dumps(other))
    cfg = {"config_id": "cfg-other", "loss": "qfl", "gamma": 2}
    _run(root, "cfg-other-s0", cfg, other_path, other, BAD, rng, 0)
    return root


@pytest.fixture
def results(built, tmp_path, monkeypatch):
    """A copy of the built results/ in a fresh working directory."""
    shutil.copytree(built, tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path / "results"


def _marked(root, **kwargs):
    board = leaderboard(read_rows(root / "runs.csv"), **kwargs)
    return noise.mark(board, root / "runs.csv", n_boot=N_BOOT, seed=3)


def _marks(board):
    return {e["config_id"]: e["vs_best"] for e in board.entries}


def test_best_within_noise_worse_and_another_validation_set(results):
    board = _marked(results)
    best, twin = [e["config_id"] for e in board.entries[:2]]
    assert {best, twin} == {"cfg-g1", "cfg-g2"}  # the two of one quality rank first
    assert _marks(board) == {
        best: "best",
        twin: "within noise",
        "cfg-bce": "worse",
        "cfg-other": "n/a",
    }
    entry = {e["config_id"]: e for e in board.entries}
    assert entry[twin]["vs_best_lo"] <= 0.0 <= entry[twin]["vs_best_hi"]
    assert entry["cfg-bce"]["vs_best_lo"] > 0.0 and entry["cfg-bce"]["p_best_wins"] > 0.95
    assert math.isnan(entry[best]["vs_best_lo"]) and math.isnan(entry["cfg-other"]["p_best_wins"])
    assert board.columns[-4:] == list(NOISE_COLUMNS)
    method, why = board.notes
    assert "over the 80 validation images" in method and f"{N_BOOT} resamples, seed 3" in method
    assert "95% interval of best − config contains 0" in method
    assert why == "vs best n/a: 1 config: another validation set than the best's"


@pytest.mark.parametrize("metric", ["mAP", "laece0"])
def test_same_numbers_as_compare(results, metric):
    """Each interval is the one `focalbench compare <best> <config>` gives with the same seed,
    for a higher- and a lower-is-better metric (the best's cached scores change nothing)."""
    board = _marked(results, sort=metric)
    best, *others = board.entries
    selector = {e["config_id"]: f"loss={e['loss']},gamma={e['gamma']}" for e in board.entries}
    for e in others:
        if e["vs_best"] == "n/a":
            continue
        got = cmp.compare(
            selector[best["config_id"]], selector[e["config_id"]], [metric], N_BOOT, 3,
            csv_path=results / "runs.csv",
        ).comparison.metrics[0]  # fmt: skip
        assert (got.lo, got.hi, got.p_a_wins) == (
            e["vs_best_lo"],
            e["vs_best_hi"],
            e["p_best_wins"],
        )
        assert got.lower_is_better == (metric == "laece0")


def _main(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_column_in_table_csv_and_md(results, capsys):
    common = ["leaderboard", "--csv", "results/runs.csv", "--n-boot", str(N_BOOT)]
    code, out, err = _main([*common], capsys)
    assert code == 0, err
    header = next(line for line in out.splitlines() if "vs best" in line)
    assert header.index("mAP") < header.index("vs best")  # right after the sort metric
    assert "≈" in out and "worse" in out and "n/a" in out and "within noise" in out

    code, out, err = _main([*common, "--format", "csv"], capsys)
    assert code == 0, err
    parsed = {r["config_id"]: r for r in csv.DictReader(io.StringIO(out))}
    assert [r["vs_best"] for r in parsed.values()][0] == "best"
    assert parsed["cfg-bce"]["vs_best"] == "worse" and float(parsed["cfg-bce"]["vs_best_lo"]) > 0
    assert parsed["cfg-other"]["vs_best_hi"] == "" and parsed["cfg-other"]["vs_best"] == "n/a"
    assert "within noise" in {r["vs_best"] for r in parsed.values()}
    assert "vs best n/a: 1 config: another validation set" in err  # the notes go to stderr

    code, out, err = _main([*common, "--format", "md", "--metrics", "mAP,laece0"], capsys)
    assert code == 0, err
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()]
    header, *body = [r for r in rows if len(r) > 1]
    assert header[header.index("mAP ↑") + 1] == "vs best"
    marks = [dict(zip(header, r))["vs best"] for r in body[1:]]
    assert marks == ["best", "≈", "worse", "n/a"]
    assert "≈ = within noise: the 95% interval of best − config contains 0" in out


def test_md_is_deterministic_and_no_noise_drops_the_column(results, capsys):
    args = ["leaderboard", "--csv", "results/runs.csv", "--format", "md", "--n-boot", "50"]
    first = _main(args, capsys)
    assert first[0] == 0 and first == _main(args, capsys)
    code, out, _ = _main([*args, "--no-noise"], capsys)
    assert code == 0 and "vs best" not in out and "≈" not in out
    assert out == to_markdown(leaderboard(read_rows(results / "runs.csv")))


def test_run_folders_gone_show_na_and_stay_fast(results):
    shutil.rmtree(results / "runs")
    check = (
        "import sys\nfrom focalbench.cli import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit as e:\n    code = e.code\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'scipy')\n"
        "         or m == 'focalbench.results.compare']\nassert not heavy, heavy\nsys.exit(code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", check, "leaderboard", "--format", "md"],
        capture_output=True,
        text=True,
        cwd=results.parent,
    )
    assert proc.returncode == 0, proc.stderr
    assert "vs best n/a: 3 configs: no run folder with detections.json" in proc.stdout
    cells = [line.split("|") for line in proc.stdout.splitlines() if "| focal" in line]
    assert len(cells) == 2 and any(" best " in c for c in cells[0] + cells[1])


def test_other_n_a_reasons(results):
    # one run of the bce config lost its detections; the other config has no known val set
    (results / "runs" / "cfg-bce-s1" / "detections.json").unlink()
    (results / "runs" / "cfg-other-s0" / "metrics.json").write_text("{}")
    board = _marked(results)
    assert _marks(board)["cfg-bce"] == "n/a" and _marks(board)["cfg-other"] == "n/a"
    assert board.notes[1] == (
        "vs best n/a: 1 config: no run folder with detections.json; "
        "1 config: unknown validation set (no val_ann in metrics.json, no synthetic data in "
        "config.yaml)"
    )
    # the best's own runs unusable: nothing to compare with
    best = board.entries[0]["config_id"]
    (results / "runs" / f"{best}-s0" / "detections.json").unlink()
    board = _marked(results)
    assert list(_marks(board).values()) == ["best", "n/a", "n/a", "n/a"]
    assert board.notes[1].endswith("3 configs: the best config: no run folder with detections.json")


def test_metric_not_resampled_by_seed_and_bad_n_boot(results):
    board = _marked(results, sort="APs")  # no value in the CSV either: still a board
    assert set(_marks(board).values()) == {"best", "n/a"}
    assert "APs is not resampled (the bootstrap scores mAP, AP50" in board.notes[-1]
    by_seed = leaderboard(read_rows(results / "runs.csv"), by_seed=True)
    assert noise.mark(by_seed, results / "runs.csv") is by_seed  # per-run rows: no column
    with pytest.raises(InputError, match="--n-boot: got 0"):
        noise.mark(by_seed, results / "runs.csv", n_boot=0)
    single = _marked(results, where=["loss=bce"])
    assert _marks(single) == {"cfg-bce": "best"} and "vs_best" in to_csv(single)


def test_plot_marks_best_and_within_noise(results, tmp_path):
    paths = plot(_marked(results), tmp_path / "heat.png")
    assert [p.name for p in paths] == ["heat.png", "heat_scatter.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_noise_on_run_folders_imports_no_torch(results):
    check = (
        "import sys\nfrom focalbench.cli import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit as e:\n    code = e.code\n"
        "assert 'torch' not in sys.modules\nsys.exit(code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", check, "leaderboard", "--format", "csv", "--n-boot", "20"],
        capture_output=True,
        text=True,
        cwd=results.parent,
    )
    assert proc.returncode == 0, proc.stderr
    assert "worse" in proc.stdout


def test_freeze_keeps_the_board_once_the_folders_are_gone(results, capsys):
    """`--freeze` keeps the marks beside the CSV: the same command, run after the run folders are
    deleted, prints the same bytes; a board over other runs does not take them."""
    args = ["leaderboard", "--csv", "results/runs.csv", "--format", "md", "--n-boot", "50"]
    code, frozen_md, err = _main([*args, "--freeze"], capsys)
    assert code == 0, err
    assert "| worse |" in frozen_md and "| ≈ |" in frozen_md
    assert (results / "runs.frozen.json").is_file()
    shutil.rmtree(results / "runs")
    assert _main(args, capsys)[:2] == (0, frozen_md)
    # another resampling seed, or one more run, is another board: n/a as without a freeze
    assert "no run folder with detections.json" in _main([*args, "--seed", "1"], capsys)[1]
    rows = read_rows(results / "runs.csv")
    append_row(results / "runs.csv", {**rows[0], "run_id": "cfg-g1-s2", "seed": "2"})
    code, out, _ = _main(args, capsys)
    assert code == 0 and "| worse |" not in out and "no run folder with detections.json" in out


def test_corrupt_freeze_is_a_one_line_error(results, capsys):
    shutil.rmtree(results / "runs")
    (results / "runs.frozen.json").write_text("{not json")
    code, _, err = _main(["leaderboard", "--csv", "results/runs.csv"], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "runs.frozen.json: unreadable" in err
