"""`focalbench pretrain`: a ResNet backbone pretrained on shape crops of the embedded data, the
`model.weights=synthetic` warm start (issue 14).

Real loss ablations start from an ImageNet backbone; the embedded data has none, so this trains
one in a few CPU minutes: a 7-way classifier (the 6 shapes + background) on square crops around
each object and on background crops (which may hold unannotated distractors: hard negatives).

- Data: images of the synthetic generator's TRAIN stream only (data seed 0, image indices
  0..recipe.images + recipe.val_images - 1). Runs validate on data seed synth_seed + 10000
  (engine/datasets.py), which this never draws, so no validation image is seen here.
- Deterministic: the same seed, recipe and thread count give the same bytes. It runs on the CPU
  with torch's deterministic algorithms and `recipe.threads` threads, drawing every random
  number from generators seeded here; torch.save of a state dict in a fixed key order with no
  timestamp. (Float sums are split over threads, so another thread count may change the last bits.)
- Cached: <results_dir>/pretrained/synthetic-<backbone>-seed<seed>.pt, written atomically under a
  file lock (sweep jobs that all need it train it once); a second call returns the cached file.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from filelock import FileLock
from PIL import Image

from focalbench.data.synthetic import SYNTH_CATEGORIES, draw
from focalbench.errors import InputError
from focalbench.models.pretrained import (
    BACKBONES,
    SYNTHETIC_FORMAT,
    check_backbone_state,
    synthetic_cache_path,
)
from focalbench.utils import atomic_write

DATA_SEED = 0  # the generator's train stream; validation sets use seeds >= 10000
BACKGROUND = len(SYNTH_CATEGORIES)  # label of background crops (class 6 of 7)
# The detectors normalize with ImageNet statistics (torchvision's transform, models/detr.py), so
# the backbone learns on inputs normalized the same way.
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@dataclass(frozen=True)
class Recipe:
    """How the backbone is pretrained. The default recipe is what `model.weights=synthetic` finds;
    any other gets its own cache file (its hash in the name)."""

    images: int = 1200  # generator images to crop from (~2.8 objects each at difficulty easy)
    val_images: int = 150  # further train-stream images, for the held-out crop accuracy only
    image_size: int = 160  # drawn at this side, like a run's data.image_size
    difficulty: str = "easy"
    crop_size: int = 64  # crops are resized to this side (R18: ~120 crops/s per step on 2 cores)
    # crop side = object side x U(context): the object fills 40-85 % of its crop
    context: tuple[float, float] = (1.2, 2.5)
    backgrounds_per_image: int = 1
    epochs: int = 4
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    threads: int = 2  # fixed, so the bytes do not depend on the machine's core count

    def tag(self) -> str:
        """'' for the default recipe, else a short hash of its fields (part of the file name)."""
        if self == Recipe():
            return ""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Pretrained:
    path: Path
    reused: bool  # True: the cached file was there already
    val_accuracy: float  # held-out crop accuracy (7 classes), as saved with the file


def _square(rng: np.random.Generator, cx: float, cy: float, side: float, size: int) -> tuple:
    """A square crop box (x0, y0, x1, y1) of `side` around (cx, cy), jittered, kept in the image
    (shifted, not padded: a black border would be a cue the detector never sees)."""
    side = min(side, size)
    cx += rng.uniform(-0.1, 0.1) * side
    cy += rng.uniform(-0.1, 0.1) * side
    x0 = float(np.clip(cx - side / 2, 0, size - side))
    y0 = float(np.clip(cy - side / 2, 0, size - side))
    return x0, y0, x0 + side, y0 + side


def _overlaps(box: tuple, objects: list) -> bool:
    """True if the crop box covers more than 10 % of any object's box."""
    for _, (x, y, w, h) in objects:
        iw = min(box[2], x + w) - max(box[0], x)
        ih = min(box[3], y + h) - max(box[1], y)
        if iw > 0 and ih > 0 and iw * ih > 0.1 * w * h:
            return True
    return False


