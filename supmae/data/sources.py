# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Where images come from: a Hub dataset, a local dataset directory, image folders or the built-in digits; their
columns, splits and classes."""

import json
import os
from dataclasses import dataclass

import datasets
import numpy as np
import PIL.Image
import PIL.ImageOps
from datasets.data_files import DataFilesDict, DataFilesList, get_data_patterns

from .images import BadImagePolicy


IMAGE_COLUMN_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp", "pixel_values")


LABEL_COLUMN_NAMES = ("label", "labels", "cls", "class", "target")


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


DATA_FILE_EXTENSIONS = (".parquet", ".arrow")  # a local dataset directory (e.g. prepared shards) holds these


DIGITS = "digits"  # the name of the built-in dataset: scikit-learn's 8x8 digits, no download


PREPARE_MANIFEST = ".prepare_dataset.json"  # supmae.prepare_dataset's record; "complete" once its shards are in place


def load_image_datasets(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_dir: str | None = None,
    validation_dir: str | None = None,
    streaming: bool = False,
    cache_dir: str | None = None,
    trust_remote_code: bool = False,
    bad_images: BadImagePolicy | None = None,
) -> datasets.DatasetDict | datasets.IterableDatasetDict:
    """
    The splits of a Hub dataset or local dataset directory (`dataset_name`), of image folders (`train_dir`,
    `validation_dir`: one subfolder per class gives labels, images directly inside give none), or of the built-in
    `"digits"`. Fails with a message naming the path or the splits that exist. A local file whose name is not valid
    UTF-8 goes to `bad_images` (skipped and listed by default) and the rest loads.
    """
    if dataset_name is not None and (train_dir or validation_dir):
        raise ValueError("Give either `dataset_name` or `train_dir`/`validation_dir`, not both.")
    check_prepared(dataset_name)
    if dataset_name == DIGITS:
        splits = digits_datasets()
        return splits.to_iterable_dataset() if streaming else splits
    if dataset_name is None:
        if train_dir is None:
            raise ValueError("No training data: give `dataset_name` (a Hub dataset or a local path) or `train_dir`.")
        data_files = {}
        for split, directory in (("train", train_dir), ("validation", validation_dir)):
            if directory is None:
                continue
            if not os.path.isdir(directory):
                raise FileNotFoundError(f"The {split} folder {directory!r} does not exist or is not a directory.")
            if not _holds_files(directory):
                raise ValueError(
                    f"The {split} folder {directory!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})."
                )
            data_files[split] = os.path.join(os.path.abspath(directory), "**")
        if skip_unencodable_names([train_dir, validation_dir], bad_images):
            loaded = image_folder_without_unencodable_names(data_files, None, streaming, cache_dir)
        else:
            loaded = datasets.load_dataset(
                "imagefolder", data_files=data_files, streaming=streaming, cache_dir=cache_dir
            )
    elif _local_image_folder(dataset_name) and skip_unencodable_names([dataset_name], bad_images):
        base_path = os.path.abspath(dataset_name)
        loaded = image_folder_without_unencodable_names(get_data_patterns(base_path), base_path, streaming, cache_dir)
    else:
        loaded = datasets.load_dataset(
            dataset_name,
            dataset_config_name,
            streaming=streaming,
            cache_dir=cache_dir,
            **({"trust_remote_code": True} if trust_remote_code else {}),
        )
    if "train" not in loaded:
        raise ValueError(f"The dataset {dataset_name or train_dir!r} has no 'train' split; it has {list(loaded)}.")
    if not streaming:
        for split, dataset in loaded.items():
            if len(dataset) == 0:
                raise ValueError(f"The {split} split of {dataset_name or train_dir!r} is empty.")
    return loaded


def load_image_split(
    source: str, split: str | None = None, config_name: str | None = None, cache_dir=None, bad_images=None
):
    """One split of a Hub dataset, a local dataset directory or image folder, or `"digits"`, loading only that split.
    Without `split`: "validation" if the source has one, else its only split. A local file whose name is not valid
    UTF-8 goes to `bad_images` (skipped and listed by default)."""
    check_prepared(source)
    if source == DIGITS:
        splits = digits_datasets()
    elif os.path.isdir(source) and not _holds_files(source) and not _holds_files(source, DATA_FILE_EXTENSIONS):
        raise ValueError(f"{source!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)}).")
    else:
        names = datasets.get_dataset_split_names(source, config_name)
        if split is None:
            split = "validation" if "validation" in names or len(names) > 1 else names[0]
        if split not in names:
            raise ValueError(f"{source!r} has no split {split!r}; it has {names}.")
        if _local_image_folder(source) and skip_unencodable_names([source], bad_images):
            base_path = os.path.abspath(source)
            patterns = {name: value for name, value in get_data_patterns(base_path).items() if name == split}
            return image_folder_without_unencodable_names(patterns, base_path, False, cache_dir)[split]
        return datasets.load_dataset(source, config_name, split=split, cache_dir=cache_dir)
    split = split or "validation"
    if split not in splits:
        raise ValueError(f"{source!r} has no split {split!r}; it has {list(splits)}.")
    return splits[split]


def check_prepared(path: str | None) -> None:
    """Refuse a directory that `python -m supmae.prepare_dataset` has not finished writing, naming the command that
    finishes it (the finished shards are kept)."""
    manifest = os.path.join(path, PREPARE_MANIFEST) if path and os.path.isdir(path) else None
    if manifest is None or not os.path.isfile(manifest):
        return
    with open(manifest) as file:
        plan = json.load(file)
    if not plan.get("complete"):
        raise ValueError(
            f"{path} is a dataset whose preparation has not finished. Run the same command again to finish it: "
            f"python -m supmae.prepare_dataset --source {plan.get('source')} --output {path} --max_side "
            f"{plan.get('max_side')} --quality {plan.get('quality')} --shard_size {plan.get('shard_size')}"
        )


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, kept by Python as surrogate escapes
        return False
    return True


def _local_image_folder(path: str | None) -> bool:
    """A local directory of image files (not of Parquet or Arrow data files): datasets reads it as an imagefolder."""
    return bool(path) and os.path.isdir(path) and not _holds_files(path, DATA_FILE_EXTENSIONS)


def skip_unencodable_names(directories, bad_images: BadImagePolicy | None) -> bool:
    """Hand every file under `directories` (None entries ignored) whose path is not valid UTF-8 to `bad_images`
    (skipped and listed by default, `error` stops); True if there was one. datasets cannot store such a path: one of
    them fails the whole folder's load. (Hidden files and folders, which datasets leaves out, are not looked at.)"""
    bad_images = bad_images or BadImagePolicy()
    found = False
    for directory in filter(None, directories):
        for root, folders, names in os.walk(directory, followlinks=True):
            folders[:] = [name for name in folders if not name.startswith((".", "__"))]
            for name in names:
                path = os.path.join(root, name)
                if not name.startswith((".", "__")) and not _utf8(path):
                    error = UnicodeError("its name is not valid UTF-8, which datasets cannot store: rename the file")
                    bad_images.handle(path, error)
                    found = True
    return found


