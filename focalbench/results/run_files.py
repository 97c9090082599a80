"""Where a CSV row's run folder is, and which validation set the run was scored on.

`focalbench compare` and the leaderboard's "vs best" column both pair runs by validation image, so
both find folders and ground truths here, the same way. Only the standard library and PyYAML at
import time: a leaderboard over a bare CSV stays fast.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from focalbench.errors import InputError

# engine/datasets.VAL_SEED_OFFSET, repeated so this module needs no torch (a test keeps them equal)
SYNTH_VAL_SEED_OFFSET = 10_000


def folder_candidates(row: dict[str, str], csv_path: Path) -> list[Path]:
    """The places a row's run folder may be: as written (relative to where training ran), under
    the folder holding the CSV's results folder, or under the CSV's results folder itself."""
    given = Path(row.get("run_dir", ""))
    candidates = [given, csv_path.parent.parent / given]
    if len(given.parts) > 1:
        candidates.append(csv_path.parent.joinpath(*given.parts[1:]))
    return candidates


def has_folder(row: dict[str, str], csv_path: Path) -> bool:
    """Whether the row's run folder may exist (a folder without detections.json counts)."""
    return bool(row.get("run_dir")) and any(c.is_dir() for c in folder_candidates(row, csv_path))


def folder_of(row: dict[str, str], csv_path: Path) -> Path:
    """The row's run folder: the first candidate holding detections.json, else run_dir as given."""
    candidates = folder_candidates(row, csv_path)
    return next((c for c in candidates if (c / "detections.json").is_file()), candidates[0])


def recorded(folder: Path, key: str) -> Any:
    """metrics.json[key] of a run folder; None without the file or the key."""
    from focalbench.metrics.evaluate import load_json

    metrics = folder / "metrics.json"
    if not metrics.is_file():
        return None
    data = load_json(metrics, "metrics")
    return data.get(key) if isinstance(data, dict) else None


def val_ann_of(folder: Path) -> Path:
    """The validation ground truth a run was scored on: metrics.json's `val_ann`, or for runs
    recorded before that field, the embedded dataset's cache path rebuilt from config.yaml."""
    given = recorded(folder, "val_ann")
    if given:
        return Path(given)
    import yaml  # PyYAML comes with hydra

    path = None
    try:
        data = yaml.safe_load((folder / "config.yaml").read_text())["data"]
        if data["name"] == "synthetic":
            # the run folder is <results>/runs/<id> or <results>/sweeps/<sweep>/<job>
            root = folder.parent.parent if folder.parent.name == "runs" else folder.parents[2]
            seed = int(data.get("synth_seed", 0)) + SYNTH_VAL_SEED_OFFSET
            difficulty = data.get("difficulty", "hard")  # runs before the presets: hard
            preset = "" if difficulty == "hard" else f"{difficulty}-"
            size = data["image_size"]
            name = f"synthetic-{preset}val-n{data['val_images']}-s{size}-seed{seed}"
            path = root / "data" / name / "annotations.json"
    except (OSError, KeyError, TypeError, IndexError, ValueError, yaml.YAMLError):
        pass  # not a config this can read: the error below
    if path is None:
        raise InputError(
            f"{folder}: metrics.json names no val_ann and config.yaml no synthetic data; "
            "cannot tell which validation set the run was scored on"
        )
    return path


def fingerprint(gt: Any) -> tuple[tuple[Any, ...], str]:
    """(sorted image ids, a hash of the annotations in any order) of a COCO ground truth: two files
    with the same fingerprint are one validation set (a copy, or a re-serialization)."""
    ids = tuple(sorted(im.get("id") for im in gt.get("images", [])))
    anns = sorted(json.dumps(a, sort_keys=True) for a in gt.get("annotations", []))
    return ids, hashlib.sha1("\n".join(anns).encode()).hexdigest()
