"""supmae.data: dataset loading, column detection, the pretraining augmentation, reproducible items, batching."""

import io
import math
import random

import datasets
import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
from helpers import write_image_folder
from PIL import Image

from supmae.data.collators import ImageCollator
from supmae.data.datasets import TransformedImageDataset, transform_streaming_dataset
from supmae.data.sources import (
    digits_datasets,
    find_image_column,
    find_label_column,
    load_image_datasets,
    load_image_split,
)
from supmae.data.transforms import PretrainingTransform, decode_for_crop, random_resized_crop_box


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


def test_streaming_image_folder_yields_transformed_items(tmp_path):
    write_image_folder(tmp_path / "train")
    splits = load_image_datasets(train_dir=str(tmp_path / "train"), streaming=True)
    assert isinstance(splits["train"], datasets.IterableDataset)
    items = list(transform_streaming_dataset(splits["train"], "image", "label", PretrainingTransform(16)))
    assert len(items) == 6
    assert torch.as_tensor(items[0]["pixel_values"]).shape == (3, 16, 16)
    assert sorted(item["labels"] for item in items) == [0, 0, 0, 1, 1, 1]


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


def test_crop_boxes_follow_torchvision_random_resized_crop():
    """Same distribution as torchvision's RandomResizedCrop(scale=(0.2, 1)): compare area and aspect statistics."""
    width, height, scale, ratio = 500, 375, (0.2, 1.0), (3 / 4, 4 / 3)
    rng = random.Random(0)
    ours = [random_resized_crop_box(width, height, scale, ratio, rng) for _ in range(4000)]
    ours = np.array([(right - left, bottom - top, left, top) for left, top, right, bottom in ours], dtype=float)
    torch.manual_seed(0)
    image = torch.zeros(3, height, width)
    reference = np.array(
        [T.RandomResizedCrop.get_params(image, list(scale), list(ratio))[::-1] for _ in range(4000)], dtype=float
    )  # (w, h, left, top)
    reference = reference[:, [0, 1, 2, 3]]
    for values in (ours, reference):
        assert np.all(values[:, 0] + values[:, 2] <= width) and np.all(values[:, 1] + values[:, 3] <= height)
    area = lambda v: v[:, 0] * v[:, 1] / (width * height)  # noqa: E731
    aspect = lambda v: np.log(v[:, 0] / v[:, 1])  # noqa: E731
    for statistic in (area, aspect):
        assert abs(statistic(ours).mean() - statistic(reference).mean()) < 0.02
        assert abs(statistic(ours).std() - statistic(reference).std()) < 0.02
    assert area(ours).min() >= 0.19 and np.abs(aspect(ours)).max() <= math.log(4 / 3) + 0.01


def test_crop_box_falls_back_to_a_centered_crop_for_extreme_aspect_ratios():
    # A 1000x10 strip: no sampled box fits 10 times; the fallback clamps the ratio to 4/3 and centers.
    assert random_resized_crop_box(1000, 10, (0.99, 1.0), (3 / 4, 4 / 3), random.Random(0)) == (493, 0, 506, 10)


def test_transform_output_and_flip():
    transform = PretrainingTransform(16)
    image = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (48, 1, 3)))  # left dark
    outputs = [transform(image, random.Random(seed)) for seed in range(20)]
    assert all(o.shape == (3, 16, 16) and o.dtype == torch.float32 for o in outputs)
    directions = {bool(o[0, 8, -1] > o[0, 8, 0]) for o in outputs}
    assert directions == {True, False}  # some crops flipped, some not
    gray = Image.new("L", (20, 20), 128)
    torch.testing.assert_close(
        transform(gray)[:, 0, 0],
        (128 / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]),
        atol=1e-5,
        rtol=0,
    )


