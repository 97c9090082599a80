"""The one entry point: mAP and calibration of any COCO results file (`focalbench evaluate`).

    python -m focalbench.metrics.evaluate GT.json DETS.json [--calib-threshold lrp|none|FLOAT]

prints the result as strict JSON (NaN as null). Only numpy (and orjson when installed) is imported
on this path, never torch, so the command starts in ~0.1 s.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from focalbench.errors import InputError

from . import calibration, coco
from .calibration import Calibration
from .match import DetectionSet, candidates

try:  # optional: parses COCO results ~2.5x faster than the json module
    import orjson
except ImportError:  # pragma: no cover
    orjson = None  # type: ignore[assignment]

_REQUIRED = object()


def parse_calib_threshold(value: str | float) -> str | float:
    """'lrp' | 'none' | a number in [0, 1] (or its string); anything else is an InputError."""
    if isinstance(value, str) and value.strip().lower() in ("lrp", "none"):
        return value.strip().lower()
    try:
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 <= number <= 1.0:
        raise InputError(
            f"--calib-threshold: got {value!r}; choose lrp, none or a number in [0, 1]"
        )
    return number


@contextmanager
def _no_gc() -> Iterator[None]:
    # Parsing creates ~10^6 small objects; the cyclic GC would rescan them over and over (2-3x).
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_json(path: str | Path, what: str) -> Any:
    """Parsed JSON of a file; InputError (one line naming the file) if missing, unreadable or
    invalid. `what` names the file's role in the message ("ground-truth", "detections")."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: {what} file not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read {what} file ({e.strerror or e})") from None
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the json module also reads NaN (then reported by field) and words the error
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise InputError(
            f"{path}: invalid JSON ({e.msg}, line {e.lineno} column {e.colno})"
        ) from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: invalid JSON (not UTF-8 text)") from None


# ------------------------------------------------------------------ validation: one line per error
def _items(obj: Any, key: str, src: str, required: bool = True) -> list[Any]:
    value = obj.get(key) if isinstance(obj, dict) else None
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise InputError(f"{src}: expected a COCO ground-truth object with a list {key!r}")
    return value


def _column(items: list[Any], key: str, what: str, default: Any = _REQUIRED) -> list[Any]:
    """items[i][key] for every i; names the first item that is no object or lacks the key."""
    try:
        if default is _REQUIRED:
            return [item[key] for item in items]
        return [item.get(key, default) for item in items]
    except (KeyError, TypeError, AttributeError):
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise InputError(f"{what} {i} is not an object") from None
            if key not in item:
                raise InputError(f"{what} {i} has no {key!r}") from None
        raise


def _numbers(values: list[Any], key: str, what: str, width: int = 0) -> np.ndarray:
    """float64 array of finite numbers (or of lists of `width` of them); names the first bad one."""
    shape = (len(values), width) if width else (len(values),)
    try:
        arr = np.array(values) if values else np.zeros(shape)
        if arr.shape == shape and arr.dtype.kind in "iuf" and np.isfinite(arr).all():
            return arr.astype(np.float64)
    except (ValueError, TypeError, OverflowError):
        pass  # ragged or mixed: find the culprit below
    for i, v in enumerate(values):
        parts = [v] if not width else v if isinstance(v, list) and len(v) == width else ["bad"]
        if not all(
            isinstance(x, (int, float)) and type(x) is not bool and math.isfinite(x) for x in parts
        ):
            expected = f"a list of {width} finite numbers" if width else "a finite number"
            raise InputError(f"{what} {i} has {key} {v!r}; expected {expected}")
    raise AssertionError(f"{what}: no bad {key} found")  # pragma: no cover


def _ids(items: list[Any], key: str, what: str) -> np.ndarray:
    values = _column(items, key, what)
    arr = _numbers(values, key, what)
    bad = np.flatnonzero(arr != np.round(arr))
    if len(bad):
        raise InputError(f"{what} {bad[0]} has {key} {values[bad[0]]!r}; expected an integer")
    return arr.astype(np.int64)


def _unique(ids: np.ndarray, what: str) -> np.ndarray:
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise InputError(f"{what} id {uniq[counts > 1][0]} appears more than once")
    return uniq


def _index(ids: np.ndarray, known: np.ndarray, key: str, what: str, where: str) -> np.ndarray:
    """Position of each id in the sorted `known`; InputError for the first unknown one."""
    pos = np.minimum(np.searchsorted(known, ids), max(len(known) - 1, 0))
    bad = np.flatnonzero(known[pos] != ids) if len(known) else np.arange(len(ids))
    if len(bad):
        raise InputError(f"{what} {bad[0]} has {key} {ids[bad[0]]} not in {where}")
    return pos


