# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Segmentation pictures: a fixed palette, and image | ground truth | prediction rows."""

import logging

import numpy as np
import PIL.Image

from ..data.segmentation import UNLABELED_PIXEL
from ..training.segmentation import predict_segmentation


logger = logging.getLogger(__name__)


def palette(num_labels: int) -> np.ndarray:
    """A fixed color per class `(K + 1, 3)` uint8, well apart for small K; the last row (ignored pixels) is black."""
    hues = (np.arange(num_labels) * 0.618033988749895) % 1.0  # the golden ratio spreads consecutive hues
    values = np.where(np.arange(num_labels) % 2, 0.75, 1.0)
    rgb = np.stack([_hsv_to_rgb(h, 0.85, v) for h, v in zip(hues, values, strict=True)] + [(0.0, 0.0, 0.0)])
    return (rgb * 255).round().astype(np.uint8)


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> tuple[float, float, float]:
    sector, fraction = divmod(hue * 6, 1)
    p, q, t = value * (1 - saturation), value * (1 - saturation * fraction), value * (1 - saturation * (1 - fraction))
    return [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)][int(sector) % 6]


def colorize(labels: np.ndarray, num_labels: int) -> PIL.Image.Image:
    """`(H, W)` class indices (255 = ignored, drawn black) as an RGB picture."""
    labels = np.asarray(labels).astype(np.int64)
    return PIL.Image.fromarray(palette(num_labels)[np.where(labels == UNLABELED_PIXEL, num_labels, labels)])


def segmentation_figure(
    images: list[PIL.Image.Image], references: list, predictions: list, num_labels: int, scale: int = 1, gap: int = 4
) -> PIL.Image.Image:
    """One row per image: the image | its annotation | the prediction, each enlarged `scale` times (nearest)."""
    tiles = [
        [image.convert("RGB"), colorize(r, num_labels), colorize(p, num_labels)]
        for image, r, p in zip(images, references, predictions, strict=True)
    ]
    width = max(tile.width for row in tiles for tile in row) * scale
    height = max(tile.height for row in tiles for tile in row) * scale
    figure = PIL.Image.new("RGB", (3 * width + 4 * gap, len(tiles) * (height + gap) + gap), "white")
    for row, row_tiles in enumerate(tiles):
        for column, tile in enumerate(row_tiles):
            tile = tile.resize((tile.width * scale, tile.height * scale), PIL.Image.NEAREST)
            figure.paste(tile, (gap + column * (width + gap), gap + row * (height + gap)))
    return figure


def prediction_figure(model, dataset, crop_size, stride, device, count: int = 6) -> PIL.Image.Image:
    """`segmentation_figure` of the first `count` readable items of a `SegmentationDataset` (evaluation transform):
    each image, its annotation and `model`'s sliding-window prediction, enlarged 4 times. The files are read under
    the dataset's `bad_images` policy: an unreadable pair is left out (and said so), or, with `error`, named in a
    BadImageError."""
    images, references, predictions, left_out = [], [], [], 0
    model.eval()
    for index in range(len(dataset)):
        pair, item = dataset.read(index), dataset[index]
        if pair is None or item is None:
            left_out += 1
            continue
        predictions.append(
            predict_segmentation(model, item["pixel_values"][None].to(device), item["labels"].shape, crop_size, stride)
        )
        images.append(pair[0])
        references.append(item["labels"].numpy())
        if len(images) == count:
            break
    if left_out:  # said here too: the policy names a file only once per run
        logger.warning(f"The segmentation figure leaves out {left_out} unreadable pairs (listed as skipped images).")
    return segmentation_figure(images, references, predictions, model.config.num_labels, scale=4)