def make_crops(
    recipe: Recipe, first: int, count: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops of train-stream images first..first+count-1: uint8 [N, 3, c, c] and labels [N]."""
    rng = np.random.default_rng([seed, first, 7])  # crop jitter; the images have their own seeds
    S, c = recipe.image_size, recipe.crop_size
    crops, labels = [], []
    for index in range(first, first + count):
        img, objects = draw(DATA_SEED, index, S, recipe.difficulty)
        boxes, labs = [], []
        for cat, (x, y, w, h) in objects:
            side = max(w, h) * rng.uniform(*recipe.context)
            boxes.append(_square(rng, x + w / 2, y + h / 2, side, S))
            labs.append(cat)
        for _ in range(recipe.backgrounds_per_image):
            for _try in range(10):  # a background crop of an object's size range, off the objects
                side = math.exp(rng.uniform(math.log(0.15 * S), math.log(0.6 * S)))
                box = _square(rng, rng.uniform(0, S), rng.uniform(0, S), side, S)
                if not _overlaps(box, objects):
                    boxes.append(box)
                    labs.append(BACKGROUND)
                    break
        for box, lab in zip(boxes, labs, strict=True):
            crop = img.resize((c, c), Image.BILINEAR, box=box)
            crops.append(np.asarray(crop).transpose(2, 0, 1))  # [3, c, c]
            labels.append(lab)
    return torch.from_numpy(np.stack(crops)), torch.tensor(labels, dtype=torch.long)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255 - MEAN) / STD


@contextmanager
def _deterministic(threads: int) -> Iterator[None]:
    """Deterministic CPU kernels and a fixed thread count within the block; restored after."""
    was_det, was_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's global RNG is left as it was
            yield
    finally:
        torch.use_deterministic_algorithms(was_det)
        torch.set_num_threads(was_threads)


@contextmanager
def _progress_bar(enabled: bool, total: int, what: str) -> Iterator:
    """A rich progress bar like the training loop's; yields advance(loss)."""
    # rich is for CLI-facing modules; this is the pretrain command's own loop (issue 14)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: TID251

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
        disable=not enabled,
    )
    with bar:
        task = bar.add_task(what, total=total, loss=float("nan"))
        yield lambda loss: bar.update(task, advance=1, loss=loss)


def _train(backbone: str, seed: int, recipe: Recipe, progress: bool) -> tuple[dict, float]:
    """Train the classifier; returns (backbone state dict, held-out accuracy)."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, backbone)(num_classes=BACKGROUND + 1)
    x, y = make_crops(recipe, 0, recipe.images, seed)
    vx, vy = make_crops(recipe, recipe.images, recipe.val_images, seed)
    steps_per_epoch = max(1, len(x) // recipe.batch_size)  # the last partial batch is dropped
    total = recipe.epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    warmup = min(50, total // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda it: (
            min(1.0, (it + 1) / warmup)
            * 0.5
            * (1 + math.cos(math.pi * min(it / max(1, total), 1.0)))
        ),
    )
    order = torch.Generator().manual_seed(seed)
    model.train()
    with _progress_bar(progress, total, f"pretrain {backbone} on {len(x)} crops") as advance:
        for _epoch in range(recipe.epochs):
            perm = torch.randperm(len(x), generator=order)
            for step in range(steps_per_epoch):
                idx = perm[step * recipe.batch_size : (step + 1) * recipe.batch_size]
                batch = _normalize(x[idx])  # [B, 3, c, c]
                flip = torch.rand(len(idx), generator=order) < 0.5
                batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
                loss = F.cross_entropy(model(batch), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                advance(loss.item())
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(_normalize(b)).argmax(1) for b in vx.split(256)])
    accuracy = float((pred == vy).float().mean())
    return check_backbone_state(model.state_dict(), backbone, "synthetic"), accuracy


def pretrain(
    results_dir: str | Path,
    backbone: str = "resnet18",
    seed: int = 0,
    recipe: Recipe = Recipe(),  # noqa: B008 (frozen: a shared default cannot be mutated)
    force: bool = False,
    progress: bool = True,
) -> Pretrained:
    """The cached synthetic backbone, trained first unless it is there (or when force=True)."""
    if backbone not in BACKBONES:
        raise InputError(
            f"pretrain --backbone={backbone!r} is unknown; choose from {list(BACKBONES)}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"pretrain --seed must be an integer >= 0, got {seed!r}")
    path = synthetic_cache_path(results_dir, backbone, seed, recipe.tag())
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.is_file() and not force:
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
                accuracy = float(saved["val_accuracy"])
            except Exception as exc:
                raise InputError(
                    f"the cached backbone {path} is corrupt ({type(exc).__name__}); "
                    f"`focalbench pretrain --force` trains it again"
                ) from exc
            return Pretrained(path, True, accuracy)
        with _deterministic(recipe.threads):
            state, accuracy = _train(backbone, seed, recipe, progress)
        payload = {
            "format": SYNTHETIC_FORMAT,
            "backbone": backbone,
            "seed": seed,
            "recipe": json.dumps(asdict(recipe), sort_keys=True),
            "val_accuracy": accuracy,
            "state_dict": {k: v.contiguous() for k, v in state.items()},
        }
        atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return Pretrained(path, False, accuracy)