def _ground_truth(gt: Any, src: str) -> dict[str, Any]:
    images, cats = _items(gt, "images", src), _items(gt, "categories", src)
    anns = _items(gt, "annotations", src, required=False)
    img_ids = _unique(_ids(images, "id", f"{src}: image"), f"{src}: image")
    cat_ids = _ids(cats, "id", f"{src}: category")
    names = {int(i): str(c.get("name", i)) for i, c in zip(cat_ids, cats)}
    cat_ids = _unique(cat_ids, f"{src}: category")

    what = f"{src}: annotation"
    box = _numbers(_column(anns, "bbox", what), "bbox", what, width=4).reshape(-1, 4)
    bad = np.flatnonzero((box[:, 2] < 0) | (box[:, 3] < 0))
    if len(bad):
        raise InputError(f"{what} {bad[0]} has bbox {anns[bad[0]]['bbox']} with negative size")
    # COCO files always have 'area', 'iscrowd' and 'id'; other generators may not
    given = _column(anns, "area", what, default=None)
    missing = [i for i, a in enumerate(given) if a is None]
    area = _numbers([0 if a is None else a for a in given], "area", what)
    area[missing] = box[missing, 2] * box[missing, 3]
    crowd = [int(c) if type(c) is bool else c for c in _column(anns, "iscrowd", what, default=0)]
    ids = _column(anns, "id", what, default=None)
    gt_id = np.array([i + 1 if j is None else j for i, j in enumerate(ids)], np.int64)
    _unique(gt_id, what)
    return {
        "img_ids": img_ids,
        "cat_ids": cat_ids,
        "cat_names": tuple(names[int(i)] for i in cat_ids),
        "gt_img": _index(_ids(anns, "image_id", what), img_ids, "image_id", what, f"{src} images"),
        "gt_cat": _index(
            _ids(anns, "category_id", what), cat_ids, "category_id", what, f"{src} categories"
        ),
        "gt_box": box,
        "gt_area": area,
        "gt_crowd": _numbers(crowd, "iscrowd", what) != 0,
        "gt_id": gt_id,
    }


def detection_set(gt: Any, dets: Any, gt_src: str = "gt", dets_src: str = "dets") -> DetectionSet:
    """Validate a COCO ground-truth dict and a COCO results list; return them as arrays.

    Ground truth needs 'images' and 'categories' (unique ids); an annotation may omit 'area' (then
    w*h), 'iscrowd' (0) and 'id' (position + 1), and needs w, h >= 0. A detection needs an image_id
    and category_id of the ground truth, a score in [0, 1] (calibration needs probabilities) and a
    box with w, h > 0. Messages name the source and the 0-based position of the item.
    """
    g = _ground_truth(gt, gt_src)
    what = f"{dets_src}: detection"
    if not isinstance(dets, list):
        raise InputError(f"{dets_src}: expected a list of detections (COCO results format)")
    box = _numbers(_column(dets, "bbox", what), "bbox", what, width=4).reshape(-1, 4)
    bad = np.flatnonzero((box[:, 2] <= 0) | (box[:, 3] <= 0))
    if len(bad):
        raise InputError(f"{what} {bad[0]} has bbox {dets[bad[0]]['bbox']} with non-positive size")
    score = _numbers(_column(dets, "score", what), "score", what)
    bad = np.flatnonzero((score < 0) | (score > 1))
    if len(bad):
        raise InputError(f"{what} {bad[0]} has score {score[bad[0]]} outside [0, 1]")
    return DetectionSet(
        **g,
        dt_img=_index(_ids(dets, "image_id", what), g["img_ids"], "image_id", what, gt_src),
        dt_cat=_index(_ids(dets, "category_id", what), g["cat_ids"], "category_id", what, gt_src),
        dt_box=box,
        dt_score=score,
    )


# ------------------------------------------------------------------ evaluation
def _bins(count: np.ndarray, score: np.ndarray, target: np.ndarray) -> dict[str, list[Any]]:
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "count": [int(n) for n in count],
            "mean_score": [float(v) for v in score / count],  # NaN in an empty bin
            "mean_target": [float(v) for v in target / count],
        }


def _reliability(cal: Calibration, names: tuple[str, ...]) -> dict[str, Any]:
    rated = cal.n_gt > 0  # pooled over the classes LaECE0 averages
    sums = (cal.bin_count, cal.bin_score, cal.bin_target)
    return {
        "bins": calibration.LAECE_BINS,
        "edges": [float(e) for e in np.linspace(0.0, 1.0, calibration.LAECE_BINS + 1)],
        "target": "IoU for a TP (IoU > 0), 0 for a FP; detections kept by the calib threshold",
        "pooled": _bins(*(a[rated].sum(axis=0) for a in sums)),
        "per_class": {name: _bins(*(a[k] for a in sums)) for k, name in enumerate(names)},
    }


