"""Tiny files must not demand gigabytes (issue 19, item 8): an image more elongated than `MAX_ASPECT_RATIO` is a bad
image, refused from its header in every transform that resizes, before anything is decoded or resized; the image
processor refuses to resize an image to more than `MAX_RESIZED_PIXELS`; a suite file's YAML may not use aliases, is
at most `MAX_SUITE_FILE_BYTES`, and its errors are short. docs/RELIABILITY.md states the limits."""

import io
import random

import numpy as np
import PIL.Image
import PIL.ImageFile
import pytest
import torch
from helpers import write_shapes_folder

from supmae.data.datasets import TransformedImageDataset
from supmae.data.gpu_decode import DeviceDecodeTransform
from supmae.data.images import (
    MAX_ASPECT_RATIO,
    BadImageError,
    BadImagePolicy,
    UnacceptableImageError,
    check_image_size,
    open_image,
)
from supmae.data.prepare import reencode
from supmae.data.segmentation import SegmentationDataset, SegmentationEvalTransform, SegmentationTrainTransform
from supmae.data.sources import load_image_datasets
from supmae.data.transforms import EvalTransform, PretrainingTransform, TimmTrainTransform, eval_image_processor
from supmae.image_processing_supmae import MAX_RESIZED_PIXELS, SupMAEImageProcessor
from supmae.tasks.transfer import MAX_SHOWN_CHARACTERS, MAX_SUITE_FILE_BYTES, load_suite


def encoded(image: PIL.Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format)
    return buffer.getvalue()


STRIP = encoded(PIL.Image.new("L", (400000, 1)))  # the file: 1 x 400000 pixels in a few hundred bytes


@pytest.fixture
def no_decoding(monkeypatch):
    """Decoding any image file fails the test: a refusal must come from the header alone."""

    def load(self):
        raise AssertionError(f"a {self.size} image was decoded")

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", load)


def test_the_limits():
    assert (MAX_ASPECT_RATIO, MAX_RESIZED_PIXELS, MAX_SUITE_FILE_BYTES) == (100, 2**25, 2**20)
    check_image_size(100, 1)  # at the limit: accepted
    check_image_size(1, 100)
    for width, height in ((101, 1), (1, 101), (0, 5)):
        with pytest.raises(UnacceptableImageError, match=rf"{width}x{height} pixels: .*MAX_ASPECT_RATIO = 100"):
            check_image_size(width, height)


TRANSFORMS = {  # every transform that resizes, given the file as the datasets hand it over
    "evaluation": lambda value: EvalTransform(eval_image_processor(32))(open_image(value)),
    "pretraining": lambda value: PretrainingTransform(32)(value, random.Random(0)),
    "fine-tuning": lambda value: TimmTrainTransform(32)(open_image(value), random.Random(0)),
    "gpu decoding (the workers' half)": lambda value: DeviceDecodeTransform(PretrainingTransform(32))(
        value, random.Random(0)
    ),
    "segmentation training": lambda value: SegmentationTrainTransform((32, 32))(
        open_image(value), np.zeros((1, 400000), np.uint8), random.Random(0)
    ),
    "segmentation evaluation": lambda value: SegmentationEvalTransform((64, 32))(
        open_image(value), np.zeros((1, 400000), np.uint8)
    ),
    "prepare_dataset": lambda value: reencode(value["bytes"], max_side=256),
}


@pytest.mark.parametrize("kind", TRANSFORMS)
def test_an_elongated_image_is_refused_from_its_header(kind, no_decoding):
    with pytest.raises(UnacceptableImageError, match="400000x1 pixels: more elongated than MAX_ASPECT_RATIO"):
        TRANSFORMS[kind]({"bytes": STRIP, "path": None})


def test_an_elongated_jpeg_is_refused_before_the_gpu_gets_it(no_decoding):
    """A plain JPEG goes to the GPU undecoded (an `EncodedCrop`); its header is checked first, as on the CPU path."""
    strip = encoded(PIL.Image.new("RGB", (3000, 8)), "JPEG")
    with pytest.raises(UnacceptableImageError, match="3000x8 pixels"):
        DeviceDecodeTransform(PretrainingTransform(32))({"bytes": strip, "path": None}, random.Random(0))


def test_an_elongated_image_is_a_bad_image_skipped_and_listed_or_an_error(tmp_path):
    root = write_shapes_folder(tmp_path / "data", per_class=2)
    (root / "circle" / "strip.png").write_bytes(STRIP)
    train = load_image_datasets(None, None, str(root), None)["train"]
    log = tmp_path / "skipped_images.tsv"
    transform = EvalTransform(eval_image_processor(32))
    dataset = TransformedImageDataset(train, "image", "label", transform, bad_images=BadImagePolicy("skip", str(log)))
    items = [dataset[i] for i in range(len(dataset))]
    assert all(item["pixel_values"].shape == (3, 32, 32) for item in items)
    (line,) = log.read_text().splitlines()
    assert line.startswith(str(root / "circle" / "strip.png")) and "MAX_ASPECT_RATIO = 100" in line
    strict = TransformedImageDataset(train, "image", "label", transform, bad_images=BadImagePolicy("error"))
    strip = next(i for i, value in enumerate(strict.dataset["image"]) if value["path"].endswith("strip.png"))
    with pytest.raises(BadImageError, match=r"Cannot read image .*strip\.png \(item \d+\): UnacceptableImageError"):
        strict[strip]


