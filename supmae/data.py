# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Data for SupMAE training: loading (Hub, local folders, streaming, the built-in digits), column detection,
the pretraining augmentation and batching."""

import functools
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import struct
import warnings
import zlib
from dataclasses import dataclass, field

import datasets
import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
import torchvision.transforms.v2.functional as tvF
from torchvision.io import ImageReadMode, decode_jpeg

from .image_processing_supmae import SupMAEImageProcessor, pil_to_rgb_array


# torchvision 0.29 deprecates its image decoders for TorchCodec's; its libjpeg-turbo JPEG decoder is still the
# fastest route to a tensor here (1.0 ms for 500x375 against 1.3 ms for simplejpeg and 2.0 ms for PIL + numpy).
warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision", DeprecationWarning)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_COLUMN_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp", "pixel_values")
LABEL_COLUMN_NAMES = ("label", "labels", "cls", "class", "target")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DATA_FILE_EXTENSIONS = (".parquet", ".arrow")  # a local dataset directory (e.g. prepared shards) holds these
DIGITS = "digits"  # the name of the built-in dataset: scikit-learn's 8x8 digits, no download
PREPARE_MANIFEST = ".prepare_dataset.json"  # supmae.prepare_dataset's record; "complete" once its shards are in place
# What reading a broken image file raises: PIL (UnidentifiedImageError is an OSError; truncated files, broken
# streams), torchvision's JPEG decoder (RuntimeError), zlib and struct inside PIL's plugins, and PIL's guard against
# decompression bombs (more than 2 x PIL.Image.MAX_IMAGE_PIXELS pixels).
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, RuntimeError, EOFError, struct.error, zlib.error,
                PIL.Image.DecompressionBombError)  # fmt: skip
SKIPPED_IMAGES = "skipped_images.tsv"  # the unreadable images a run skipped, in its output directory
MAX_BAD_IMAGES_IN_A_ROW = 50  # more in a row than this is a broken dataset, not a few broken files

logger = logging.getLogger(__name__)


def load_image_datasets(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_dir: str | None = None,
    validation_dir: str | None = None,
    streaming: bool = False,
    cache_dir: str | None = None,
    trust_remote_code: bool = False,
) -> datasets.DatasetDict | datasets.IterableDatasetDict:
    """
    The splits of a Hub dataset or local dataset directory (`dataset_name`), of image folders (`train_dir`,
    `validation_dir`: one subfolder per class gives labels, images directly inside give none), or of the built-in
    `"digits"`. Fails with a message naming the path or the splits that exist.
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
        loaded = datasets.load_dataset("imagefolder", data_files=data_files, streaming=streaming, cache_dir=cache_dir)
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


def load_image_split(source: str, split: str | None = None, config_name: str | None = None, cache_dir=None):
    """One split of a Hub dataset, a local dataset directory or image folder, or `"digits"`, loading only that split.
    Without `split`: "validation" if the source has one, else its only split."""
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
):
    """One split (`load_image_split`) with its image and label columns (detected unless named): `(dataset,
    image_column, label_column)`. A split without labels is an error naming `what` (default: the source)."""  # fmt: skip
    dataset = load_image_split(source, split, config_name, cache_dir)
    found = find_label_column(dataset, label_column)
    if found is None:
        raise ValueError(f"{what or source}: no label column (columns: {dataset.column_names}); name it.")
    return dataset, find_image_column(dataset, image_column), found


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """Any PIL mode as RGB (transparency onto white, 16-bit gray scaled by its depth)."""
    return image if image.mode == "RGB" else PIL.Image.fromarray(pil_to_rgb_array(image))