def _evaluate(
    ds: DetectionSet, gt: Any, dets: Any, threshold: str | float, map_backend: str
) -> dict[str, Any]:
    if map_backend not in coco.BACKENDS:
        raise InputError(f"map_backend: got {map_backend!r}; choose from {list(coco.BACKENDS)}")
    cand = candidates(ds)
    if map_backend == "numpy":
        stats, precision = coco.coco_eval_numpy(ds, cand)
    else:
        stats, precision = coco.coco_eval_pycocotools(gt, dets)
    cal = calibration.calibration_metrics(ds, cand, threshold)
    ap = coco.class_ap(precision)
    names = ds.cat_names
    if len(set(names)) < len(names):  # per_class is keyed by name: keep keys unique
        names = tuple(f"{n} (id {i})" for n, i in zip(names, ds.cat_ids))

    result: dict[str, Any] = dict(zip(coco.COCO_STAT_KEYS, stats))
    result.update(laece0=cal.laece0, laace0=cal.laace0, lrp=cal.lrp, dece=cal.dece, brier=cal.brier)
    result["dece_n"] = cal.n_dece  # D-ECE is NaN exactly when this is 0
    protocol = {"mAP": coco.protocol(map_backend), **calibration.protocol(threshold)}
    protocol["calib_threshold"]["per_class"] = dict(zip(names, map(float, cal.threshold)))
    result["protocol"] = protocol
    result["per_class"] = {
        name: {
            "AP": float(ap[k]),
            "laece0": float(cal.class_laece0[k]),
            "laace0": float(cal.class_laace0[k]),
            "lrp": float(cal.class_lrp[k]),
            "threshold": float(cal.threshold[k]),
            "n_dets": int(cal.n_dets[k]),
            "n_kept": int(cal.n_kept[k]),
            "n_gt": int(cal.n_gt[k]),
        }
        for k, name in enumerate(names)
    }
    result["reliability"] = _reliability(cal, names)
    return result


def evaluate(
    gt: dict[str, Any],
    dets: list[dict[str, Any]],
    calib_threshold: str | float = "lrp",
    *,
    map_backend: str = "numpy",
) -> dict[str, Any]:
    """mAP and calibration of the COCO results `dets` against the COCO ground truth `gt`.

    Returns flat keys: the 12 COCO stats (COCO_STAT_KEYS; -1 where COCOeval has nothing to
    average), laece0, laace0, lrp, dece, brier (NaN where undefined, e.g. without detections);
    dece_n (the detections scoring >= 0.3 that D-ECE is computed on: with 0, D-ECE is NaN);
    "protocol" (every setting, per-class thresholds included); "per_class" ({name: {AP, laece0,
    laace0, lrp, threshold, n_dets, n_kept, n_gt}}); "reliability" (count, mean score, mean target
    per LaECE0 bin, pooled and per class). Numbers are Python floats, counts Python ints.
    calib_threshold: "lrp" | "none" | a score in [0, 1] (calibration.calibration_metrics).
    map_backend: "numpy" (same stats as pycocotools, faster) or "pycocotools".
    Bad input raises InputError.
    """
    threshold = parse_calib_threshold(calib_threshold)
    return _evaluate(detection_set(gt, dets), gt, dets, threshold, map_backend)


def evaluate_files(
    gt_path: str | Path,
    dets_path: str | Path,
    calib_threshold: str | float = "lrp",
    *,
    map_backend: str = "numpy",
) -> dict[str, Any]:
    """evaluate() on a COCO ground-truth file and a COCO results file. InputError (one line that
    names the file) for a missing or unreadable file, invalid JSON or content evaluate() rejects."""
    threshold = parse_calib_threshold(calib_threshold)
    with _no_gc():
        gt = load_json(gt_path, "ground-truth")
        dets = load_json(dets_path, "detections")
        ds = detection_set(gt, dets, str(gt_path), str(dets_path))
    return _evaluate(ds, gt, dets, threshold, map_backend)


def _strict(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strict(v) for v in obj]
    return obj


def to_json(result: dict[str, Any], indent: int | None = None) -> str:
    """Strict JSON (RFC 8259) of an evaluate() result: NaN becomes null (jq, JavaScript)."""
    return json.dumps(_strict(result), indent=indent, allow_nan=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m focalbench.metrics.evaluate")
    parser.add_argument("gt", help="COCO ground-truth json")
    parser.add_argument("dets", help="COCO results json")
    parser.add_argument("--calib-threshold", default="lrp", help="lrp | none | FLOAT (default lrp)")
    parser.add_argument("--map-backend", default="numpy", choices=coco.BACKENDS)
    args = parser.parse_args(argv)
    try:
        result = evaluate_files(
            args.gt, args.dets, args.calib_threshold, map_backend=args.map_backend
        )
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(to_json(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
