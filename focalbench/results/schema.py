"""What a leaderboard is made of: the Board, its metrics and its config columns.

Its own module so that the leaderboard (which builds Boards) and the plots (which draw them) both
read it and neither imports the other. Imports nothing of focalbench.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METRICS = ("mAP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "laece0", "laace0", "lrp", "dece",
           "brier", "imgs_per_s", "wall_s")  # fmt: skip
LOWER_IS_BETTER = {"laece0", "laace0", "lrp", "dece", "brier", "wall_s"}

# The config columns runs.csv carries itself (shown when they vary, loss/alpha/gamma always). They
# are a readable summary, not the grouping key: runs are grouped by config_id, the hash of the whole
# science config without the seed.
CONFIG_KEYS = ("model", "backbone", "loss", "alpha", "gamma", "matcher", "normalization", "dataset",
               "train_images", "val_images", "epochs", "image_size")  # fmt: skip

# The flat science keys (RunConfig.science(), dotted) that a CONFIG_KEYS column already shows; any
# other key that differs between groups gets a column of its own ("train.lr", "model.box_head").
# The "gamma" column holds gamma, or QFL's beta (the same role: the focusing exponent).
SHOWN_BY_CSV = frozenset({
    "model.name", "model.backbone", "loss.name", "loss.alpha", "loss.gamma", "loss.beta",
    "matcher.name", "loss.normalization", "data.name", "data.train_images", "data.val_images",
    "train.epochs", "data.image_size",
})  # fmt: skip

# `leaderboard --noise` (results/noise.py): each config against the best one, in the sort metric, by
# the paired bootstrap of `focalbench compare` (best - config). Within noise: its 95% interval
# contains 0. "better" (the interval favours the config over the best) can only happen when the
# CSV's means and the run folders' detections disagree.
NOISE_COLUMNS = ("vs_best", "vs_best_lo", "vs_best_hi", "p_best_wins")
BEST, WITHIN_NOISE, WORSE, BETTER, NOT_COMPARED = "best", "within noise", "worse", "better", "n/a"


@dataclass
class Board:
    """A ranked leaderboard.

    entries: one dict per config (per run with by_seed). Both kinds hold the config keys
      (`config_keys`, str; "" where a config has no such key) and "config_id". Grouped: per metric
      f"{m}_mean", f"{m}_std" (float; NaN when missing or n<2) and f"{m}_n" (int), and "n" (runs).
      by_seed: "seed", "run_id" (str) and one float per metric.
    columns: the columns of to_csv, in order.
    extra_keys: flat science keys outside CONFIG_KEYS that differ between the groups shown, in
      science order (e.g. ["train.lr"]).
    not_ok: latest attempts (after --where) left out by status: {"failed": 1, "diverged": 0, ...}.
    rows: the ok rows behind the entries (to regroup a by_seed board, e.g. for plots), each with its
      "config_id" filled in.
    notes: extra lines for the caption / the markdown notes (e.g. how vs_best was computed).
    flats: {config_id: its flat science keys}, read from the run folders (or a freeze) when the
      board has two or more groups; what `leaderboard --freeze` keeps.
    With noise marks (noise.mark), grouped entries also hold NOISE_COLUMNS: "vs_best" (BEST,
    WITHIN_NOISE, WORSE, BETTER or NOT_COMPARED) and floats (NaN for the best and n/a).
    """

    entries: list[dict[str, Any]]
    columns: list[str]
    sort: str = "mAP"
    by_seed: bool = False
    not_ok: dict[str, int] = field(default_factory=dict)
    rows: list[dict[str, str]] = field(default_factory=list)
    extra_keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    flats: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def config_keys(self) -> list[str]:
        return [*CONFIG_KEYS, *self.extra_keys]
