"""Decoding and the bad-image policy (supmae.data.images): odd but valid images converted, broken files skipped
(logged once, counted) or fatal, in map-style datasets and streams, through each recipe's transform."""

import io
import os

import numpy as np
import pytest
import torch
from helpers import BROKEN, ODD, logged_names, write_image_folder, write_zoo
from PIL import Image, ImageOps

from supmae.data.datasets import TransformedImageDataset, _sample_rng, transform_streaming_dataset
from supmae.data.images import BadImageError, BadImagePolicy, count_skipped_images
from supmae.data.sources import load_image_datasets
from supmae.data.transforms import (
    EvalTransform,
    PretrainingTransform,
    TimmTrainTransform,
    apply_transform,
    eval_image_processor,
)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    write_zoo(root / "odd")
    write_image_folder(root, classes=("fine",), per_class=1)  # a second class, so that there is a label column
    return root


TRANSFORMS = {
    "pretraining": lambda: PretrainingTransform(32),  # decodes the bytes itself (torchvision / PIL draft)
    "evaluation": lambda: EvalTransform(eval_image_processor(32)),  # PIL images
    "fine-tuning": lambda: TimmTrainTransform(32),  # PIL images through timm
}


@pytest.mark.parametrize("kind", TRANSFORMS)
def test_odd_images_are_converted_and_broken_ones_skipped(zoo, tmp_path, kind):
    train = load_image_datasets(None, None, str(zoo), None)["train"]
    log = tmp_path / "skipped.tsv"
    transform = TRANSFORMS[kind]()
    dataset = TransformedImageDataset(train, "image", "label", transform, bad_images=BadImagePolicy(log_file=str(log)))
    items = [dataset[i] for i in range(len(dataset))]
    assert len(items) == len(ODD | BROKEN) + 1
    for item in items:
        assert item["pixel_values"].shape == (3, 32, 32) and torch.isfinite(item["pixel_values"]).all()
    assert logged_names(log) == BROKEN and count_skipped_images(str(log)) == len(BROKEN)

    # A broken item's place goes to the next readable image, with the broken item's own random crop.
    names = [os.path.basename(value["path"]) for value in dataset.dataset["image"]]
    if kind != "fine-tuning":  # timm draws from the global RNG
        for index, name in enumerate(names):
            if name in BROKEN:
                readable = next(
                    i % len(names) for i in range(index, index + len(names)) if names[i % len(names)] not in BROKEN
                )
                expected = apply_transform(transform, dataset.dataset[readable]["image"], _sample_rng(0, 0, index))
                assert torch.equal(items[index]["pixel_values"], expected), name


def test_odd_images_become_the_expected_rgb(zoo):
    """The fast pretraining path converts like the reference conversion: transparency onto white, 16-bit gray scaled
    by 65535, CMYK and palette through PIL; a 1x1 image becomes a flat 32x32 crop of its colour."""
    transform = PretrainingTransform(32)
    one_pixel = transform({"bytes": (zoo / "odd" / "one_pixel.png").read_bytes(), "path": None}, _sample_rng(0, 0, 0))
    expected = (torch.tensor([10, 200, 30]) / 255 - torch.tensor(transform.mean)) / torch.tensor(transform.std)
    torch.testing.assert_close(one_pixel, expected.view(3, 1, 1).expand(3, 32, 32).float())
    rgba = Image.open(zoo / "odd" / "rgba.png")
    assert rgba.mode == "RGBA"  # fully opaque here: must equal its RGB
    rng_a, rng_b = _sample_rng(0, 0, 1), _sample_rng(0, 0, 1)
    torch.testing.assert_close(
        transform({"bytes": (zoo / "odd" / "rgba.png").read_bytes(), "path": None}, rng_a),
        transform(rgba.convert("RGB"), rng_b),
    )


def test_an_exif_rotated_photo_is_turned_upright_as_datasets_does(tmp_path):
    """Orientation 6 (the camera held sideways): the fast path decodes through PIL and applies it first, like
    datasets' Image feature, so the crop is taken from the upright 30x40 picture."""
    pixels = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, "JPEG", quality=95, exif=exif)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(encoded.getvalue())))
    assert upright.size == (30, 40)
    transform = PretrainingTransform(32)
    torch.testing.assert_close(
        transform(encoded.getvalue(), _sample_rng(0, 0, 0)), transform(upright, _sample_rng(0, 0, 0))
    )


def test_the_error_flag_makes_a_broken_image_fatal_and_names_it(zoo):
    train = load_image_datasets(None, None, str(zoo), None)["train"]
    dataset = TransformedImageDataset(
        train, "image", "label", EvalTransform(eval_image_processor(32)), bad_images=BadImagePolicy("error")
    )
    broken = next(i for i, v in enumerate(dataset.dataset["image"]) if os.path.basename(v["path"]) in BROKEN)
    with pytest.raises(
        BadImageError, match=r"Cannot read image .*odd/\w+\.(jpg|png) \(item \d+\): .*--bad_images skip"
    ):
        dataset[broken]
    with pytest.raises(ValueError, match="bad_images must be 'skip' or 'error', got 'ignore'"):
        BadImagePolicy("ignore")


def test_a_stream_leaves_broken_images_out(zoo, tmp_path):
    stream = load_image_datasets(None, None, str(zoo), None, streaming=True)["train"]
    log = tmp_path / "skipped.tsv"
    items = list(
        transform_streaming_dataset(
            stream, "image", "label", PretrainingTransform(32), BadImagePolicy(log_file=str(log))
        )
    )
    assert len(items) == len(ODD) + 1 and logged_names(log) == BROKEN


def test_a_dataset_of_unreadable_files_stops_with_a_diagnosis(tmp_path, monkeypatch):
    monkeypatch.setattr("supmae.data.datasets.MAX_BAD_IMAGES_IN_A_ROW", 3)
    for i in range(4):
        (tmp_path / "x" / "a").mkdir(parents=True, exist_ok=True)
        (tmp_path / "x" / "a" / f"{i}.jpg").write_text("text")
    train = load_image_datasets(None, None, str(tmp_path / "x"), None)["train"]
    dataset = TransformedImageDataset(train, "image", None, PretrainingTransform(32))
    with pytest.raises(BadImageError, match=r"Items 0 to 2 are all unreadable images \(3 in a row\)"):
        dataset[0]
    stream = load_image_datasets(None, None, str(tmp_path / "x"), None, streaming=True)["train"]
    with pytest.raises(BadImageError, match=r"3 unreadable images in a row in the stream: is 'image' the image"):
        list(transform_streaming_dataset(stream, "image", None, PretrainingTransform(32)))


def test_an_unreadable_image_is_listed_once_and_named_plainly(tmp_path):
    """Dataloader workers are new every epoch and each meets the broken file again: one line in the list, and a
    reason without PIL's "<_io.BytesIO object at 0x...>" (which the log used to turn into "image file its data")."""
    log_file = tmp_path / "skipped_images.tsv"
    try:
        Image.open(io.BytesIO(b"not an image"))
    except OSError as error:
        failure = error
    for _ in range(3):  # three workers, or epochs
        BadImagePolicy("skip", str(log_file)).handle("data/broken.jpg", failure)
    lines = log_file.read_text().splitlines()
    assert lines == ["data/broken.jpg\tUnidentifiedImageError: cannot identify image file"]
