# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Evaluation sets of a classifier: the validation split and `--eval_datasets` entries, with the evaluation
transform and labels in the model's class space."""

from ..data.classes import label_map_for, load_class_subset
from ..data.datasets import RelabeledDataset, transform_streaming_dataset
from ..data.sources import load_labelled_split
from ..data.transforms import EvalTransform
from ..training.files import check_path_name


def parse_eval_spec(spec: str) -> dict:
    """`NAME=SOURCE,key=value,...` -> {"name", "source", "split", "subset", "labels_in_subset", ...}. NAME becomes
    the report's file name (`eval_NAME.json`, `corrupted_NAME.json`): a single file name (`check_path_name`)."""
    head, *options = spec.split(",")
    name, _, source = head.partition("=")
    if not name or not source:
        raise ValueError(f"--eval_datasets entry {spec!r} must start with NAME=SOURCE.")
    check_path_name(name, f"--eval_datasets entry {spec!r}: the name")
    parsed = {"name": name, "source": source}
    allowed = {"split", "subset", "labels_in_subset", "image_column", "label_column", "config"}
    key = None
    for option in options:
        if "=" not in option and key == "subset":  # an inline class list: subset=3,7,11
            parsed[key] += "," + option
            continue
        key, _, value = option.partition("=")
        if key not in allowed:
            raise ValueError(f"Unknown option {key!r} in --eval_datasets entry {spec!r}; allowed: {sorted(allowed)}.")
        parsed[key] = value.lower() in ("1", "true", "yes") if key == "labels_in_subset" else value
    return parsed


def evaluation_set(dataset, image_column, label_column, image_processor, label_map=None, bad_images=None):
    """An evaluation set with the evaluation transform, labels in the model's class space. No image is scored twice:
    an unreadable one is an unscored row of a map-style set (`substitute=False`), and left out of a stream."""
    transform = EvalTransform(image_processor)
    if not hasattr(dataset, "__len__"):  # streamed
        return transform_streaming_dataset(dataset, image_column, label_column, transform, bad_images)
    return RelabeledDataset(
        dataset, image_column, label_column, transform, bad_images=bad_images, label_map=label_map, substitute=False
    )


def evaluation_sets(
    args, data_args, data, config, image_processor, bad_images
) -> list[tuple[str, object, list[int] | None]]:
    """(name, dataset, class subset) for the validation split and every --eval_datasets entry."""
    sets = []
    if data is not None and data.validation is not None:
        subset = load_class_subset(args.class_subset, config.num_labels) if args.class_subset else None
        label_map = label_map_for(data.validation, data.label_column, config, subset, args.labels_in_subset)
        dataset = evaluation_set(
            data.validation, data.image_column, data.label_column, image_processor, label_map, bad_images
        )
        sets.append(("validation", dataset, subset))
    for spec in map(parse_eval_spec, args.eval_datasets):
        dataset, image_column, label_column = load_labelled_split(
            spec["source"],
            spec.get("split"),
            spec.get("config"),
            data_args.cache_dir,
            spec.get("image_column"),
            spec.get("label_column"),
            what=f"The evaluation set {spec['name']!r}",
            bad_images=bad_images,
        )
        subset = load_class_subset(spec["subset"], config.num_labels) if spec.get("subset") else None
        label_map = label_map_for(dataset, label_column, config, subset, spec.get("labels_in_subset", False))
        sets.append(
            (
                spec["name"],
                evaluation_set(dataset, image_column, label_column, image_processor, label_map, bad_images),
                subset,
            )
        )
    return sets
