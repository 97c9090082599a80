"""DataCfg -> (train, val) CocoDetection datasets, with the files they need made once and cached.

The embedded dataset is synthesized on first use under <results_dir>/data/ (train and val from
different seeds). A COCO file is cut to seeded subsets there too; without `val_ann`, train and val
are disjoint subsets of `ann`. Concurrent jobs of a sweep share the cache: a file lock makes one of
them write it while the others wait.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

from filelock import FileLock

from focalbench.data import CocoDetection, load_coco_json, subset_coco, synthesize
from focalbench.errors import InputError

VAL_SEED_OFFSET = (
    10_000  # the synthetic val set is drawn from seed synth_seed + this, disjoint from train
)


def _cached(folder: Path, make) -> Path:
    """Run make(tmp_folder) once per folder, atomically (tmp + rename), under a lock.

    A folder, so not utils.atomic_write: that one writes one file and unlinks it on failure, which
    a folder cannot be. The DONE marker, written last, tells a finished folder from a cut one."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / "DONE").is_file():
            tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            make(tmp)
            (tmp / "DONE").write_text("")
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
    return folder


def synthetic_files(
    data_cfg, results_dir: str | Path
) -> tuple[tuple[Path, Path], tuple[Path, Path]]:
    """((train_json, train_images), (val_json, val_images)) of the embedded dataset."""
    root = Path(results_dir) / "data"
    out = []
    for split, n, seed in (
        ("train", data_cfg.train_images, data_cfg.synth_seed),
        ("val", data_cfg.val_images, data_cfg.synth_seed + VAL_SEED_OFFSET),
    ):
        # hard keeps the folder name of the images made before the presets, so caches stay valid
        preset = "" if data_cfg.difficulty == "hard" else f"{data_cfg.difficulty}-"
        folder = root / f"synthetic-{preset}{split}-n{n}-s{data_cfg.image_size}-seed{seed}"
        _cached(
            folder,
            lambda tmp, n=n, seed=seed: synthesize(
                tmp, n, data_cfg.image_size, seed, difficulty=data_cfg.difficulty
            ),
        )
        out.append((folder / "annotations.json", folder / "images"))
    return out[0], out[1]


def _split_disjoint(subset_json: Path, n_val: int, seed: int, out: Path) -> None:
    """Split a subset json into train.json / val.json with disjoint images (val = the first n_val of
    a shuffle)."""
    coco = load_coco_json(subset_json)
    ids = sorted(im["id"] for im in coco["images"])
    random.Random(seed).shuffle(ids)
    val_ids = set(ids[:n_val])
    if len(val_ids) == len(ids):
        raise InputError(
            f"data.ann={subset_json}: {len(ids)} images leave none for training after "
            f"data.val_images={n_val}; lower data.val_images or data.train_images"
        )
    for name, keep in (("val", lambda i: i in val_ids), ("train", lambda i: i not in val_ids)):
        part = dict(coco)
        part["images"] = [im for im in coco["images"] if keep(im["id"])]
        part["annotations"] = [a for a in coco["annotations"] if keep(a["image_id"])]
        (out / f"{name}.json").write_text(json.dumps(part))


def coco_files(data_cfg, results_dir: str | Path) -> tuple[tuple[Path, Path], tuple[Path, Path]]:
    """Seeded subsets of a user's COCO files (images are referenced, never copied)."""
    ann, images = Path(data_cfg.ann), Path(data_cfg.images)
    if not ann.is_file():
        raise InputError(f"data.ann={str(ann)!r}: no such file")
    if not images.is_dir():
        raise InputError(f"data.images={str(images)!r}: no such folder")
    cats = list(data_cfg.categories) if data_cfg.categories else None
    key = json.dumps(
        [
            str(ann.resolve()),
            ann.stat().st_mtime,
            data_cfg.val_ann,
            data_cfg.train_images,
            data_cfg.val_images,
            cats,
            data_cfg.synth_seed,
        ]
    )
    folder = Path(results_dir) / "data" / f"coco-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    n_train, n_val = data_cfg.train_images, data_cfg.val_images

    def make(tmp: Path) -> None:
        if data_cfg.val_ann:
            val_ann = Path(data_cfg.val_ann)
            if not val_ann.is_file():
                raise InputError(f"data.val_ann={str(val_ann)!r}: no such file")
            val_dir = Path(data_cfg.val_image_dir or images)
            _subset(ann, images, tmp / "train.json", n_train, cats, data_cfg.synth_seed)
            _subset(val_ann, val_dir, tmp / "val.json", n_val, cats, data_cfg.synth_seed)
        else:
            n_all = 0 if n_train == 0 else n_train + n_val
            _subset(ann, images, tmp / "all.json", n_all, cats, data_cfg.synth_seed)
            _split_disjoint(tmp / "all.json", n_val or 1, data_cfg.synth_seed, tmp)

    _cached(folder, make)
    val_dir = Path(data_cfg.val_image_dir or images) if data_cfg.val_ann else images
    return (folder / "train.json", images), (folder / "val.json", val_dir)


def _subset(ann: Path, images: Path, out: Path, n: int, cats, seed: int) -> None:
    if n == 0 and not cats:  # all images: a plain copy keeps the user's json as it is
        shutil.copyfile(ann, out)
        return
    if n == 0:  # all images holding one of the categories
        coco = load_coco_json(ann)
        wanted = {c["id"] for c in coco.get("categories", []) if c.get("name") in cats}
        n = (
            len(
                {
                    a["image_id"]
                    for a in coco.get("annotations", [])
                    if a.get("category_id") in wanted and not a.get("iscrowd")
                }
            )
            or 1
        )
    subset_coco(ann, images, out, n=n, categories=cats, seed=seed)


def build_datasets(data_cfg, results_dir: str | Path) -> tuple[CocoDetection, CocoDetection]:
    """The train (augmented) and val datasets; both go through the same COCO loader."""
    files = synthetic_files if data_cfg.name == "synthetic" else coco_files
    (train_ann, train_dir), (val_ann, val_dir) = files(data_cfg, results_dir)
    repair = data_cfg.bad_boxes == "fix"
    train = CocoDetection(
        train_ann, train_dir, data_cfg.image_size, train=True, repair_boxes=repair
    )
    val = CocoDetection(val_ann, val_dir, data_cfg.image_size, train=False, repair_boxes=repair)
    if train.cat_ids != val.cat_ids:
        raise InputError(f"{val_ann}: categories differ from the training set {train_ann}")
    return train, val
