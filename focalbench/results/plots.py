"""Leaderboard figures: alpha x gamma heatmaps of a metric (a panel per loss), mAP vs LaECE0.

On a board with noise marks (noise.mark), the best config and those within noise of it are marked
in both: a heatmap cell of the sort metric gets "best" or "≈" under its value; in the scatter the
best is ringed by a star, each config within noise by a circle. The marks compare with the best of
the board plotted (with --where loss=focal: the best focal config, not the leaderboard's best),
so each figure names that config and its value.

Drawn from a grouped Board (schema.py); leaderboard.plot regroups a by_seed one. Imported lazily
(by leaderboard.plot), so matplotlib never slows `--help` or the table output.
Figures are drawn on the Agg canvas directly (Figure + FigureCanvasAgg, no pyplot): no global
backend switch, no GUI, safe in worker processes.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Annotation
from matplotlib.transforms import Bbox

from focalbench.errors import InputError
from focalbench.results.schema import (
    BEST,
    CONFIG_KEYS,
    LOWER_IS_BETTER,
    METRICS,
    WITHIN_NOISE,
    Board,
)

_OFF = "off"  # alpha left empty: no alpha-balancing


def _axis_key(label: str) -> tuple[int, float, str]:
    """Numbers ascending, then other labels (per-class alpha lists), then 'off'."""
    if label == _OFF:
        return (2, 0.0, "")
    try:
        return (0, float(label), "")
    except ValueError:
        return (1, 0.0, label)


def plot(board: Board, path: str | Path, metric: str = "mAP") -> list[Path]:
    """Write `path` (heatmaps of `metric`, mean over seeds) and `<stem>_scatter<suffix>`.

    board: grouped (one entry per config, not by_seed). A panel per loss; when other config keys
    vary too (model, backbone, train.lr...), a panel per combination, so a cell never mixes
    configs. One colour scale for all panels, reversed for lower-is-better metrics (bright = good).
    No suffix -> .png. Returns the two paths.
    """
    if board.by_seed:
        raise ValueError("plots.plot takes a grouped board; leaderboard.plot regroups by_seed ones")
    if metric not in METRICS:
        raise InputError(f"plot metric {metric!r} is unknown; choose from: {', '.join(METRICS)}")
    entries = board.entries
    if not entries:
        raise InputError("--plot: no ok runs to plot (check --where and the run statuses)")
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    formats = FigureCanvasAgg(Figure()).get_supported_filetypes()
    if path.suffix[1:].lower() not in formats:
        raise InputError(
            f"--plot {str(path)!r}: unsupported image type; choose from: {', '.join(formats)}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    scatter_path = path.with_name(f"{path.stem}_scatter{path.suffix}")
    # the marks are about the sort metric: a heatmap of another metric goes without them
    marked = metric == board.sort
    _heatmaps(entries, _panel_keys(board), metric, marked).savefig(path, dpi=120)
    _scatter(entries, board.config_keys, board.sort).savefig(scatter_path, dpi=120)
    return [path, scatter_path]


def _panel_keys(board: Board) -> list[str]:
    others = [k for k in board.config_keys if k not in ("loss", "alpha", "gamma")]
    varying = [k for k in others if len({e[k] for e in board.entries}) > 1]
    # configs that no shown key tells apart (see leaderboard._split_config) get panels of their own
    keys = ["loss", *varying]
    if len({tuple(e[k] for k in (*keys, "alpha", "gamma")) for e in board.entries}) < len(
        board.entries
    ):
        keys.append("config_id")
    return keys


_MARK_TEXT = {BEST: "best", WITHIN_NOISE: "≈"}


def _reference(entries: list[dict[str, Any]], keys: list[str], sort: str) -> str:
    """The config the marks compare with (the one marked best), by the `keys` that vary among the
    entries (alpha and gamma always), and its mean in `sort`: 'alpha=0.25 gamma=1 (0.357)'."""
    best = next(e for e in entries if e.get("vs_best") == BEST)
    named = [k for k in keys if k in ("alpha", "gamma") or len({e[k] for e in entries}) > 1]
    name = " ".join(f"{k}={best[k] or _OFF}" for k in named if best[k] or k == "alpha")
    return f"{name} ({best[f'{sort}_mean']:.3f})"


def _heatmaps(entries: list[dict[str, Any]], keys: list[str], metric: str, marked: bool) -> Figure:
    panels: dict[tuple[str, ...], dict[tuple[str, str], float]] = {}
    marks: dict[tuple[tuple[str, ...], str, str], str] = {}  # (panel, gamma, alpha) -> text
    for e in entries:
        panel = tuple(e[k] for k in keys)
        cells = panels.setdefault(panel, {})
        cells[(e["gamma"], e["alpha"] or _OFF)] = e[f"{metric}_mean"]
        if marked and e.get("vs_best") in _MARK_TEXT:
            marks[(panel, e["gamma"], e["alpha"] or _OFF)] = _MARK_TEXT[e["vs_best"]]
    values = [x for cells in panels.values() for x in cells.values() if not math.isnan(x)]
    vmin, vmax = (min(values), max(values)) if values else (0.0, 1.0)
    cmap = "viridis_r" if metric in LOWER_IS_BETTER else "viridis"

    panels = dict(sorted(panels.items()))
    widths = [1.0 + len({a for _, a in cells}) for cells in panels.values()]  # ~ alpha columns
    fig = Figure(figsize=(2.0 + 0.9 * sum(widths), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False, width_ratios=widths)[0]
    image = None
    for ax, (panel, cells) in zip(axes, panels.items()):
        gammas = sorted({g for g, _ in cells}, key=_axis_key)
        alphas = sorted({a for _, a in cells}, key=_axis_key)
        grid = [[cells.get((g, a), math.nan) for a in alphas] for g in gammas]  # [G, A]
        image = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", aspect="auto")
        for gi, row in enumerate(grid):
            for ai, x in enumerate(row):
                if not math.isnan(x):
                    r, g, b, _ = image.cmap(image.norm(x))
                    ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                    tag = marks.get((panel, gammas[gi], alphas[ai]))
                    text = f"{x:.3f}" if tag is None else f"{x:.3f}\n{tag}"
                    ax.text(ai, gi, text, ha="center", va="center", color=ink, fontsize=8)
        ax.set_xticks(range(len(alphas)), alphas)
        ax.set_yticks(range(len(gammas)), gammas)
        ax.set_xlabel("alpha")
        # the engine logs QFL's beta in the gamma column (same role: the focusing exponent)
        ax.set_ylabel("beta" if panel[0] == "qfl" else "gamma")
        ax.set_title(
            " · ".join([panel[0], *(f"{k}={v}" for k, v in zip(keys[1:], panel[1:]))]), fontsize=9
        )
    if image is not None:
        arrow = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        fig.colorbar(image, ax=list(axes), label=f"{metric} ({arrow})", shrink=0.9)
    title = f"{metric}, mean over seeds"
    if _MARK_TEXT[BEST] in marks.values():  # the best plotted, maybe not the leaderboard's
        ref = _reference(entries, [*keys, "alpha", "gamma"], metric)
        note = [f"≈: within noise of {ref},", "the best config plotted (95% paired bootstrap)"]
        # ~15 characters of 9-point text an inch: a narrow figure (one panel) gets two lines
        wide = len(" ".join(note)) <= 15 * fig.get_figwidth()
        title += "\n" + (" " if wide else "\n").join(note)
    fig.suptitle(title, fontsize=9)
    return fig


def _scatter(entries: list[dict[str, Any]], config_keys: list[str], sort: str) -> Figure:
    """One marker per config at (LaECE0, mAP) with error bars of ± the sample std over seeds
    (none with one seed); colour = loss; labels placed so that none overlaps another
    (_place_labels). With noise marks: a star around the best, a circle around each config
    within noise of it (in the sort metric)."""
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    losses = sorted({e["loss"] for e in entries})
    matchers = {e.get("matcher", "") for e in entries}
    extra_keys = [k for k in config_keys if k not in CONFIG_KEYS]  # flat science keys (train.lr)
    labels: list[Annotation] = []
    # an extra key (train.lr=0.01, model.box_head=dfl) is named only where it is not the usual value
    usual = {k: Counter(e[k] for e in entries).most_common(1)[0][0] for k in extra_keys}
    colours = {loss: f"C{i % 10}" for i, loss in enumerate(losses)}
    for loss in losses:
        group = [e for e in entries if e["loss"] == loss]
        xs = [e["laece0_mean"] for e in group]
        ys = [e["mAP_mean"] for e in group]
        xerr = [0.0 if math.isnan(e["laece0_std"]) else e["laece0_std"] for e in group]
        yerr = [0.0 if math.isnan(e["mAP_std"]) else e["mAP_std"] for e in group]
        ax.errorbar(
            xs, ys, xerr=xerr, yerr=yerr, fmt="o", color=colours[loss], label=loss, capsize=2
        )
        if len(entries) <= 30:  # labels stay readable only for small grids
            for e, x, y in zip(group, xs, ys):
                label = ax.annotate(
                    " ".join(
                        [f"a={e['alpha'] or _OFF}"]
                        + ([f"g={e['gamma']}"] if e["gamma"] else [])  # bce has no gamma
                        + ([e["matcher"]] if len(matchers) > 1 else [])  # a DETR matcher sweep
                        + [f"{k}={e[k]}" for k in extra_keys if e[k] and e[k] != usual[k]]
                    ),
                    (x, y),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(4, 4),
                )
                label.set_in_layout(False)  # so the layout stays put while _place_labels moves it
                labels.append(label)
    for mark, marker, size in ((BEST, "*", 320), (WITHIN_NOISE, "o", 160)):
        ring = [e for e in entries if e.get("vs_best") == mark]
        if ring:
            ax.scatter(
                [e["laece0_mean"] for e in ring],
                [e["mAP_mean"] for e in ring],
                facecolors="none",
                edgecolors="black",
                linewidths=1.2,
                zorder=3,
                label=f"best by {sort}" if mark == BEST else "within noise of the best",
                marker=marker,
                s=size,
            )
    ax.set_xlabel("LaECE0 (lower is better), error bar: ± std over seeds")
    ax.set_ylabel("mAP (higher is better), error bar: ± std over seeds")
    title = "mAP vs LaECE0, one marker per config (mean ± sample std over seeds)"
    if any(e.get("vs_best") == BEST for e in entries):
        title += (
            f"\nbest by {sort}: {_reference(entries, config_keys, sort)}; within noise of it: "
            f"\nthe 95% paired bootstrap interval of best − config in {sort} holds 0"
        )
    ax.set_title(title, fontsize=8)
    ax.legend(title="loss", fontsize=8, markerscale=0.6, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3)
    _place_labels(fig, ax, labels)
    return fig


# Where a label may go around its point: (offset in points, ha, va), nearest first; each ring
# tries the four corners, then above, below, right and left.
_SPOTS = [
    spot
    for r in (4, 11, 18)
    for spot in (
        ((r, r), "left", "bottom"), ((r, -r), "left", "top"), ((-r, r), "right", "bottom"),
        ((-r, -r), "right", "top"), ((0, r + 2), "center", "bottom"),
        ((0, -r - 2), "center", "top"), ((r + 2, 0), "left", "center"),
        ((-r - 2, 0), "right", "center"),
    )
]  # fmt: skip


def _place_labels(fig: Figure, ax: Axes, labels: list[Annotation]) -> None:
    """Greedy, in drawing order: each label takes the first of _SPOTS where its box overlaps no
    label placed before it, no marker and stays inside the axes; where no spot is free, the one
    with the least overlap with the labels (then with the rest). In display coordinates, after
    one draw has settled the layout (the labels are out of it, so it does not move again)."""
    if not labels:
        return
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    r = 3 * fig.dpi / 72  # a marker's radius: 6 points across
    points = ax.transData.transform([label.xy for label in labels])
    markers = [Bbox.from_extents(x - r, y - r, x + r, y + r) for x, y in points]
    placed: list[Bbox] = []
    for label in labels:
        scores = []
        for offset, ha, va in _SPOTS:
            label.set(ha=ha, va=va)
            label.xyann = offset
            box = label.get_window_extent(renderer).padded(1)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            outside = 0.0 if inside else box.width * box.height - _area(box, frame)
            rest = sum(_area(box, m) for m in markers) + outside
            scores.append((sum(_area(box, b) for b in placed), rest))
            if scores[-1] == (0.0, 0.0):
                break
        offset, ha, va = _SPOTS[scores.index(min(scores))]
        label.set(ha=ha, va=va)
        label.xyann = offset
        placed.append(label.get_window_extent(renderer).padded(1))


def _area(a: Bbox, b: Bbox) -> float:
    """The area two boxes share."""
    w, h = min(a.x1, b.x1) - max(a.x0, b.x0), min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)
