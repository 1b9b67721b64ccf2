# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Collators: items into batches, labels checked against the model's classes; mixup / cutmix; multi-label targets."""

import contextlib
import math

import torch

from .transforms import seeded_global_rngs


class ImageCollator:
    """Stacks items into `{"pixel_values": (B, 3, S, S), "labels": (B,)}` and checks labels against `num_labels`
    (-100, an unlabeled image, is allowed). Evaluation items carry `scored` (False: an unreadable image's row,
    `TransformedImageDataset(substitute=False)`), which becomes a `(B,)` bool `scored`."""

    def __init__(self, num_labels: int | None = None):
        self.num_labels = num_labels

    def __call__(self, items: list[dict]) -> dict:
        batch = {"pixel_values": torch.stack([torch.as_tensor(item["pixel_values"]) for item in items])}
        return self.add_scored(self.add_labels(batch, items), items)

    @staticmethod
    def add_scored(batch: dict, items: list[dict]) -> dict:
        """`batch` with the items' `scored` flags `(B,)` bool, when they have them."""
        if "scored" in items[0]:
            batch["scored"] = torch.tensor([bool(item["scored"]) for item in items])
        return batch

    def add_labels(self, batch: dict, items: list[dict]) -> dict:
        """`batch` with the items' labels `(B,)`, checked, when they have any."""
        if "labels" in items[0]:
            labels = torch.tensor([-100 if item["labels"] is None else int(item["labels"]) for item in items])
            bad = labels[(labels != -100) & ((labels < 0) | (labels >= (self.num_labels or math.inf)))]
            if len(bad):
                raise ValueError(
                    f"Label {bad[0].item()} is outside the model's {self.num_labels} classes (0..{self.num_labels - 1}); "
                    "set num_labels (e.g. --config_overrides num_labels=N) to cover the dataset's labels."
                )
            batch["labels"] = labels
        return batch


class MixupCollator(ImageCollator):
    """`ImageCollator`, then timm's Mixup / CutMix with label smoothing: labels become soft `(B, num_labels)`. The
    batch size must be even. With items that carry a `sample_seed` (`TransformedImageDataset(sample_seeds=True)`),
    the mixing is drawn from the first item's: the same for the same batch, also after resuming."""

    def __init__(self, num_labels: int, mixup: float = 0.8, cutmix: float = 1.0, label_smoothing: float = 0.1):
        from timm.data import Mixup

        super().__init__(num_labels)
        self.mix = Mixup(
            mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_labels
        )

    def __call__(self, items: list[dict]) -> dict:
        batch = super().__call__(items)
        seed = items[0].get("sample_seed")
        with seeded_global_rngs(seed) if seed is not None else contextlib.nullcontext():
            batch["pixel_values"], batch["labels"] = self.mix(batch["pixel_values"], batch["labels"])
        return batch


class TransferCollator(ImageCollator):
    """`ImageCollator` for single-label data; multi-label items (lists of classes, or one class) become multi-hot
    float targets `(B, num_labels)`, an unscored row's all -100."""

    def __init__(self, num_labels: int, multi_label: bool = False):
        super().__init__(num_labels)
        self.multi_label = multi_label

    def __call__(self, items: list[dict]) -> dict:
        if not self.multi_label:
            return super().__call__(items)
        batch = super().__call__([{"pixel_values": item["pixel_values"]} for item in items])
        batch["labels"] = torch.stack(
            [
                multi_hot(item["labels"], self.num_labels)
                if item.get("scored", True)
                else torch.full((self.num_labels,), -100.0)
                for item in items
            ]
        )
        return self.add_scored(batch, items)


def multi_hot(labels, num_labels: int) -> torch.Tensor:
    """A class index or a list of them -> a `(num_labels,)` float {0, 1} vector."""
    target = torch.zeros(num_labels)
    target[torch.as_tensor(labels if isinstance(labels, (list, tuple)) else [labels], dtype=torch.long)] = 1.0
    return target