def random_resized_crop_box(width: int, height: int, scale, ratio, rng: random.Random | None = None):
    """torchvision's RandomResizedCrop sampling, drawn from `rng`: `(left, top, right, bottom)` of a crop covering a
    fraction in `scale` of the area with aspect ratio (w/h) in `ratio`; after 10 misses, the largest centered crop
    whose ratio is clamped into `ratio`."""
    rng = rng or random
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target_area * aspect)), round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top, left = rng.randint(0, height - h), rng.randint(0, width - w)
            return left, top, left + w, top + h
    if width / height < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif width / height > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def decode_for_crop(image: PIL.Image.Image, box, size: int):
    """Decode `image` (opened, not yet loaded) for a crop `box` that will be resized to `size`: a JPEG whose crop
    spans at least 2x `size` pixels each way is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling), as large as
    the resize needs and no larger. Returns the RGB image and the box in its pixels."""
    width, height = image.size
    crop_width, crop_height = box[2] - box[0], box[3] - box[1]
    if image.format == "JPEG" and min(crop_width, crop_height) >= 2 * size:
        image.draft("RGB", (math.ceil(width * size / crop_width), math.ceil(height * size / crop_height)))
        scale_x, scale_y = image.size[0] / width, image.size[1] / height
        box = (box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y)
    return to_rgb(image), box


