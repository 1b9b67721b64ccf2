"""supmae.data.segmentation: mmsegmentation's ADE20K pipeline (reduce_zero_label, the training crops, the evaluation
rescale), the folder layout, class names, bad annotations and the digits canvases."""

import json
import os
import random

import numpy as np
import pytest
import torch
from helpers import write_ade20k_folder
from PIL import Image

from supmae.data.images import BadImagePolicy
from supmae.data.segmentation import (
    UNLABELED_PIXEL,
    SegmentationDataset,
    SegmentationEvalTransform,
    SegmentationTrainTransform,
    ade20k_folder_datasets,
    digits_segmentation_datasets,
    find_mask_column,
    read_id2label,
    reduce_zero_label,
    segmentation_class_names,
    segmentation_collator,
)


def test_reduce_zero_label_ignores_other_and_shifts_the_classes():
    mask = np.array([[0, 1, 2], [150, 255, 0]], dtype=np.uint8)
    assert reduce_zero_label(mask).tolist() == [[255, 0, 1], [149, 255, 255]]


def test_training_crops_pad_flip_and_keep_labels():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[:, 15:] = 1
    transform = SegmentationTrainTransform((32, 32), scale=(30, 20), ratio_range=(1.0, 1.0), photometric=False)
    pixels, labels = transform(image, mask, random.Random(0))
    assert pixels.shape == (3, 32, 32) and labels.shape == (32, 32) and labels.dtype == torch.int64
    assert (
        (labels[20:] == UNLABELED_PIXEL).all()
        and (labels[:, 30:] == UNLABELED_PIXEL).all()
        and (pixels[:, 20:] == 0).all()
    )
    assert set(labels[:20, :30].unique().tolist()) == {0, 1}
    # Deterministic in the generator; across generators the flip shows up.
    again, _ = transform(image, mask, random.Random(0))
    assert torch.equal(pixels, again)
    lefts = {transform(image, mask, random.Random(seed))[1][0, 0].item() for seed in range(12)}
    assert lefts == {0, 1}


def test_random_crops_avoid_one_class_crops_when_they_can():
    """cat_max_ratio 0.75: the crop's largest class covers less than 3/4 of its labelled pixels when such a crop
    exists; without the rule most crops of this mask are one class."""
    labels = torch.zeros(40, 100, dtype=torch.uint8)
    labels[:, 50:] = 1  # a crop qualifies when it starts in columns 21..39: 19 of the 61 places
    ratio = SegmentationTrainTransform((40, 40), cat_max_ratio=0.75)
    no_ratio = SegmentationTrainTransform((40, 40), cat_max_ratio=1.0)

    def largest_share(transform, seed):
        top, left = transform.crop_box(labels, random.Random(seed))
        counts = torch.bincount(labels[top : top + 40, left : left + 40].flatten().long())
        return (counts.max() / counts.sum()).item()

    shares = [largest_share(ratio, seed) for seed in range(30)]
    assert sum(share < 0.75 for share in shares) >= 27  # 10 tries each: 98% of the crops qualify
    assert sum(largest_share(no_ratio, seed) < 0.75 for seed in range(30)) <= 15  # one try: 31%


def test_evaluation_keeps_the_ratio_and_the_original_annotation():
    image = Image.new("RGB", (3000, 1000))
    mask = np.zeros((1000, 3000), dtype=np.uint8)
    pixels, labels = SegmentationEvalTransform(scale=(2048, 512))(image, mask)
    assert pixels.shape == (3, 512, 1536) and labels.shape == (1000, 3000)
    pixels, _ = SegmentationEvalTransform(scale=(2048, 512))(
        Image.new("RGB", (683, 512)), np.zeros((512, 683), np.uint8)
    )
    assert pixels.shape == (3, 512, 683)


