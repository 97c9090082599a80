"""A run's science config read back from its folder: its config_id and its flat keys.

runs.csv carries only a summary of each config (model, loss, alpha, gamma...); the run folder's
config.yaml has all of it. The leaderboard reads it for the keys that tell its groups apart
(train.lr, model.box_head...), and for the config_id of rows logged before that column existed;
`--rebuild` for row.json files that lack it. Torch-free: only yaml and focalbench.config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from focalbench.config import RunConfig, from_container
from focalbench.errors import InputError

# the parts of config.yaml that decide the numbers (paths, logger and run_id left out)
_SCIENCE_SECTIONS = ("model", "loss", "matcher", "data", "train", "seed")
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is ~10x faster


def load(run_dir: str | Path) -> RunConfig | None:
    """The RunConfig of a run folder's config.yaml, composed by focalbench.config as a new run's
    would be (so its ids are today's). None when the folder or file is gone or unreadable, or its
    content is not a config this version accepts."""
    if not run_dir:
        return None
    try:
        data = yaml.load((Path(run_dir) / "config.yaml").read_text(), Loader=_Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        return from_container({k: data[k] for k in _SCIENCE_SECTIONS if k in data})
    except (InputError, TypeError, ValueError, KeyError, AttributeError):
        # a folder written by another version: one unreadable config must not stop the board
        return None


def config_id_of(run_dir: str | Path) -> str:
    """RunConfig.config_id of the run folder's config.yaml; "" when it cannot be read."""
    cfg = load(run_dir)
    return cfg.config_id if cfg is not None else ""


def flat_science(cfg: RunConfig) -> dict[str, str]:
    """science() without the seed, as dotted keys and text: {"model.name": "retinanet",
    "train.lr": "0.001", ...}, in science order. Numbers as in runs.csv (6 significant digits),
    lists space-separated, None as ""."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = _text(value)

    walk("", {k: v for k, v in cfg.science().items() if k != "seed"})
    return flat


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return " ".join(_text(v) for v in value)
    return str(value)
