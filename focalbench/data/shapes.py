"""Shapes and drawing for the embedded dataset: unit outlines of the classes and distractors,
textured backgrounds, colours that contrast with what lies under them. Pure functions of a numpy
generator, so the generator (synthetic.py) keeps its draws in one fixed order.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image

from focalbench.data.presets import Preset


def _regular(n: int, start_deg: float = 90.0, radii: tuple[float, ...] = (1.0,)) -> np.ndarray:
    """Vertices [n*len(radii), 2] of a regular polygon (or a star when two radii alternate)."""
    k = n * len(radii)
    ang = np.deg2rad(start_deg) + 2 * np.pi * np.arange(k) / k
    r = np.resize(np.array(radii), k)
    return np.stack([r * np.cos(ang), -r * np.sin(ang)], axis=1)


# A plus sign with arms one third of its span wide.
_CROSS = np.array(
    [(-1, -1 / 3), (-1 / 3, -1 / 3), (-1 / 3, -1), (1 / 3, -1), (1 / 3, -1 / 3), (1, -1 / 3),
     (1, 1 / 3), (1 / 3, 1 / 3), (1 / 3, 1), (-1 / 3, 1), (-1 / 3, 1 / 3), (-1, 1 / 3)],
    dtype=float,
)  # fmt: skip
POLYGONS = {
    "square": _regular(4, 45.0),
    "triangle": _regular(3),
    "star": _regular(5, radii=(1.0, 0.42)),
    "cross": _CROSS,
}
HEXAGON = _regular(6)
ELLIPSE = _regular(24)


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel coordinates xx, yy, each [S, S] float32 in [0, 1)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return xx, yy


def background(rng: np.random.Generator, size: int, preset: Preset) -> np.ndarray:
    """A textured background [S, S, 3] uint8: a two-colour gradient plus one texture."""
    xx, yy = _grid(size)
    theta = rng.uniform(0, 2 * np.pi)
    t = xx * np.float32(math.cos(theta)) + yy * np.float32(math.sin(theta))
    t = (t - t.min()) / (t.max() - t.min() + 1e-6)
    # Mid-range colours leave room for contrasting objects on either side.
    c0, c1 = rng.uniform(40, 215, (2, 3)).astype(np.float32)
    img = c0 + (c1 - c0) * t[..., None]  # [S, S, 3]
    amp = np.float32(rng.uniform(*preset.texture_amp))
    tint = rng.uniform(-1, 1, 3).astype(np.float32)
    kind = rng.integers(4)
    if kind == 0:  # stripes of random frequency and orientation
        phi = rng.uniform(0, np.pi)
        freq = rng.uniform(3, 14) * 2 * np.pi
        u = xx * np.float32(math.cos(phi)) + yy * np.float32(math.sin(phi))
        img += amp * np.sin(np.float32(freq) * u)[..., None] * tint
    elif kind == 1:  # low-frequency colour blotches
        k = int(rng.integers(3, 9))
        low = rng.integers(0, 256, (k, k, 3), dtype=np.uint8)
        up = np.asarray(Image.fromarray(low).resize((size, size), Image.BILINEAR), np.float32)
        img += (up - 127.5) * (amp / 127.5)
    elif kind == 2:  # checkerboard
        cells = rng.uniform(4, 16)
        sign = np.sign(np.sin(cells * np.pi * xx) * np.sin(cells * np.pi * yy))
        img += amp * sign[..., None] * tint
    # kind 3: plain gradient (grain and lines are added to all kinds)
    return np.clip(img, 0, 255).astype(np.uint8)


def contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> tuple[int, int, int]:
    """A random colour far from `under` (mean RGB of the region it covers), so it is visible."""
    for _ in range(8):
        c = rng.integers(0, 256, 3)
        if np.abs(c - under).max() >= 90:
            return int(c[0]), int(c[1]), int(c[2])
    inv = 255 - under  # rare fallback: the complement is always far from mid-range backgrounds
    return int(inv[0]), int(inv[1]), int(inv[2])


def shape_outline(rng: np.random.Generator, unit: np.ndarray, span: float) -> np.ndarray:
    """Rotate unit vertices at random, stretch slightly, scale so the longer box side is `span`.

    Returns vertices [K, 2] whose bounding box starts at (0, 0).
    """
    a = rng.uniform(0, 2 * np.pi)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    v = unit @ rot.T
    v = v * np.array([1.0, math.exp(rng.uniform(-0.15, 0.15))])
    v = v - v.min(axis=0)
    return v * (span / v.max())


def unit_polygon(rng: np.random.Generator, kind: str) -> np.ndarray:
    """Vertices [K, 2] around the origin for an object polygon or a distractor kind."""
    if kind == "outline":  # drawn as a thin outline: an object's silhouette without its fill
        return POLYGONS[("square", "triangle", "star")[int(rng.integers(3))]]
    if kind == "ellipse":  # too elongated to pass for a circle
        return ELLIPSE * np.array([1.0, rng.uniform(0.22, 0.4)])
    if kind == "hexagon":
        return HEXAGON
    if kind == "blob":  # a lumpy nonagon
        return _regular(9) * rng.uniform(0.7, 1.0, (9, 1))
    return POLYGONS[kind]