def image_folder_without_unencodable_names(patterns: dict, base_path: str | None, streaming: bool, cache_dir=None):
    """datasets' imagefolder on the files `patterns` ({split: pattern or patterns}) resolve to (as `load_dataset`
    resolves them, relative to `base_path`), less those whose paths are not valid UTF-8. The splits, or streamed
    splits."""
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    kept = {}
    patterns = {split: [value] if isinstance(value, str) else value for split, value in patterns.items()}
    for split, files in DataFilesDict.from_patterns(patterns, base_path=base_path).items():
        keep = [_utf8(path) for path in files]
        metadata = files.origin_metadata  # one entry per file for local files: their modification times
        if len(metadata) == len(files):
            metadata = [entry for entry, k in zip(metadata, keep, strict=True) if k]
        kept[split] = DataFilesList([path for path, k in zip(files, keep, strict=True) if k], metadata)
    builder = ImageFolder(cache_dir=cache_dir, data_files=DataFilesDict(kept))
    if streaming:
        return builder.as_streaming_dataset()
    builder.download_and_prepare()
    return builder.as_dataset()


def _holds_files(directory: str, extensions=IMAGE_EXTENSIONS) -> bool:
    return any(
        name.lower().endswith(extensions) for _, _, names in os.walk(directory, followlinks=True) for name in names
    )


