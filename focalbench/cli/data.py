"""`focalbench data ...`: make, cut, check, import and describe COCO-format datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from focalbench.cli.app import data_app, out


@data_app.command()
def synth(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder to write annotations.json and images/ to.")
    ],
    images: Annotated[int, typer.Option(min=1, help="Number of images.")] = 200,
    image_size: Annotated[int, typer.Option(min=32, help="Square image side in pixels.")] = 256,
    seed: Annotated[int, typer.Option(min=0, help="Same seed, identical files.")] = 0,
    difficulty: Annotated[
        str,
        typer.Option(
            help="Preset: easy (learnable in a few CPU minutes) or hard (the original images); "
            "see the README for each one's class frequencies and object sizes."
        ),
    ] = "easy",
) -> None:
    """Write the embedded procedurally generated COCO-format dataset."""
    from focalbench.data import synthesize

    with out.status(f"drawing {images} images"):
        ann = synthesize(out_dir, images, image_size, seed, difficulty)
    out.print(f"wrote {ann} and {images} images under {out_dir / 'images'}")


@data_app.command()
def subset(
    ann: Annotated[Path, typer.Option(help="COCO annotation json, e.g. instances_val2017.json.")],
    images: Annotated[Path, typer.Option(help="The image folder the json refers to.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the subset json.")],
    n: Annotated[int, typer.Option(min=1, help="Number of images in the subset.")] = 500,
    categories: Annotated[str | None, typer.Option(help="Comma-separated category names.")] = None,
    seed: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """Write a seeded subset of a COCO json (images referenced, not copied)."""
    from focalbench.data import subset_coco

    cats = [c.strip() for c in categories.split(",")] if categories else None
    path = subset_coco(ann, images, out_dir, n=n, categories=cats, seed=seed)
    out.print(f"wrote {path}")


@data_app.command()
def check(
    ann: Annotated[Path, typer.Argument(help="COCO annotation json.", show_default=False)],
    images: Annotated[
        Path | None, typer.Option(help="Image folder: also check every file exists.")
    ] = None,
) -> None:
    """Check a COCO json (schema, ids, boxes, image files); exit 1 when it finds problems."""
    from focalbench.data import check_coco

    report = check_coco(ann, images)
    for line in report.to_lines():
        out.print(line, highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@data_app.command("import")
def import_(
    fmt: Annotated[str, typer.Option("--format", help="Layout of --src: voc or yolo.")],
    src: Annotated[
        Path, typer.Option(help="VOC folder (Annotations/, JPEGImages/) or YOLO folder/data.yaml.")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for one COCO json per split.")],
    val_frac: Annotated[
        float, typer.Option(help="Share of images drawn for val where the set has no val split.")
    ] = 0.2,
    seed: Annotated[int, typer.Option(min=0, help="Seed of that draw.")] = 0,
    classes: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated class names, in label order (VOC: default "
            "sorted names; YOLO: its names)."
        ),
    ] = None,  # fmt: skip
    bad_boxes: Annotated[
        str, typer.Option(help="fix (clip or drop, counted) or error (stop, naming the file).")
    ] = "fix",
) -> None:
    """Import a Pascal VOC or YOLO set as COCO jsons (images referenced in place); print what was
    written, the problems found and the overrides that train on it."""
    from focalbench.data.convert import import_dataset

    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    with out.status(f"reading {src}"):
        report = import_dataset(
            fmt, src, out_dir, val_frac=val_frac, seed=seed, classes=names, bad_boxes=bad_boxes
        )
    for line in report.to_lines():
        out.print(line, highlight=False, soft_wrap=True)


@data_app.command()
def stats(
    ann: Annotated[Path, typer.Argument(help="COCO annotation json.", show_default=False)],
    image_size: Annotated[
        int | None,
        typer.Option(help="The run's data.image_size: box sides and anchor reach measured there."),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write class counts and box sides vs anchors to this PNG.")
    ] = None,
) -> None:
    """Classes and their imbalance, objects per image, box sizes at the run's image size, the
    boxes no anchor reaches, and what to set."""
    from focalbench.data.stats import dataset_stats, plot_stats

    result = dataset_stats(ann, image_size=image_size)
    for line in result.to_lines():
        out.print(line, highlight=False, soft_wrap=True)
    if plot is not None:
        out.print(f"wrote {plot_stats(result, plot)}")
