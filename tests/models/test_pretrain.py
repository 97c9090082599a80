"""`focalbench pretrain` (focalbench/pretrain.py) on a tiny recipe (seconds): identical bytes for
the same seed, cache reuse, train-stream images only, and a result that model.weights=synthetic
loads."""

import torch

from focalbench.cli import main
from focalbench.models import pretrain as pt
from focalbench.models.pretrained import synthetic_backbone_state, synthetic_cache_path

# a few steps on tiny crops: what is checked is the machinery, not the accuracy
TINY = pt.Recipe(
    images=6, val_images=2, image_size=64, crop_size=32, epochs=1, batch_size=8, threads=1
)


def test_same_seed_same_bytes_and_the_cache_is_reused(tmp_path):
    a = pt.pretrain(tmp_path / "a", seed=1, recipe=TINY, progress=False)
    b = pt.pretrain(tmp_path / "b", seed=1, recipe=TINY, progress=False)
    c = pt.pretrain(tmp_path / "c", seed=2, recipe=TINY, progress=False)
    assert not a.reused and a.path.name == f"synthetic-resnet18-seed1-{TINY.tag()}.pt"
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.path.read_bytes() != c.path.read_bytes()

    before = a.path.stat().st_mtime_ns
    again = pt.pretrain(tmp_path / "a", seed=1, recipe=TINY, progress=False)
    assert again.reused and again.path == a.path and a.path.stat().st_mtime_ns == before
    assert again.val_accuracy == a.val_accuracy
    state = synthetic_backbone_state("resnet18", tmp_path / "a", seed=1, tag=TINY.tag())
    assert "conv1.weight" in state and not any(k.startswith("fc.") for k in state)
    assert not list((tmp_path / "a" / "pretrained").glob(".*tmp*"))  # atomic: no leftovers


def test_the_callers_rng_and_threads_are_left_alone(tmp_path):
    torch.manual_seed(5)
    expected = torch.rand(3)
    threads = torch.get_num_threads()
    torch.manual_seed(5)
    pt.pretrain(tmp_path, seed=0, recipe=TINY, progress=False)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()


def test_crops_come_from_the_train_stream_only(monkeypatch):
    seeds = []
    real_draw = pt.draw

    def spy(seed, index, *args):
        seeds.append((seed, index))
        return real_draw(seed, index, *args)

    monkeypatch.setattr(pt, "draw", spy)
    x, y = pt.make_crops(TINY, 0, 4, seed=0)
    assert seeds == [(pt.DATA_SEED, i) for i in range(4)]
    assert pt.DATA_SEED < 10_000  # validation sets are drawn from synth_seed + 10000
    assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32) and len(x) == len(y)
    assert set(y.tolist()) <= set(range(pt.BACKGROUND + 1)) and pt.BACKGROUND in y


def test_default_recipe_name_has_no_tag():
    assert pt.Recipe().tag() == "" and len(TINY.tag()) == 8


def test_cli_reports_a_cached_backbone(tmp_path, capsys):
    """The command itself, without minutes of training: a file is already at the default name."""
    tiny = pt.pretrain(tmp_path, recipe=TINY, progress=False)
    tiny.path.rename(synthetic_cache_path(tmp_path, "resnet18", 0))
    try:
        main(["pretrain", "--results-dir", str(tmp_path)])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    assert "cached" in out and "synthetic-resnet18-seed0.pt" in out
