# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Few-shot draws as ELEVATER's sampler makes them: K images per class (or all of a smaller class) by a seed, and
the held-out part that picks the hyper-parameters."""

import math
from collections.abc import Sequence

import numpy as np

from ..metrics import UNLABELED


def few_shot_indices(labels: Sequence[int], shots: int, seed: int) -> list[int]:
    """
    A few-shot training subset: `shots` samples of every class in `labels` (-100 excluded), drawn uniformly without
    replacement with `np.random.default_rng(seed)`, classes visited in increasing order. A class with fewer samples
    gives all of them, as ELEVATER's sampler does (vision-datasets' `sample_few_shot_subset`).

    Args:
        labels: (N,) class labels.
        shots: samples per class, >= 1.
        seed: the draw's seed; the same seed gives the same subset.

    Returns:
        sorted list of sample indices into `labels`: min(shots, the class's samples) of each class.
    """
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}.")
    labels = np.asarray(labels).reshape(-1)
    classes, counts = np.unique(labels[labels != UNLABELED], return_counts=True)
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(labels == cls), size=min(shots, count), replace=False)
        for cls, count in zip(classes, counts, strict=True)
    ]
    return sorted(int(i) for i in np.concatenate(chosen)) if chosen else []


def multilabel_few_shot_indices(label_sets: list[list[int]], shots: int, seed: int) -> list[int]:
    """
    A few-shot set of a multi-label dataset: classes visited in increasing order, each topped up to at least `shots`
    chosen images containing it (images already chosen for earlier classes count; a class in fewer images gets all
    of them), drawn with `np.random.default_rng(seed)`.

    Returns:
        sorted sample indices.
    """
    rng, chosen = np.random.default_rng(seed), set()
    for cls in sorted({c for labels in label_sets for c in labels}):
        holders = [i for i, labels in enumerate(label_sets) if cls in labels]
        candidates = [i for i in holders if i not in chosen]
        needed = min(shots - sum(i in chosen for i in holders), len(candidates))
        if needed > 0:
            chosen.update(int(i) for i in rng.choice(candidates, size=needed, replace=False))
    return sorted(chosen)


def held_out_count(count: int, fraction: float) -> int:
    """ELEVATER's hold-out of `count` images: ceil(fraction x count), at most count - 1 (one is left to train on)."""
    return min(math.ceil(fraction * count - 1e-9), count - 1)


def few_shot_split(labels, shots: int, seed: int, holdout_fraction: float = 0.2) -> tuple[list[int], list[int]]:
    """
    ELEVATER's few-shot set and its held-out part: `shots` images per class drawn by `seed` (all of a class's images
    where it has fewer), then `holdout_fraction` of them set aside to choose the hyper-parameters: per class for
    single-label data, ceil(fraction x the class's images) as ELEVATER's `train_val_dataset` does, but always leaving
    one to train on; over the whole set for multi-label data.

    Args:
        labels: (N,) class indices, or N lists of classes (multi-label).
        shots: images per class, at least 2 (one must be held out).
        seed: the draw's seed.

    Returns:
        (train indices, held-out indices), sorted and disjoint; together they are the few-shot set.
    """
    if shots < 2:
        raise ValueError(f"shots={shots}: at least 2 per class are needed to hold one out for the grid search.")
    rng = np.random.default_rng([seed, shots])
    multi_label = len(labels) > 0 and isinstance(labels[0], (list, tuple))
    if multi_label:
        chosen = np.array(multilabel_few_shot_indices(labels, shots, seed))
        held = rng.choice(chosen, size=held_out_count(len(chosen), holdout_fraction), replace=False)
    else:
        chosen = np.array(few_shot_indices(labels, shots, seed))
        by_class = {}
        for index in chosen:
            by_class.setdefault(int(labels[index]), []).append(index)
        held = np.concatenate(
            [
                rng.choice(members, size=held_out_count(len(members), holdout_fraction), replace=False)
                for members in by_class.values()
            ]
        )
    held = set(int(i) for i in held)
    return sorted(int(i) for i in chosen if int(i) not in held), sorted(held)