def normalize_uint8(pixels: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """`(3, H, W)` uint8 -> float32 `(x / 255 - mean) / std`, as one multiply-add."""
    scale, shift = _normalization(tuple(mean), tuple(std))
    return torch.addcmul(shift, pixels.float(), scale)


@functools.cache
def _normalization(mean: tuple, std: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    scale = torch.tensor([1 / (255 * s) for s in std]).view(3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).view(3, 1, 1)
    return scale, shift


class PretrainingTransform:
    """
    MAE's pretraining augmentation: RandomResizedCrop(scale=(0.2, 1), bicubic), horizontal flip, ImageNet
    normalization. All randomness comes from `rng`, so a sample's crop can be reproduced.

    Fast without changing what it computes. It takes the encoded file (`wants_encoded`: the datasets hand it the
    bytes) or a PIL image. The crop is drawn from the header before anything is decoded. JPEGs are decoded with
    torchvision's libjpeg-turbo decoder straight into a tensor, or, when the crop spans at least twice the output
    size, by PIL at reduced scale (`decode_for_crop`). The crop is resized as uint8 with torchvision's antialiased
    bicubic kernel (the one that reproduces PIL's), and normalization is one fused multiply-add.
    `benchmarks/input_pipeline.py` measures it against the plain torchvision transform.
    """

    wants_encoded = True

    def __init__(self, image_size: int, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.image_size, self.scale, self.ratio, self.mean, self.std = image_size, scale, ratio, mean, std

    def __call__(self, image, rng: random.Random | None = None) -> torch.Tensor:
        """`image`: a PIL image, the file's bytes, or datasets' `{"bytes", "path"}`. Returns `(3, S, S)` float32."""
        data = encoded_bytes(image)
        if data is not None:
            image = PIL.Image.open(io.BytesIO(data))  # the header only
            if _exif_orientation(image):  # rare: decode and rotate with PIL first
                image, data = open_image(data), None
        box = random_resized_crop_box(*image.size, self.scale, self.ratio, rng)
        pixels, box = self._decode(image, data, box)
        left, top, right, bottom = (round(v) for v in box)
        crop = tvF.resize(
            pixels[:, top:bottom, left:right], [self.image_size] * 2, tvF.InterpolationMode.BICUBIC, antialias=True
        )
        if (rng or random).random() < 0.5:
            crop = crop.flip(-1)
        return normalize_uint8(crop, self.mean, self.std)

    def _decode(self, image: PIL.Image.Image, data: bytes | None, box) -> tuple[torch.Tensor, tuple]:
        """`(3, H, W)` uint8 pixels and the crop box in them."""
        crop_is_small = min(box[2] - box[0], box[3] - box[1]) < 2 * self.image_size
        if data is not None and image.format == "JPEG" and image.mode in ("RGB", "L") and crop_is_small:
            return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB), box
        image, box = decode_for_crop(image, box, self.image_size)
        return torch.from_numpy(np.array(image)).permute(2, 0, 1), box


def encoded_bytes(image) -> bytes | None:
    """The encoded file behind `image`: bytes as given, or datasets' undecoded `{"bytes", "path"}`; None for a
    decoded (PIL) image."""
    if isinstance(image, dict):
        if image.get("bytes") is not None:
            return image["bytes"]
        with open(image["path"], "rb") as file:
            return file.read()
    return bytes(image) if isinstance(image, (bytes, bytearray, memoryview)) else None


def undecoded(dataset, image_column: str):
    """`dataset` with its image column left encoded (datasets' `Image(decode=False)`): the transforms decode the
    files themselves, so that an unreadable one is caught, named and skipped (`BadImagePolicy`)."""
    feature = (getattr(dataset, "features", None) or {}).get(image_column)
    if isinstance(feature, datasets.Image) and feature.decode:
        return dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset


class BadImageError(ValueError):
    """An image file that cannot be read (with `--bad_images error`, or too many in a row)."""


@dataclass
class BadImagePolicy:
    """What happens to an image that cannot be read (corrupt, truncated, empty, not an image, a decompression bomb).
    `skip` (the default): a warning names it, a line `name<TAB>reason` goes to `log_file`, and the dataset moves
    on. `error`: `BadImageError`, naming it. Odd but valid images (CMYK, 16-bit, palette, alpha, gray, 1x1) are
    converted to RGB, never skipped."""

    action: str = "skip"
    log_file: str | None = None
    reported: set = field(default_factory=set, repr=False, compare=False)  # names logged (per process)

    def __post_init__(self):
        if self.action not in ("skip", "error"):
            raise ValueError(f"bad_images must be 'skip' or 'error', got {self.action!r}.")

    def handle(self, name: str, error: Exception) -> None:
        # PIL names an in-memory file by its object address: "cannot identify image file <_io.BytesIO object ...>".
        reason = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", f"{type(error).__name__}: {error}")
        reason = " ".join(reason.split())
        if self.action == "error":
            raise BadImageError(
                f"Cannot read image {name}: {reason}. (--bad_images skip skips such files.)"
            ) from error
        if name in self.reported:  # once per process (a dataloader worker lives one epoch): files are met again
            return
        self.reported.add(name)
        if self.log_file and os.path.isfile(self.log_file):  # listed by an earlier worker or epoch
            with open(self.log_file) as file:
                if any(line.split("\t", 1)[0] == name for line in file):
                    return
        logger.warning(f"Skipping unreadable image {name}: {reason}")
        if self.log_file:
            with open(self.log_file, "a") as file:  # one short append per line: safe across dataloader workers
                file.write(f"{name}\t{reason}\n")


def count_skipped_images(log_file: str | None) -> int:
    """The distinct images named in a `BadImagePolicy` log file (0 when there is none)."""
    if not log_file or not os.path.isfile(log_file):
        return 0
    with open(log_file) as file:
        return len({line.split("\t", 1)[0] for line in file if line.strip()})


def image_name(value, index=None) -> str:
    """How the log names an image: its path when the dataset has one, else a digest of its bytes (the same in every
    process, worker and epoch, so that the log's distinct names count distinct files); and its position if known."""
    path = value.get("path") if isinstance(value, dict) else getattr(value, "filename", None)
    if not path:
        data = value.get("bytes") if isinstance(value, dict) else value
        data = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else None
        path = f"<{len(data)} bytes, sha1 {hashlib.sha1(data).hexdigest()[:12]}>" if data is not None else "<image>"
    return path if index is None else f"{path} (item {index})"


def open_image(value) -> PIL.Image.Image:
    """Decode an undecoded datasets image (`{"bytes", "path"}`) or the file's bytes as datasets' Image feature
    does: PIL, fully loaded, EXIF orientation applied. A PIL image is returned as it is."""
    if isinstance(value, PIL.Image.Image):
        return value
    image = PIL.Image.open(io.BytesIO(encoded_bytes(value)))
    image.load()
    return PIL.ImageOps.exif_transpose(image) if _exif_orientation(image) else image


def _exif_orientation(image: PIL.Image.Image) -> int | None:
    """The EXIF orientation when it asks for a rotation or flip (2..8), else None."""
    orientation = image.getexif().get(PIL.Image.ExifTags.Base.Orientation)
    return orientation if orientation in range(2, 9) else None


JPEG_END = b"\xff\xd9"


def plain_jpeg(header: PIL.Image.Image, data: bytes) -> bool:
    """Whether `data` (opened as `header`, not decoded) is a baseline RGB or grayscale JPEG, upright (no EXIF
    rotation) and complete (it ends with the end-of-image marker): the files that GPU decoding takes as they are,
    and that prepare_dataset keeps byte for byte."""
    return (
        header.format == "JPEG"
        and header.mode in ("RGB", "L")
        and not header.info.get("progressive")
        and not _exif_orientation(header)
        and data.rstrip(b"\x00\r\n ").endswith(JPEG_END)
    )


def apply_transform(transform, value, rng: random.Random | None):
    """`transform` on an undecoded dataset image: the encoded file for transforms that decode it themselves
    (`wants_encoded`), a PIL image for the others."""
    return transform(value if getattr(transform, "wants_encoded", False) else open_image(value), rng)


class EvalTransform:
    """The evaluation transform: `SupMAEImageProcessor` (shorter side to image_size / 0.875, bicubic, center crop)."""

    def __init__(self, image_processor: SupMAEImageProcessor):
        self.image_processor = image_processor

    def __call__(self, image: PIL.Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        return self.image_processor(image, return_tensors="pt").pixel_values[0]


class TimmTrainTransform:
    """MAE's fine-tuning augmentation through timm's `create_transform`: RandomResizedCrop, flip, RandAugment
    (`rand-m9-mstd0.5-inc1`), random erasing (0.25). Its randomness is timm's own (numpy / torch global RNGs, seeded
    per dataloader worker), so `rng` is unused."""

    def __init__(
        self,
        image_size: int,
        auto_augment: str | None = "rand-m9-mstd0.5-inc1",
        reprob: float = 0.25,
        scale=(0.08, 1.0),
    ):
        from timm.data import auto_augment as timm_auto_augment
        from timm.data import create_transform

        self.transform = create_transform(
            input_size=image_size,
            is_training=True,
            scale=scale,
            auto_augment=None if auto_augment in (None, "none") else auto_augment,
            interpolation="bicubic",
            re_prob=reprob,
            re_mode="pixel",
            re_count=1,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )
        for step in getattr(self.transform, "transforms", []):
            for op in getattr(step, "ops", []) if isinstance(step, timm_auto_augment.RandAugment) else []:
                if op.aug_fn is timm_auto_augment.posterize:
                    op.aug_fn = _posterize

    def __call__(self, image: PIL.Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        return self.transform(to_rgb(image))


def _posterize(image: PIL.Image.Image, bits_to_keep: int, **kwargs) -> PIL.Image.Image:
    # timm's increasing posterize reaches 0 bits at the top magnitudes. Pillow <= 12 made that a black image; Pillow 13
    # raises ("bits must be between or equal to 1 and 8"). Keep the old result.
    if bits_to_keep >= 8:
        return image
    if bits_to_keep <= 0:
        return PIL.Image.new(image.mode, image.size)
    return PIL.ImageOps.posterize(image, bits_to_keep)


def eval_image_processor(image_size: int) -> SupMAEImageProcessor:
    """MAE's evaluation transform for `image_size`: the shorter side to `round(image_size / 0.875)`, center crop
    `image_size` (256 / 224 at 224 px). Stored as ConvNeXt stores it (`size` = the crop, `crop_pct` 0.875)."""
    return SupMAEImageProcessor(size={"shortest_edge": image_size}, crop_pct=0.875)


def _sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    # A generator of its own per (seed, epoch, sample), independent of workers and processes (Mersenne Twister's
    # seeding mixes the integer's bits).
    return random.Random((seed * 1_000_003 + epoch) * 2**40 + index)


class TransformedImageDataset(torch.utils.data.Dataset):
    """
    A map-style image dataset as `{"pixel_values": (3, S, S), "labels": int}` items. The augmentation of item `i` in
    epoch `e` draws from a `random.Random` seeded with `(seed, e, i)`: the same crops whatever the number of dataloader
    workers or processes, and after resuming from a checkpoint. The Trainer calls `set_epoch`.

    An unreadable image goes to `bad_images` (skipped and logged by default) and the next readable one takes its
    place, so batches keep their size.
    """

    def __init__(
        self, dataset, image_column: str, label_column: str | None, transform, seed: int = 0, bad_images=None
    ):
        self.dataset = undecoded(dataset, image_column)
        self.image_column, self.label_column = image_column, label_column
        self.transform, self.seed, self.epoch = transform, seed, 0
        self.bad_images = bad_images or BadImagePolicy()

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        for offset in range(MAX_BAD_IMAGES_IN_A_ROW):
            position = (int(index) + offset) % len(self.dataset)
            example = self.dataset[position]
            rng = _sample_rng(self.seed, self.epoch, int(index))  # afresh: a failed try may have drawn from it
            try:
                pixels = apply_transform(self.transform, example[self.image_column], rng)
            except IMAGE_ERRORS as error:
                self.bad_images.handle(image_name(example[self.image_column], position), error)
                continue
            item = {"pixel_values": pixels}
            if self.label_column is not None:
                item["labels"] = example[self.label_column]
            return item
        raise BadImageError(
            f"Items {index} to {position} are all unreadable images ({MAX_BAD_IMAGES_IN_A_ROW} in a row): is "
            f"{self.image_column!r} the image column, and are the files images?"
        )


def transform_streaming_dataset(
    dataset: datasets.IterableDataset, image_column, label_column, transform, bad_images=None
):
    """The streaming counterpart of `TransformedImageDataset`, kept a `datasets.IterableDataset` so that accelerate
    gives each process its own shards. Its augmentation draws from the (per-worker, per-process) global RNG.
    Unreadable images go to `bad_images` and are left out of the stream."""
    bad_images = bad_images or BadImagePolicy()
    in_a_row = 0

    def apply(example):
        nonlocal in_a_row
        value = example[image_column]
        try:
            pixels = apply_transform(transform, value, None)
            in_a_row = 0
        except IMAGE_ERRORS as error:
            bad_images.handle(image_name(value), error)
            pixels, in_a_row = None, in_a_row + 1
            if in_a_row >= MAX_BAD_IMAGES_IN_A_ROW:
                raise BadImageError(
                    f"{in_a_row} unreadable images in a row in the stream: is {image_column!r} the image column, "
                    "and are the files images?"
                ) from error
        item = {"pixel_values": pixels}
        if label_column is not None:
            item["labels"] = example[label_column]
        return item

    dataset = undecoded(dataset, image_column)
    mapped = dataset.map(apply, remove_columns=list(dataset.column_names or []))
    return mapped.filter(lambda example: example["pixel_values"] is not None)


class ImageCollator:
    """Stacks items into `{"pixel_values": (B, 3, S, S), "labels": (B,)}` and checks labels against `num_labels`
    (-100, an unlabeled image, is allowed)."""

    def __init__(self, num_labels: int | None = None):
        self.num_labels = num_labels

    def __call__(self, items: list[dict]) -> dict:
        batch = {"pixel_values": torch.stack([torch.as_tensor(item["pixel_values"]) for item in items])}
        return self.add_labels(batch, items)

    def add_labels(self, batch: dict, items: list[dict]) -> dict:
        """`batch` with the items' labels `(B,)`, checked, when they have any."""
        if "labels" in items[0]:
            labels = torch.tensor([-100 if item["labels"] is None else int(item["labels"]) for item in items])
            bad = labels[(labels != -100) & ((labels < 0) | (labels >= (self.num_labels or math.inf)))]
            if len(bad):
                raise ValueError(
                    f"Label {bad[0].item()} is outside the model's {self.num_labels} classes (0..{self.num_labels - 1}); "
                    "set num_labels (e.g. --config_overrides num_labels=N) to cover the dataset's labels."
                )
            batch["labels"] = labels
        return batch


class MixupCollator(ImageCollator):
    """`ImageCollator`, then timm's Mixup / CutMix with label smoothing: labels become soft `(B, num_labels)`. The
    batch size must be even."""

    def __init__(self, num_labels: int, mixup: float = 0.8, cutmix: float = 1.0, label_smoothing: float = 0.1):
        from timm.data import Mixup

        super().__init__(num_labels)
        self.mix = Mixup(
            mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_labels
        )

    def __call__(self, items: list[dict]) -> dict:
        batch = super().__call__(items)
        batch["pixel_values"], batch["labels"] = self.mix(batch["pixel_values"], batch["labels"])
        return batch
