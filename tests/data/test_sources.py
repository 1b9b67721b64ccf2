"""supmae.data.sources: the built-in digits, image folders with and without class subfolders, one split, and the errors
that name a missing folder, split or column."""

import datasets
import numpy as np
import pytest
from helpers import write_image_folder
from PIL import Image

from supmae.data.sources import (
    digits_datasets,
    find_image_column,
    find_label_column,
    load_image_datasets,
    load_image_split,
)


def test_digits_are_built_in_and_stratified():
    splits = digits_datasets()
    assert {name: len(split) for name, split in splits.items()} == {"train": 1259, "validation": 179, "test": 359}
    assert splits["train"].features["label"].names == [str(i) for i in range(10)]
    for split in splits.values():
        assert sorted(set(split["label"])) == list(range(10))
    images = splits["train"][:50]["image"]
    assert all(image.size == (8, 8) and image.mode == "L" for image in images)
    assert max(np.asarray(image).max() for image in images) == 255  # 16 -> 255


def test_image_folders_with_and_without_class_subfolders(tmp_path):
    write_image_folder(tmp_path / "train")
    write_image_folder(tmp_path / "val", per_class=1)
    splits = load_image_datasets(train_dir=str(tmp_path / "train"), validation_dir=str(tmp_path / "val"))
    assert len(splits["train"]) == 6 and len(splits["validation"]) == 2
    assert find_image_column(splits["train"]) == "image" and find_label_column(splits["train"]) == "label"
    assert splits["train"].features["label"].names == ["cat", "dog"]

    write_image_folder(tmp_path / "flat", flat=True)
    flat = load_image_datasets(train_dir=str(tmp_path / "flat"))
    assert find_label_column(flat["train"]) is None  # no classes: plain MAE


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"train_dir": "/nonexistent/train"}, FileNotFoundError, "The train folder '/nonexistent/train' does not"),
        ({}, ValueError, "No training data: give `dataset_name`"),
        ({"dataset_name": "digits", "train_dir": "x"}, ValueError, "either `dataset_name` or `train_dir`"),
    ],
)
def test_loading_errors_name_the_problem(kwargs, error, message):
    with pytest.raises(error, match=message):
        load_image_datasets(**kwargs)


def test_empty_validation_folder_is_refused(tmp_path):
    write_image_folder(tmp_path / "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"The validation folder '.*empty' holds no image files \(.jpg"):
        load_image_datasets(train_dir=str(tmp_path / "train"), validation_dir=str(tmp_path / "empty"))


def test_wrong_column_names_list_the_columns():
    dataset = datasets.Dataset.from_dict({"photo": [Image.new("RGB", (4, 4))], "y": [1]})
    with pytest.raises(ValueError, match=r"`image_column_name` 'img' is not a column.*\['photo', 'y'\]"):
        find_image_column(dataset, "img")
    with pytest.raises(ValueError, match=r"`label_column_name` 'label' is not a column.*\['photo', 'y'\]"):
        find_label_column(dataset, "label")
    assert find_image_column(dataset.cast_column("photo", datasets.Image())) == "photo"
    with pytest.raises(ValueError, match=r"No image column found among \['photo', 'y'\]"):
        find_image_column(datasets.Dataset.from_dict({"photo": ["a"], "y": [1]}))
    assert find_label_column(dataset, "none") is None and find_label_column(dataset, "y") == "y"


def test_loading_one_split(tmp_path):
    write_image_folder(tmp_path / "folder")
    assert len(load_image_split(str(tmp_path / "folder"))) == 6  # an image folder's only split
    assert len(load_image_split("digits", "test")) == 359 and len(load_image_split("digits")) == 179
    with pytest.raises(ValueError, match=r"'digits' has no split 'dev'; it has \['train', 'validation', 'test'\]"):
        load_image_split("digits", "dev")
    with pytest.raises(ValueError, match="has no split 'validation'; it has \\['train'\\]"):
        load_image_split(str(tmp_path / "folder"), "validation")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        load_image_split(str(tmp_path / "empty"))
