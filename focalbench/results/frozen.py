"""What a leaderboard read from the run folders, kept next to its CSV (`leaderboard --freeze`).

The leaderboard reads two things from run folders that runs.csv does not hold: the config keys
that tell groups apart (config.yaml: "train.lr", "model.box_head") and the "vs best" marks (the
paired bootstrap over detections.json). A CSV shared or committed without its folders (tens of
MB) would lose both. `--freeze` writes them to <csv stem>.frozen.json beside the CSV; when the
folders are gone, the leaderboard reads them from there, so the same command prints the same
board from the CSV alone (results/reference/ is made this way).

Marks are kept per board: the key is a hash of the sort metric, the resampling settings and every
config's run ids, so a board over other runs (a new row, another --where) is computed afresh and
never takes stale marks. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from focalbench.errors import InputError
from focalbench.utils import atomic_write_text

SUFFIX = ".frozen.json"
VERSION = 1


def path_of(csv_path: str | Path) -> Path:
    """results/runs.csv -> results/runs.frozen.json"""
    return Path(csv_path).with_suffix(SUFFIX)


def empty() -> dict[str, Any]:
    return {"version": VERSION, "configs": {}, "boards": {}}


def load(csv_path: str | Path) -> dict[str, Any]:
    """{"configs": {config_id: flat keys}, "boards": {key: marks}}; empty when there is no file."""
    path = path_of(csv_path)
    if not path.is_file():
        return empty()
    try:
        data = json.loads(path.read_text())
        if data.get("version") != VERSION or not isinstance(data.get("boards"), dict):
            raise ValueError("not a leaderboard freeze")
        data.setdefault("configs", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(
            f"{path}: unreadable ({exc}); delete it, or rewrite it from the run folders with "
            "`focalbench leaderboard --freeze`"
        ) from None
    return data


def save(csv_path: str | Path, data: dict[str, Any]) -> None:
    """Write the freeze atomically; sorted keys and fixed indentation, so the same board gives the
    same bytes."""
    text = json.dumps({**data, "version": VERSION}, indent=1, sort_keys=True, allow_nan=False)
    atomic_write_text(path_of(csv_path), text + "\n")


def board_key(metric: str, n_boot: int, seed: int, groups: list[tuple[str, list[str]]]) -> str:
    """The key of one board's marks: groups = [(config_id, its run ids)], the best first."""
    ident = [metric, n_boot, seed, [[cid, sorted(runs)] for cid, runs in groups]]
    return hashlib.sha1(json.dumps(ident).encode()).hexdigest()[:16]


def encode_float(x: float) -> float | None:
    return None if math.isnan(x) else x


def decode_float(x: float | None) -> float:
    return math.nan if x is None else float(x)