def test_a_segmentation_pair_with_an_elongated_image_is_left_out(tmp_path):
    PIL.Image.new("RGB", (400000, 1)).save(tmp_path / "strip.png")
    PIL.Image.new("L", (400000, 1)).save(tmp_path / "strip_mask.png")
    pairs = [{"image": {"path": str(tmp_path / "strip.png"), "bytes": None}}]
    pairs[0]["annotation"] = {"path": str(tmp_path / "strip_mask.png"), "bytes": None}
    log = tmp_path / "skipped.tsv"
    dataset = SegmentationDataset(
        pairs,
        "image",
        "annotation",
        SegmentationEvalTransform(),
        bad_images=BadImagePolicy("skip", str(log)),
        substitute=False,
    )
    assert dataset[0] is None
    assert "strip.png (item 0)\tUnacceptableImageError: 400000x1 pixels" in log.read_text()


def test_the_processor_refuses_to_resize_beyond_its_limit_and_names_the_input(tmp_path, monkeypatch):
    processor = SupMAEImageProcessor()
    (tmp_path / "strip.png").write_bytes(STRIP)

    def resize(*args, **kwargs):
        raise AssertionError("resized")

    monkeypatch.setattr(SupMAEImageProcessor, "resize", resize)
    for image in (PIL.Image.open(tmp_path / "strip.png"), str(tmp_path / "strip.png")):
        with pytest.raises(
            ValueError, match=r"strip\.png \(400000x1\) would be resized to 26,214,400,000 pixels .*MAX_RESIZED_PIXELS"
        ):
            processor(image)
    with pytest.raises(
        ValueError, match=r"an image of shape \(3, 1, 400000\) would be resized to .*MAX_RESIZED_PIXELS"
    ):
        processor(torch.zeros(3, 1, 400000, dtype=torch.uint8))
    monkeypatch.undo()
    # Aspect ratio 100 is 256 x 25600 = 6.6 M pixels after the resize: well inside the limit.
    assert processor(PIL.Image.new("RGB", (100, 1))).pixel_values.shape == (1, 3, 224, 224)


ALIAS_BOMB = """a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
datasets: [*f, *f, *f, *f, *f, *f, *f, *f, *f]
"""  # 9^7 = 4.8 M strings in 300 bytes


def test_a_suite_file_may_not_use_yaml_aliases(tmp_path):
    suite = tmp_path / "bomb.yaml"
    suite.write_text(ALIAS_BOMB)
    with pytest.raises(ValueError) as raised:
        load_suite(str(suite))
    message = str(raised.value)
    assert "found an alias (*name): suite files may not use YAML aliases" in message
    assert f'in "{suite}", line 2, column' in message and len(message) < 300


def test_a_suite_file_is_bounded_in_size_and_its_errors_in_length(tmp_path, monkeypatch):
    big = tmp_path / "big.yaml"
    big.write_text("#" * MAX_SUITE_FILE_BYTES + "\n")
    monkeypatch.setattr("supmae.tasks.transfer.yaml.load", lambda *a, **k: pytest.fail("parsed"))
    with pytest.raises(ValueError, match=r"big\.yaml is 1,048,577 bytes; .*MAX_SUITE_FILE_BYTES = 1,048,576"):
        load_suite(str(big))
    monkeypatch.undo()

    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"datasets: [\xff\xfe]\n")
    with pytest.raises(ValueError, match=r"binary\.yaml is not UTF-8 text \(byte 11\)"):
        load_suite(str(binary))

    long_name = tmp_path / "long.yaml"
    long_name.write_text(
        f"datasets:\n  - name: {'x/' * 100_000}\n    train: digits\n    test: digits\n    metric: accuracy\n"
    )
    with pytest.raises(ValueError) as raised:
        load_suite(str(long_name))
    assert "'name' must be a unique string that is a single file name" in str(raised.value)
    assert len(str(raised.value)) < 3 * MAX_SHOWN_CHARACTERS + len(str(long_name)) + 200

    broken = tmp_path / "broken.yaml"
    broken.write_text("datasets: [" + "x, " * 100_000 + "\n  : ]\n")
    with pytest.raises(ValueError, match=r"broken\.yaml is not valid YAML: ") as raised:
        load_suite(str(broken))
    assert "\n" not in str(raised.value) and len(str(raised.value)) < MAX_SHOWN_CHARACTERS + len(str(broken)) + 40
