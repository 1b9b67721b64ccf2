# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Datasets that hand the Trainer transformed items: map-style with per-sample seeded augmentation, streamed, and
cached features."""

import random

import datasets
import PIL.Image
import torch

from ..metrics import UNLABELED
from .images import IMAGE_ERRORS, MAX_BAD_IMAGES_IN_A_ROW, BadImageError, BadImagePolicy, image_name, undecoded
from .transforms import apply_transform


def _sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    # A generator of its own per (seed, epoch, sample), independent of workers and processes (Mersenne Twister's
    # seeding mixes the integer's bits).
    return random.Random((seed * 1_000_003 + epoch) * 2**40 + index)


class TransformedImageDataset(torch.utils.data.Dataset):
    """
    A map-style image dataset as `{"pixel_values": (3, S, S), "labels": int}` items. The augmentation of item `i` in
    epoch `e` draws from a `random.Random` seeded with `(seed, e, i)`: the same crops whatever the number of dataloader
    workers or processes, and after resuming from a checkpoint. The Trainer calls `set_epoch`.

    An unreadable image goes to `bad_images` (skipped and logged by default). In training the next readable one takes
    its place, so batches keep their size. In evaluation (`substitute=False`) no image is scored twice: the item of an
    unreadable one is an unscored row, `{"pixel_values": zeros, "labels": -100, "scored": False}`, which the metrics
    leave out (every item then carries `scored`). A row per item keeps the Trainer's multi-process prediction loop
    exact: it pads the last batches with repeated items and cuts them off again by position after gathering.

    With `sample_seeds`, each item also carries a `sample_seed` from (seed, epoch, index), for a collator's own draws
    (`MixupCollator`).
    """

    def __init__(
        self,
        dataset,
        image_column: str,
        label_column: str | None,
        transform,
        seed: int = 0,
        bad_images=None,
        sample_seeds: bool = False,
        substitute: bool = True,
    ):
        self.dataset = undecoded(dataset, image_column)
        self.image_column, self.label_column = image_column, label_column
        self.transform, self.seed, self.epoch = transform, seed, 0
        self.bad_images = bad_images or BadImagePolicy()
        self.sample_seeds, self.substitute = sample_seeds, substitute
        self._placeholder, self._unreadable_in_a_row = None, 0  # evaluation's unscored rows (per worker)

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        for offset in range(MAX_BAD_IMAGES_IN_A_ROW):
            position = (int(index) + offset) % len(self.dataset)
            example = self.dataset[position]
            rng = _sample_rng(self.seed, self.epoch, int(index))  # afresh: a failed try may have drawn from it
            try:
                pixels = apply_transform(self.transform, example[self.image_column], rng)
            except IMAGE_ERRORS as error:
                self.bad_images.handle(image_name(example[self.image_column], position), error)
                if not self.substitute:
                    return self.unscored_item(index)
                continue
            item = {"pixel_values": pixels}
            if self.label_column is not None:
                item["labels"] = example[self.label_column]
            if self.sample_seeds:
                item["sample_seed"] = random.Random(f"collate-{self.seed}-{self.epoch}-{index}").getrandbits(32)
            if not self.substitute:
                item["scored"], self._unreadable_in_a_row = True, 0
            return item
        raise BadImageError(
            f"Items {index} to {position} are all unreadable images ({MAX_BAD_IMAGES_IN_A_ROW} in a row): is "
            f"{self.image_column!r} the image column, and are the files images?"
        )

    def unscored_item(self, index: int) -> dict:
        """An unreadable image's row in evaluation: black pixels of the transform's output shape, label -100 (which
        the losses and metrics skip), `scored` False."""
        self._unreadable_in_a_row += 1
        if self._unreadable_in_a_row >= MAX_BAD_IMAGES_IN_A_ROW:
            raise BadImageError(
                f"Items up to {index} are all unreadable images ({MAX_BAD_IMAGES_IN_A_ROW} in a row): is "
                f"{self.image_column!r} the image column, and are the files images?"
            )
        if self._placeholder is None:  # the shape of whatever the transform makes of an image
            blank = PIL.Image.new("RGB", (1, 1))
            self._placeholder = torch.zeros_like(apply_transform(self.transform, blank, random.Random(0)))
        item = {"pixel_values": self._placeholder.clone(), "scored": False}
        if self.label_column is not None:
            item["labels"] = UNLABELED
        if self.sample_seeds:
            item["sample_seed"] = 0
        return item


def transform_streaming_dataset(
    dataset: datasets.IterableDataset, image_column, label_column, transform, bad_images=None
):
    """The streaming counterpart of `TransformedImageDataset`, kept a `datasets.IterableDataset` so that accelerate
    gives each process its own shards. Its augmentation draws from the (per-worker, per-process) global RNG.
    Unreadable images go to `bad_images` and are left out of the stream."""
    bad_images = bad_images or BadImagePolicy()
    in_a_row = 0

    def apply(example):
        nonlocal in_a_row
        value = example[image_column]
        try:
            pixels = apply_transform(transform, value, None)
            in_a_row = 0
        except IMAGE_ERRORS as error:
            bad_images.handle(image_name(value), error)
            pixels, in_a_row = None, in_a_row + 1
            if in_a_row >= MAX_BAD_IMAGES_IN_A_ROW:
                raise BadImageError(
                    f"{in_a_row} unreadable images in a row in the stream: is {image_column!r} the image column, "
                    "and are the files images?"
                ) from error
        item = {"pixel_values": pixels}
        if label_column is not None:
            item["labels"] = example[label_column]
        return item

    dataset = undecoded(dataset, image_column)
    mapped = dataset.map(apply, remove_columns=list(dataset.column_names or []))
    return mapped.filter(lambda example: example["pixel_values"] is not None)


class RelabeledDataset(TransformedImageDataset):
    def __init__(self, *args, label_map=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_map = label_map

    def __getitem__(self, index):
        item = super().__getitem__(index)
        if self.label_map is not None and "labels" in item and item.get("scored", True):
            item["labels"] = self.label_map[item["labels"]]
        return item


class FeatureDataset(torch.utils.data.Dataset):
    """Cached `{"features": (D,), "labels": int}` items."""

    def __init__(self, cache: dict[str, torch.Tensor]):
        self.features, self.labels = cache["features"], cache["labels"]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"features": self.features[index], "labels": self.labels[index]}