def digits_datasets(seed: int = 0) -> datasets.DatasetDict:
    """scikit-learn's 1797 8x8 gray digits (shipped inside the package, no download) as `image` (PIL) and `label`
    (ClassLabel "0".."9"), split stratified into train (1259), validation (179) and test (359)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
    rng = np.random.default_rng(seed)
    test, validation, train = [], [], []
    for label in range(10):  # stratified: 20% test, 10% validation per class
        indices = rng.permutation(np.flatnonzero(digits.target == label))
        n_test, n_validation = round(0.2 * len(indices)), round(0.1 * len(indices))
        test += indices[:n_test].tolist()
        validation += indices[n_test : n_test + n_validation].tolist()
        train += indices[n_test + n_validation :].tolist()
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )

    def split(indices):
        indices = sorted(indices)
        images = [PIL.Image.fromarray(pixels[i], mode="L") for i in indices]
        return datasets.Dataset.from_dict({"image": images, "label": digits.target[indices].tolist()}, features)

    return datasets.DatasetDict({"train": split(train), "validation": split(validation), "test": split(test)})


def _find_column(dataset, name: str | None, argument: str, feature_type, usual_names) -> str | None:
    """`name` if it is a column, else the first column of `feature_type` or with one of `usual_names`."""
    columns = list(dataset.column_names or (dataset.features or {}))
    if name is not None:
        if name not in columns:
            raise ValueError(f"`{argument}` {name!r} is not a column of the dataset; its columns are {columns}.")
        return name
    features = dataset.features or {}
    found = [c for c in columns if isinstance(features.get(c), feature_type)] + [
        c for c in usual_names if c in columns
    ]
    return found[0] if found else None


def find_image_column(dataset, name: str | None = None) -> str:
    """The column holding the images: `name` if given, else the first `Image` feature or a usual name."""
    column = _find_column(dataset, name, "image_column_name", datasets.Image, IMAGE_COLUMN_NAMES)
    if column is None:
        columns = list(dataset.column_names or (dataset.features or {}))
        raise ValueError(f"No image column found among {columns}; name it with `image_column_name`.")
    return column


def find_label_column(dataset, name: str | None = None) -> str | None:
    """The column holding class indices: `name` if given (`"none"` for no labels, i.e. plain MAE), else the first
    `ClassLabel` feature or a usual name; None when there is none."""
    if name is not None and name.lower() == "none":
        return None
    return _find_column(dataset, name, "label_column_name", datasets.ClassLabel, LABEL_COLUMN_NAMES)


def class_names(dataset, label_column: str | None) -> list[str] | None:
    """The class names of a ClassLabel column, else None."""
    feature = (dataset.features or {}).get(label_column) if label_column else None
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def load_labelled_split(
    source: str,
    split=None,
    config_name=None,
    cache_dir=None,
    image_column=None,
    label_column=None,
    what: str | None = None,
    bad_images=None,
):
    """One split (`load_image_split`) with its image and label columns (detected unless named): `(dataset,
    image_column, label_column)`. A split without labels is an error naming `what` (default: the source)."""
    dataset = load_image_split(source, split, config_name, cache_dir, bad_images)
    found = find_label_column(dataset, label_column)
    if found is None:
        raise ValueError(f"{what or source}: no label column (columns: {dataset.column_names}); name it.")
    return dataset, find_image_column(dataset, image_column), found


@dataclass
class PreparedData:
    splits: dict  # every split the source has (e.g. the digits' "test")
    train: object
    validation: object | None
    image_column: str
    label_column: str | None
    class_names: list[str] | None


def prepare_data(data_args, seed: int, bad_images: BadImagePolicy | None = None) -> PreparedData:
    """The splits `data_args` (the tasks' `DataArguments`) name: loaded, their columns found, a validation split held
    out if there is none, their sizes capped. Files that cannot be loaded at all go to `bad_images`."""
    splits = load_image_datasets(
        data_args.dataset_name,
        data_args.dataset_config_name,
        data_args.train_dir,
        data_args.validation_dir,
        streaming=data_args.streaming,
        cache_dir=data_args.cache_dir,
        trust_remote_code=data_args.trust_remote_code,
        bad_images=bad_images,
    )
    train = splits["train"]
    image_column = find_image_column(train, data_args.image_column_name)
    label_column = find_label_column(train, data_args.label_column_name)
    validation = splits.get("validation")
    if validation is None and not data_args.streaming and data_args.train_val_split > 0:
        held_out = train.train_test_split(data_args.train_val_split, seed=seed)
        train, validation = held_out["train"], held_out["test"]
    train = _cap(train, data_args.max_train_samples, data_args.streaming)
    validation = _cap(validation, data_args.max_eval_samples, data_args.streaming)
    return PreparedData(splits, train, validation, image_column, label_column, class_names(train, label_column))


def _cap(dataset, size: int | None, streaming: bool):
    if dataset is None or size is None:
        return dataset
    return dataset.take(size) if streaming else dataset.select(range(min(size, len(dataset))))


def check_labels(dataset, label_column: str | None, num_labels: int, split: str = "training") -> None:
    """Before training: every label of a map-style dataset is a class of the model (or -100, unlabeled). Streamed
    datasets are checked batch by batch instead (ImageCollator)."""
    if label_column is None or not hasattr(dataset, "__len__") or len(dataset) == 0:
        return
    labels = np.asarray(dataset.select_columns([label_column]).with_format("numpy")[label_column])
    labels = labels[labels != -100]
    bad = labels[(labels < 0) | (labels >= num_labels)]
    if len(bad):
        raise ValueError(
            f"The {split} data's column {label_column!r} holds {len(bad)} labels outside the model's {num_labels} "
            f"classes (0..{num_labels - 1}), e.g. {bad[0]}; set num_labels (--config_overrides num_labels=N) or pick "
            "the label column with --label_column_name."
        )
