"""supmae.data.datasets: transformed items, streamed or map-style, each a function of (seed, epoch, index)."""

import datasets
import torch
from helpers import write_image_folder

from supmae.data.datasets import TransformedImageDataset, transform_streaming_dataset
from supmae.data.sources import digits_datasets, load_image_datasets
from supmae.data.transforms import PretrainingTransform


def test_streaming_image_folder_yields_transformed_items(tmp_path):
    write_image_folder(tmp_path / "train")
    splits = load_image_datasets(train_dir=str(tmp_path / "train"), streaming=True)
    assert isinstance(splits["train"], datasets.IterableDataset)
    items = list(transform_streaming_dataset(splits["train"], "image", "label", PretrainingTransform(16)))
    assert len(items) == 6
    assert torch.as_tensor(items[0]["pixel_values"]).shape == (3, 16, 16)
    assert sorted(item["labels"] for item in items) == [0, 0, 0, 1, 1, 1]


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
