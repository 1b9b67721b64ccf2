# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
Prepare an image dataset once for fast pretraining: Parquet shards of re-encoded JPEGs, the shorter side capped.

    python -m supmae.prepare_dataset --source SRC --output DIR --max_side 256 [--quality 90] [--num_workers N]

SRC is anything the training scripts read (a Hub dataset, a local dataset directory, an image folder with class
subfolders, or "digits"). DIR then holds `data/<split>-NNNNN-of-MMMMM.parquet` with the columns `image` (the encoded
file, datasets' `Image` feature) and `label` (its `ClassLabel`, class names kept), and the training scripts read it
like any local dataset (`--dataset_name DIR`).

Decoding costs about in proportion to the pixels: capping the shorter side at 256 makes an ImageNet photo (about
500x375) 341x256, and the input pipeline about twice as fast per core (benchmarks/README.md). The price: a crop of
20% of the area is cut from fewer pixels and upsampled more to 224. So the cap is a choice (`--max_side 0` keeps
every image's resolution and only packs the files into shards).

Images that need nothing are kept byte for byte: baseline RGB or grayscale JPEGs, not EXIF-rotated, within the cap.
The others are decoded (EXIF rotation applied, CMYK, palette, 16-bit and alpha converted to RGB as the training
transforms do), shrunk if over the cap (antialiased bicubic), and saved as baseline JPEGs at `--quality`. Unreadable
files are skipped and listed in DIR/skipped_images.tsv (`--bad_images error` stops instead).

Shards are written in parallel, each to a temporary name and renamed once complete and synced to disk, into a hidden
folder; only when every shard is there do they move to DIR/data and DIR/README.md is written. An interrupted run is
resumed by running the same command again: finished shards are kept, the rest are written. A directory whose
preparation has not finished is refused by the training scripts, with the command that finishes it.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing
import os
import sys
import time
from dataclasses import asdict, dataclass

import datasets
import PIL.Image
import PIL.ImageOps
import pyarrow.parquet
from tqdm.auto import tqdm

from .images import (
    IMAGE_ERRORS,
    SKIPPED_IMAGES,
    BadImagePolicy,
    _exif_orientation,
    check_image_size,
    encoded_bytes,
    image_name,
    plain_jpeg,
    to_rgb,
    undecoded,
)
from .sources import PREPARE_MANIFEST, class_names, find_image_column, find_label_column, load_image_datasets


STAGING = ".shards"  # hidden: datasets ignores it, so an unfinished preparation never loads as a smaller dataset


@dataclass
class Plan:
    """What a preparation writes; stored in DIR/.prepare_dataset.json, compared when resuming."""

    source: str
    config_name: str | None
    max_side: int
    quality: int
    shard_size: int
    image_column: str
    label_column: str | None
    class_names: list | None
    rows: dict  # split -> number of source rows
    complete: bool = False

    def shards(self) -> list[tuple[str, int, int, int, str]]:
        """(split, shard, first row, end row, file name) of every shard."""
        found = []
        for split, rows in self.rows.items():
            count = max(1, math.ceil(rows / self.shard_size))
            for shard in range(count):
                start, end = shard * self.shard_size, min(rows, (shard + 1) * self.shard_size)
                found.append((split, shard, start, end, f"{split}-{shard:05d}-of-{count:05d}.parquet"))
        return found

    def settings(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "complete"}


def shrunk_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) with the shorter side at most `max_side` (0: no cap), aspect ratio kept."""
    shorter = min(width, height)
    if not max_side or shorter <= max_side:
        return width, height
    scale = max_side / shorter
    return (max_side, max(1, round(height * scale))) if width <= height else (max(1, round(width * scale)), max_side)


def reencode(data: bytes, max_side: int, quality: int = 90) -> bytes:
    """One image file, prepared: the same bytes when nothing needs doing (a baseline RGB or grayscale JPEG, upright,
    within the cap); otherwise decoded, turned upright, converted to RGB (grayscale stays grayscale), shrunk so that
    its shorter side is at most `max_side` (antialiased bicubic), and saved as a baseline JPEG at `quality`. An image
    more elongated than `MAX_ASPECT_RATIO` is refused (`UnacceptableImageError`), as the training transforms do."""
    image = PIL.Image.open(io.BytesIO(data))
    check_image_size(*image.size)  # one the training transforms would refuse is listed here instead
    size = shrunk_size(*image.size, max_side)
    rotated = _exif_orientation(image)
    if plain_jpeg(image, data) and size == image.size:
        # Kept as it is, once it decodes: at 1/8 scale (libjpeg's DCT scaling), which still reads all of its
        # entropy-coded data, so that a damaged file is listed here rather than in training.
        image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
        return data
    if image.format == "JPEG" and not rotated and size != image.size:
        image.draft(image.mode if image.mode in ("RGB", "L") else "RGB", size)  # DCT scaling, never below `size`
    image.load()
    if rotated:
        image = PIL.ImageOps.exif_transpose(image)
        size = shrunk_size(*image.size, max_side)
    image = image if image.mode == "L" else to_rgb(image)
    if image.size != size:
        image = image.resize(size, PIL.Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


# The source splits, set before the worker processes fork (they inherit the memory-mapped tables).
_SPLITS: dict = {}


def _write_shard(task) -> tuple[str, int, int]:
    """Write one shard: re-encode its rows, write them to a temporary name, sync, rename. Returns (file name, rows
    written, images skipped)."""
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one bar, the preparation's
    try:
        return _write_rows(*task)
    finally:
        if bars:
            datasets.enable_progress_bars()


def _write_rows(plan: Plan, output: str, shard: tuple, bad_images: str) -> tuple[str, int, int]:
    split, _, start, end, name = shard
    source = _SPLITS[split]
    policy = BadImagePolicy(bad_images, os.path.join(output, SKIPPED_IMAGES))
    images, labels, skipped = [], [], 0
    for index in range(start, end):
        example = source[index]
        value = example[plan.image_column]
        try:
            images.append({"bytes": reencode(encoded_bytes(value), plan.max_side, plan.quality), "path": None})
        except IMAGE_ERRORS as error:
            policy.handle(image_name(value, index), error)
            skipped += 1
            continue
        if plan.label_column:
            labels.append(example[plan.label_column])
    columns = {"image": images, **({"label": labels} if plan.label_column else {})}
    shard = datasets.Dataset.from_dict(columns, features=_features(plan))
    staging = os.path.join(output, STAGING)
    partial = os.path.join(staging, f".{name}.partial-{os.getpid()}")
    shard.to_parquet(partial)
    with open(partial, "rb") as file:
        os.fsync(file.fileno())
    os.replace(partial, os.path.join(staging, name))
    return name, len(images), skipped


def _features(plan: Plan) -> datasets.Features:
    features = {"image": datasets.Image()}
    if plan.label_column:
        features["label"] = (
            datasets.ClassLabel(names=plan.class_names) if plan.class_names else datasets.Value("int64")
        )
    return datasets.Features(features)


def _read_manifest(output: str) -> Plan | None:
    path = os.path.join(output, PREPARE_MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        return Plan(**json.load(file))


def _write_manifest(output: str, plan: Plan) -> None:
    path = os.path.join(output, PREPARE_MANIFEST)
    with open(path + ".partial", "w") as file:
        json.dump(asdict(plan), file, indent=1)
        file.flush()
        os.fsync(file.fileno())
    os.replace(path + ".partial", path)


def make_plan(splits, source, config_name, max_side, quality, shard_size, image_column=None, label_column=None):
    first = next(iter(splits.values()))
    image_column = find_image_column(first, image_column)
    label_column = find_label_column(first, label_column)
    return Plan(
        source=source,
        config_name=config_name,
        max_side=max_side,
        quality=quality,
        shard_size=shard_size,
        image_column=image_column,
        label_column=label_column,
        class_names=class_names(first, label_column),
        rows={name: len(split) for name, split in splits.items()},
    )


def prepare(
    source: str,
    output: str,
    max_side: int,
    quality: int = 90,
    shard_size: int = 1000,
    num_workers: int | None = None,
    splits: list[str] | None = None,
    config_name: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    bad_images: str = "skip",
    progress: bool = True,
) -> Plan:
    """Prepare `source` into `output` (see the module's docstring); resumes an interrupted preparation. Returns the
    plan, `complete` once every shard is in `output/data`."""
    if max_side < 0 or not 1 <= quality <= 95:
        raise ValueError(f"--max_side must be >= 0 (0: no cap), got {max_side}; --quality 1..95, got {quality}.")
    if shard_size < 1:
        raise ValueError(f"--shard_size must be at least 1, got {shard_size}.")
    previous = _read_manifest(output)
    # Empty, or holding only the list of files a run skipped before it failed (a setting, say).
    if previous is None and os.path.isdir(output) and set(os.listdir(output)) - {SKIPPED_IMAGES}:
        raise FileExistsError(
            f"--output {output} is not empty and holds no preparation to resume ({PREPARE_MANIFEST}); choose an empty "
            "or new directory."
        )
    loaded = load_image_datasets(  # files whose names are not UTF-8 are skipped and listed as the source loads
        source, config_name, bad_images=BadImagePolicy(bad_images, os.path.join(output, SKIPPED_IMAGES))
    )
    wanted = splits or list(loaded)
    missing = [name for name in wanted if name not in loaded]
    if missing:
        raise ValueError(f"--source {source} has no split {missing[0]!r}; it has {list(loaded)}.")
    selected = {name: loaded[name] for name in wanted}
    plan = make_plan(selected, source, config_name, max_side, quality, shard_size, image_column, label_column)
    if previous is not None:
        if previous.settings() != plan.settings():
            changed = [k for k, v in plan.settings().items() if previous.settings().get(k) != v]
            raise ValueError(
                f"{output} was prepared with other settings ({', '.join(f'{k}={previous.settings()[k]!r}' for k in changed)}"
                f"; now {', '.join(f'{k}={plan.settings()[k]!r}' for k in changed)}). Rerun with the same arguments to "
                "resume it, or choose another --output."
            )
        if previous.complete:
            return previous
    os.makedirs(os.path.join(output, STAGING), exist_ok=True)
    _write_manifest(output, plan)  # before any shard: from here on the directory is refused until complete

    data = os.path.join(output, "data")
    done = {name for name in os.listdir(os.path.join(output, STAGING)) if name.endswith(".parquet")}
    done |= set(os.listdir(data)) if os.path.isdir(data) else set()
    shards = plan.shards()
    todo = [shard for shard in shards if shard[4] not in done]
    for name in os.listdir(os.path.join(output, STAGING)):  # left by a killed run: never complete, never loaded
        if ".partial-" in name:
            os.remove(os.path.join(output, STAGING, name))

    _SPLITS.clear()
    _SPLITS.update({name: undecoded(split, plan.image_column) for name, split in selected.items()})
    total = sum(end - start for _, _, start, end, _ in shards)
    bar = tqdm(
        total=total,
        initial=total - sum(end - start for _, _, start, end, _ in todo),
        unit="img",
        desc=f"Preparing {os.path.basename(os.path.abspath(output))}",
        disable=not progress,
    )
    tasks = [(plan, output, shard, bad_images) for shard in todo]
    workers = max(1, min(num_workers or os.cpu_count() or 1, len(tasks)))
    try:
        if workers == 1:
            results = map(_write_shard, tasks)
        else:
            pool = multiprocessing.get_context("fork").Pool(workers)
            results = pool.imap_unordered(_write_shard, tasks)
        sizes = {shard[4]: shard[3] - shard[2] for shard in todo}
        for name, _, _ in results:
            bar.update(sizes[name])
    finally:
        bar.close()
        if workers > 1:
            pool.terminate()
        _SPLITS.clear()

    os.makedirs(data, exist_ok=True)
    for _, _, _, _, name in shards:  # every shard is complete: now they become the dataset
        staged = os.path.join(output, STAGING, name)
        if os.path.exists(staged):
            os.replace(staged, os.path.join(data, name))
    if not os.listdir(os.path.join(output, STAGING)):
        os.rmdir(os.path.join(output, STAGING))
    _write_card(output, plan)
    plan.complete = True
    _write_manifest(output, plan)
    return plan


def _write_card(output: str, plan: Plan) -> None:
    counts = {}
    for split in plan.rows:
        files = sorted(f for f in os.listdir(os.path.join(output, "data")) if f.startswith(f"{split}-"))
        counts[split] = sum(pyarrow.parquet.read_metadata(os.path.join(output, "data", f)).num_rows for f in files)
    skipped = os.path.join(output, SKIPPED_IMAGES)
    cap = f"shorter side capped at {plan.max_side} pixels" if plan.max_side else "resolution kept"
    # No `configs` in the YAML header: datasets (5.2) caches a local directory's dataset by its name and data-file
    # patterns, so two prepared directories of the same name would share one cache entry (found in our tests).
    name = os.path.basename(os.path.abspath(output))
    lines = [
        "---",
        f"pretty_name: {json.dumps(name)}",
        "---",
        f"# {name}",
        "",
        f"`{plan.source}` prepared by `python -m supmae.prepare_dataset` ({cap}; JPEG quality {plan.quality} for the "
        "re-encoded images, the others kept byte for byte).",
        "",
        *[f"- {split}: {counts[split]} images ({plan.rows[split]} in the source)" for split in plan.rows],
        f"- classes: {len(plan.class_names)}" if plan.class_names else "- labels: " + str(plan.label_column),
        *([f"- unreadable images skipped: listed in {SKIPPED_IMAGES}"] if os.path.exists(skipped) else []),
        f"- prepared {time.strftime('%Y-%m-%d')}",
        "",
    ]
    with open(os.path.join(output, "README.md"), "w") as file:
        file.write("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m supmae.prepare_dataset",
        description=__doc__.split("\n\n")[0].strip(),
        epilog="Interrupted? Run the same command again: finished shards are kept.",
    )
    parser.add_argument(
        "--source", required=True, help='A Hub dataset, local dataset directory, image folder or "digits".'
    )
    parser.add_argument("--output", required=True, help="The directory to write (new, empty, or one to resume).")
    parser.add_argument(
        "--max_side",
        type=int,
        required=True,
        help="Cap on the shorter side in pixels (e.g. 256); 0 keeps every image's resolution. A lower cap decodes "
        "faster; small crops are then upsampled more (benchmarks/README.md measures both).",
    )
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of re-encoded images (default 90).")
    parser.add_argument("--shard_size", type=int, default=1000, help="Images per Parquet shard (default 1000).")
    parser.add_argument("--num_workers", type=int, default=None, help="Processes (default: all CPUs).")
    parser.add_argument("--splits", help="Comma-separated splits to prepare (default: all).")
    parser.add_argument("--config_name", help="The source dataset's configuration.")
    parser.add_argument("--image_column_name", help="Image column (default: detected).")
    parser.add_argument("--label_column_name", help="Label column (default: detected); 'none' for none.")
    parser.add_argument("--bad_images", choices=("skip", "error"), default="skip", help="Unreadable images.")
    args = parser.parse_args(argv)
    try:
        plan = prepare(
            args.source,
            args.output,
            args.max_side,
            args.quality,
            args.shard_size,
            args.num_workers,
            args.splits.split(",") if args.splits else None,
            args.config_name,
            args.image_column_name,
            args.label_column_name,
            args.bad_images,
        )
    except (ValueError, OSError) as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    print(f"Prepared {sum(plan.rows.values())} images of {plan.source} into {os.path.abspath(args.output)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