def test_ade20k_folder_layout(tmp_path):
    write_ade20k_folder(tmp_path / "ADEChallengeData2016")
    splits = ade20k_folder_datasets(str(tmp_path / "ADEChallengeData2016"))
    assert {name: len(split) for name, split in splits.items()} == {"train": 3, "validation": 2}
    assert find_mask_column(splits["train"], image_column="image") == "annotation"
    names, reduce = segmentation_class_names(None, str(tmp_path / "ADEChallengeData2016"))
    assert reduce and len(names) == 150 and names[0] == "wall" and names[149] == "flag"
    dataset = SegmentationDataset(
        splits["train"], "image", "annotation", SegmentationEvalTransform((24, 16)), True, num_labels=150
    )
    item = dataset[0]
    annotation = np.array(Image.open(tmp_path / "ADEChallengeData2016" / "annotations" / "training" / "ADE_0.png"))
    assert item["labels"].tolist() == reduce_zero_label(annotation).tolist()
    os.remove(tmp_path / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_1.png")
    with pytest.raises(FileNotFoundError, match=r"1 of the 2 images in .*validation have no annotation"):
        ade20k_folder_datasets(str(tmp_path / "ADEChallengeData2016"))


def test_classes_outside_the_model_are_named(tmp_path):
    write_ade20k_folder(tmp_path / "ade")
    splits = ade20k_folder_datasets(str(tmp_path / "ade"))
    dataset = SegmentationDataset(
        splits["train"], "image", "annotation", SegmentationEvalTransform((24, 16)), reduce_labels=False, num_labels=3
    )
    with pytest.raises(
        ValueError,
        match=r"ADE_0.png \(item 0\) holds class 3, outside the 3 classes \(0..2\).*"
        "--reduce_zero_label",
    ):
        dataset[0]


def test_bad_annotations_are_named_and_no_image_is_scored_twice(tmp_path):
    """An unreadable annotation is skipped under its own name; in evaluation its image is left out (not replaced by
    the next one, which would count twice). An annotation of the wrong kind or size stops the run, naming the file."""
    write_ade20k_folder(tmp_path / "ade", counts={"training": 1, "validation": 3})
    annotations = tmp_path / "ade" / "annotations" / "validation"
    (annotations / "ADE_1.png").write_bytes(b"not a png")
    validation = ade20k_folder_datasets(str(tmp_path / "ade"))["validation"]
    policy = BadImagePolicy("skip", str(tmp_path / "skipped.tsv"))
    evaluation = SegmentationDataset(
        validation, "image", "annotation", SegmentationEvalTransform((24, 16)), bad_images=policy, substitute=False
    )
    items = [evaluation[i] for i in range(3)]
    assert items[1] is None and items[0] is not None and items[2] is not None
    assert segmentation_collator([items[1]]) is None and len(segmentation_collator(items)["labels"]) == 2
    assert (tmp_path / "skipped.tsv").read_text().startswith(str(annotations / "ADE_1.png"))
    training = SegmentationDataset(
        validation, "image", "annotation", SegmentationEvalTransform((24, 16)), bad_images=policy
    )
    assert torch.equal(training[1]["labels"], items[2]["labels"])  # in training the next pair takes its place
    Image.new("RGB", (16, 24)).save(annotations / "ADE_1.png")
    with pytest.raises(
        ValueError, match=r"annotation .*ADE_1.png \(item 1\) is a RGB image; .* class index per pixel"
    ):
        evaluation[1]
    Image.new("L", (17, 24)).save(annotations / "ADE_1.png")
    with pytest.raises(
        ValueError, match=r"ADE_1.png \(item 1\) is 17x24 pixels, its image .*ADE_1.jpg \(item 1\) 16x24"
    ):
        evaluation[1]


def test_class_names_come_from_the_data_or_the_arguments(tmp_path):
    assert segmentation_class_names("digits", None)[0][1] == "0"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "id2label.json").write_text(json.dumps({"0": "sky", "1": "road"}))
    assert segmentation_class_names(str(tmp_path / "data"), None) == ({0: "sky", 1: "road"}, False)
    assert segmentation_class_names("user/other", None, num_labels=3)[0] == {0: "0", 1: "1", 2: "2"}
    with pytest.raises(ValueError, match="--num_labels 3 disagrees with the 2 class names"):
        segmentation_class_names(str(tmp_path / "data"), None, num_labels=3)
    with pytest.raises(ValueError, match="No class names for the data: pass --id2label FILE"):
        segmentation_class_names(str(tmp_path), None)
    (tmp_path / "names.json").write_text('["sky", "road"]')
    with pytest.raises(ValueError, match=r"--id2label .*names.json: cannot read it as a JSON object"):
        read_id2label(str(tmp_path / "names.json"))


def test_digits_canvases_label_each_digit_with_its_class():
    splits = digits_segmentation_datasets(num_train=8, num_validation=4)
    annotation = np.array(splits["train"][0]["annotation"])
    image = np.array(splits["train"][0]["image"])
    assert image.shape == (64, 64, 3) and annotation.shape == (64, 64)
    assert set(np.unique(annotation)) <= set(range(11)) and len(np.unique(annotation)) >= 3  # background + 2 digits
    assert (image[annotation == 0].max() <= 64) and (image[annotation > 0].min() > 64)