def test_items_are_a_function_of_seed_epoch_and_index():
    """What makes crops identical across dataloader workers, processes and resumed runs."""
    split = digits_datasets()["train"].select(range(10))
    dataset = TransformedImageDataset(split, "image", "label", PretrainingTransform(16), seed=3)
    first = dataset[7]["pixel_values"]
    for index in (0, 9, 2):  # other items in between change nothing
        dataset[index]
    assert torch.equal(dataset[7]["pixel_values"], first) and dataset[7]["labels"] == split[7]["label"]
    assert not torch.equal(dataset[6]["pixel_values"], first)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[7]["pixel_values"], first)
    other_seed = TransformedImageDataset(split, "image", "label", PretrainingTransform(16), seed=4)
    assert not torch.equal(other_seed[7]["pixel_values"], first)


def test_collator_stacks_and_checks_labels():
    items = [{"pixel_values": torch.zeros(3, 4, 4), "labels": label} for label in (0, 4, -100)]
    batch = ImageCollator(num_labels=5)(items)
    assert batch["pixel_values"].shape == (3, 3, 4, 4) and batch["labels"].tolist() == [0, 4, -100]
    with pytest.raises(ValueError, match=r"Label 5 is outside the model's 5 classes \(0..4\)"):
        ImageCollator(num_labels=5)(items + [{"pixel_values": torch.zeros(3, 4, 4), "labels": 5}])
    assert "labels" not in ImageCollator()([{"pixel_values": torch.zeros(3, 4, 4)}])


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


def jpeg(width, height, seed=0):
    """A smooth random photo-like JPEG (quality 90), opened but not decoded."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_fast_transform_matches_the_torchvision_reference():
    """Same crop box and flip: our uint8 torchvision resize vs torchvision's RandomResizedCrop on PIL + ToTensor +
    Normalize. Tolerance in 0-255 units: mean < 0.6, max < 8 (the two bicubic kernels round differently)."""
    import torchvision.transforms.v2.functional as tvF

    transform = PretrainingTransform(224)
    for seed, (width, height) in enumerate([(500, 375), (375, 500), (640, 427)]):
        data = jpeg(width, height, seed)
        ours = transform(Image.open(io.BytesIO(data)), random.Random(seed))
        replay = random.Random(seed)
        left, top, right, bottom = random_resized_crop_box(width, height, (0.2, 1.0), (3 / 4, 4 / 3), replay)
        reference = (
            Image.open(io.BytesIO(data))
            .convert("RGB")
            .resize((224, 224), Image.BICUBIC, box=(left, top, right, bottom))
        )
        if replay.random() < 0.5:
            reference = reference.transpose(Image.FLIP_LEFT_RIGHT)
        reference = tvF.normalize(
            tvF.to_dtype(tvF.pil_to_tensor(reference), torch.float32, scale=True),
            [0.485, 0.456, 0.406],
            [0.229, 0.224, 0.225],
        )
        difference = ((ours - reference) * torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) * 255).abs()
        assert difference.mean() < 0.6 and difference.max() < 8, (difference.mean(), difference.max())


def test_large_jpeg_crops_decode_at_reduced_scale_with_the_same_result():
    """A 2000x1500 photo and a crop of 1000x800 pixels: decoded at 1/2 scale (DCT scaling; 1/4 would leave fewer
    than 224 pixels), the 224-pixel result stays within a few gray levels (0-255 units: mean < 1.5)."""
    data = jpeg(2000, 1500, seed=3)
    box = (400, 300, 1400, 1100)
    reduced, scaled_box = decode_for_crop(Image.open(io.BytesIO(data)), box, 224)
    assert reduced.size == (1000, 750) and scaled_box == (200.0, 150.0, 700.0, 550.0)
    full, same_box = decode_for_crop(Image.open(io.BytesIO(data)), (400, 300, 800, 700), 224)
    assert full.size == (2000, 1500) and same_box == (400, 300, 800, 700)  # a 400-pixel crop needs every pixel

    def resized(image, crop):
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[:, crop[1] : crop[3], crop[0] : crop[2]]
        return T.functional.resize(pixels, [224, 224], interpolation=T.InterpolationMode.BICUBIC, antialias=True)

    fast = resized(reduced, [round(v) for v in scaled_box]).float()
    slow = resized(Image.open(io.BytesIO(data)).convert("RGB"), box).float()
    assert (fast - slow).abs().mean() < 1.5
