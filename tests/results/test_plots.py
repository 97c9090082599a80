"""The leaderboard's figures (results/plots.py): scatter labels that never overlap, and the marks'
reference config named in both figures."""

from itertools import combinations

import pytest

from focalbench.results import plots
from focalbench.results.leaderboard import leaderboard
from focalbench.results.schema import BEST, WITHIN_NOISE, WORSE
from focalbench.results.store import CSV_COLUMNS


def _board(points):
    """A board of one config per (loss, alpha, gamma, mAP, laece0), two seeds each (± 0.001)."""
    rows = []
    for i, (loss, alpha, gamma, m, e) in enumerate(points):
        for seed, d in enumerate((-0.001, 0.001)):
            row = {"run_id": f"r{i}-{seed}", "config_id": f"c{i}", "status": "ok", "seed": seed}
            config = {"loss": loss, "alpha": alpha, "gamma": gamma}
            metrics = {"mAP": m + d, "laece0": e + d}
            rows.append({**dict.fromkeys(CSV_COLUMNS, ""), **row, **config, **metrics})
    rows = [{k: str(v) for k, v in r.items()} for r in rows]  # as read from runs.csv
    return leaderboard(rows)


# six configs within 0.002 of one another in both metrics, with the study's label lengths,
# beside two far away that set the axes' range: the six markers nearly coincide
CROWD = [
    ("focal", "0.25", "2", 0.340, 0.150), ("qfl", "", "2", 0.341, 0.151),
    ("focal", "0.25", "1", 0.339, 0.151), ("focal", "0.5", "2", 0.340, 0.149),
    ("vfl", "0.75", "2", 0.342, 0.150), ("focal", "0.75", "0.5", 0.341, 0.149),
    ("bce", "", "", 0.250, 0.300), ("focal", "0.25", "5", 0.400, 0.100),
]  # fmt: skip


def _marked(board, within=()):
    """Noise marks as noise.mark leaves them: the first entry best, `within` ≈, the rest worse."""
    marks = [BEST, *(WITHIN_NOISE if i in within else WORSE for i in range(1, len(board.entries)))]
    return [{**e, "vs_best": m} for e, m in zip(board.entries, marks)]


def test_scatter_labels_never_overlap():
    board = _board(CROWD)
    fig = plots._scatter(_marked(board), board.config_keys, board.sort)
    fig.canvas.draw()
    (ax,) = fig.axes
    labels = ax.texts
    assert len(labels) == len(CROWD)
    renderer = fig.canvas.get_renderer()
    crowd = [t.xy for t in labels if 0.33 < t.xy[1] < 0.35]  # (laece0, mAP)
    points = ax.transData.transform(crowd)
    assert len(crowd) == 6
    assert max(abs(a - b).max() for a, b in combinations(points, 2)) < 10  # px: a crowd indeed
    boxes = [t.get_window_extent(renderer) for t in labels]
    for (i, a), (j, b) in combinations(enumerate(boxes), 2):
        assert not a.overlaps(b), (labels[i].get_text(), labels[j].get_text())
    frame = ax.get_window_extent(renderer)
    assert all(frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1) for b in boxes)


def test_marks_name_the_config_they_compare_with():
    """Plotted alone (--where loss=focal), the focal configs are compared with the best focal one,
    not the board's best: both figures say which, with its value."""
    board = _board([(loss, a, g, m, e) for loss, a, g, m, e in CROWD if loss == "focal"])
    entries = _marked(board, within={1, 2})
    heat = plots._heatmaps(entries, plots._panel_keys(board), "mAP", marked=True)
    assert "≈: within noise of alpha=0.25 gamma=5 (0.400)," in heat.get_suptitle()
    assert "the best config plotted" in heat.get_suptitle()
    scatter = plots._scatter(entries, board.config_keys, board.sort)
    title = scatter.axes[0].get_title()
    assert "best by mAP: alpha=0.25 gamma=5 (0.400); within noise of it" in title
    unmarked = plots._heatmaps(entries, plots._panel_keys(board), "laece0", marked=False)
    assert "within noise" not in unmarked.get_suptitle()


@pytest.mark.parametrize("loss", ["qfl", "bce"])
def test_reference_names_a_loss_when_losses_vary(loss):
    board = _board([(loss, "", "2" if loss == "qfl" else "", 0.4, 0.1), *CROWD[:2]])
    name = plots._reference(_marked(board), board.config_keys, "mAP")
    assert name == (f"loss={loss} alpha=off" + (" gamma=2" if loss == "qfl" else "") + " (0.400)")


def test_a_large_grid_has_no_labels_to_place():
    board = _board([("focal", "0.25", str(g), 0.3 + g / 1000, 0.2) for g in range(31)])
    fig = plots._scatter(_marked(board), board.config_keys, board.sort)
    assert len(fig.axes[0].texts) == 0
