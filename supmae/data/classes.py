# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Class spaces: ImageNet's WordNet ids, class subsets (ImageNet-A / -R's 200 classes), and a dataset's labels
mapped into the model's classes."""

import importlib.resources
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..metrics import UNLABELED
from .sources import class_names


# The 200-class evaluation sets whose class lists timm ships (0-based indices into the 1000 ImageNet classes).
CLASS_SUBSETS = {"imagenet-a": "imagenet_a_indices.txt", "imagenet-r": "imagenet_r_indices.txt"}


WORDNET_ID = re.compile(r"n\d{8}")


def _timm_info_file(name: str) -> str:
    return (importlib.resources.files("timm") / "data" / "_info" / name).read_text()


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in the standard (sorted) class order: position = class index."""
    return _timm_info_file("imagenet_synsets.txt").split()


def _parse_class(token, synset_index: dict[str, int] | None) -> tuple[int, dict[str, int] | None]:
    """One class index from an int or an int / WordNet id string; builds the synset lookup on first need."""
    if isinstance(token, str) and WORDNET_ID.fullmatch(token.strip()):
        if synset_index is None:
            synset_index = {synset: i for i, synset in enumerate(imagenet_synsets())}
        if token.strip() not in synset_index:
            raise ValueError(f"WordNet id {token.strip()} is not one of the 1000 ImageNet classes.")
        return synset_index[token.strip()], synset_index
    if isinstance(token, bool) or not isinstance(token, (int, str)):
        raise ValueError(f"Class {token!r} is neither a class index nor a WordNet id (n01440764 style).")
    try:
        return int(token), synset_index
    except ValueError:
        raise ValueError(f"Class {token!r} is neither a class index nor a WordNet id (n01440764 style).") from None


def load_class_subset(spec: str, num_labels: int = 1000) -> list[int]:
    """
    The model class indices a dataset's classes correspond to, in the order given (position i of the list is
    class i of a dataset labelled by subset position).

    Args:
        spec: one of
            - a name in `CLASS_SUBSETS` ("imagenet-a", "imagenet-r": timm's 200-class lists);
            - a path to a .json file holding a list, or a text file of entries separated by whitespace or commas;
            - an inline comma-separated list ("1,5,9").
            Entries are class indices or WordNet ids (n01440764 style, mapped through ImageNet's sorted order).
        num_labels: the model's number of classes; every index must lie in [0, num_labels).

    Returns:
        list of distinct class indices.
    """
    if spec.lower() in CLASS_SUBSETS:
        tokens = _timm_info_file(CLASS_SUBSETS[spec.lower()]).split()
    elif os.path.isfile(spec):
        text = Path(spec).read_text()
        if spec.lower().endswith(".json"):
            tokens = json.loads(text)
            if not isinstance(tokens, list):
                raise ValueError(f"{spec} must hold a JSON list of class indices or WordNet ids.")
        else:
            tokens = text.replace(",", " ").split()
    elif all(WORDNET_ID.fullmatch(t.strip()) or re.fullmatch(r"-?\d+", t.strip()) for t in spec.split(",")):
        tokens = spec.split(",")
    else:
        raise ValueError(
            f"Unknown class subset {spec!r}: not one of the names {sorted(CLASS_SUBSETS)}, an existing file, or a "
            "comma-separated list of class indices."
        )
    if not tokens:
        raise ValueError(f"The class subset {spec!r} is empty.")

    indices, synset_index = [], None
    for token in tokens:
        index, synset_index = _parse_class(token, synset_index)
        indices.append(index)
    if (spec.lower() in CLASS_SUBSETS or synset_index is not None) and num_labels != 1000:
        raise ValueError(f"{spec!r} names ImageNet-1k classes, but the model has num_labels={num_labels}.")
    bad = [i for i in indices if not 0 <= i < num_labels]
    if bad:
        raise ValueError(f"Class index {bad[0]} in {spec!r} is outside [0, {num_labels}).")
    seen = set()
    for i in indices:
        if i in seen:
            raise ValueError(f"Class index {i} appears more than once in {spec!r}.")
        seen.add(i)
    return indices


def labels_to_model_space(labels, class_subset: Sequence[int], labels_in_subset: bool) -> list[int]:
    """
    A dataset's labels as model class indices. `-100` (unlabelled) passes through unchanged.

    Args:
        labels: (N,) labels.
        class_subset: the model class indices of the dataset's classes (from `load_class_subset`).
        labels_in_subset: True if labels are positions in `class_subset` (0..len-1), mapped to
            `class_subset[label]`; False if they are already model indices, checked to be members of the subset.

    Returns:
        (N,) list of model class indices.
    """
    labels = [int(label) for label in labels]
    if labels_in_subset:
        for label in labels:
            if label != UNLABELED and not 0 <= label < len(class_subset):
                raise ValueError(f"Label {label} is not a position in the {len(class_subset)}-class subset.")
        return [label if label == UNLABELED else int(class_subset[label]) for label in labels]
    members = set(int(c) for c in class_subset)
    for label in labels:
        if label != UNLABELED and label not in members:
            raise ValueError(f"Label {label} is not in the class subset; are the labels subset positions?")
    return labels


def label_map_for(dataset, label_column, config, subset=None, labels_in_subset=False) -> dict[int, int] | None:
    """How an evaluation set's labels become the model's class indices: by class name when both sides have names in
    a different order, then through a class subset; None when they already agree. (Streamed sets: not checked.)"""
    if label_column is None or not hasattr(dataset, "__len__"):
        return None
    mapping = {label: label for label in sorted(set(dataset[label_column]))}
    names = class_names(dataset, label_column)
    model_names = [config.id2label[i] for i in range(config.num_labels)]
    if names is not None and not labels_in_subset and names != model_names[: len(names)]:
        missing = [name for name in names if name not in model_names]
        if missing:
            raise ValueError(f"Classes {missing[:10]} of the evaluation set are not among the model's classes.")
        mapping = {label: model_names.index(names[label]) for label in mapping}
    if subset is not None:
        mapping = dict(
            zip(mapping, labels_to_model_space(list(mapping.values()), subset, labels_in_subset), strict=True)
        )
    return None if all(key == value for key, value in mapping.items()) else mapping
