# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Data for semantic segmentation, as mmsegmentation prepares ADE20K for its MAE / BEiT recipe.

- Sources: the ADEChallengeData2016 folder (`images/{training,validation}/*.jpg` next to
  `annotations/{training,validation}/*.png`), any Hub or local dataset with an image and a mask column, and the
  built-in `digits` set (scikit-learn's digits pasted on a canvas, no download).
- Training: random rescale of the (2048, 512) scale by 0.5-2.0 (keep ratio), random crop whose largest class covers
  less than `cat_max_ratio` of it, horizontal flip, photometric distortion, normalization, padding with the ignore
  index. ADE20K's label 0 ("other") is ignored (`reduce_zero_label`).
- Evaluation: keep-ratio resize to the scale; the annotation stays at its original size (metrics are computed there).

Shapes: images `(3, H, W)`, annotations `(H, W)` of class indices, 255 = ignored.
"""

import glob
import importlib.resources
import json
import logging
import os
import random
from dataclasses import dataclass

import datasets
import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as tvF

from .images import (
    IMAGE_ERRORS,
    MAX_BAD_IMAGES_IN_A_ROW,
    BadImageError,
    BadImagePolicy,
    image_name,
    open_image,
    to_rgb,
    undecoded,
)
from .sources import DIGITS, digits_datasets
from .transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_uint8


logger = logging.getLogger(__name__)

UNLABELED_PIXEL = 255  # mmsegmentation's and UperNet's: padding, ADE20K's "other", and unlabelled pixels
MASK_COLUMN_NAMES = ("annotation", "label", "labels", "mask", "segmentation", "semantic_map", "seg", "gt")
# The built-in demo set: the digits' classes and a background class.
DIGITS_SEGMENTATION_CLASSES = ["background"] + [str(i) for i in range(10)]


def ade20k_class_names() -> list[str]:
    """The 150 ADE20K (SceneParsing) classes in their label order 1..150, i.e. 0..149 after `reduce_zero_label`."""
    text = (importlib.resources.files(__package__) / "ade20k_classes.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def is_ade20k_folder(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "images", "training")) and os.path.isdir(
        os.path.join(path, "annotations", "training")
    )


def ade20k_folder_datasets(root: str) -> datasets.DatasetDict:
    """The ADEChallengeData2016 layout as `train` / `validation` splits of `image` and `annotation` (file paths, decoded
    lazily). Every image needs its annotation (same name, .png)."""
    if not is_ade20k_folder(root):
        raise FileNotFoundError(
            f"{root!r} is not an ADEChallengeData2016 folder: it needs images/training/*.jpg and "
            "annotations/training/*.png (and images/validation, annotations/validation for evaluation)."
        )
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    splits = {}
    for split, folder in (("train", "training"), ("validation", "validation")):
        images = sorted(glob.glob(os.path.join(root, "images", folder, "*.jpg")))
        if not images:
            if split == "train":
                raise ValueError(f"{os.path.join(root, 'images', folder)} holds no .jpg images.")
            logger.warning(
                f"{os.path.join(root, 'images', folder)} holds no .jpg images: validating on images held "
                "out of training (--train_val_split), not on ADE20K's validation set."
            )
            continue
        stems = [os.path.splitext(os.path.basename(path))[0] for path in images]
        annotations = [os.path.join(root, "annotations", folder, stem + ".png") for stem in stems]
        missing = [path for path in annotations if not os.path.isfile(path)]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of the {len(images)} images in {os.path.join(root, 'images', folder)} have no "
                f"annotation, e.g. {missing[0]}."
            )
        splits[split] = datasets.Dataset.from_dict({"image": images, "annotation": annotations}, features=features)
    return datasets.DatasetDict(splits)


def load_segmentation_datasets(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_dir: str | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    data_dir: str | None = None,
) -> datasets.DatasetDict:
    """The splits of the ADEChallengeData2016 folder `train_dir`, of a Hub or local dataset `dataset_name` (at
    `revision`, from its folder `data_dir`: ADE20K from the Hub is `zhoubolei/scene_parse_150` at
    `refs/convert/parquet`, folder `scene_parsing`, its Parquet export), or of the built-in `"digits"` canvases."""
    if (dataset_name is None) == (train_dir is None):
        raise ValueError("Give one source: --dataset_name (a Hub or local dataset, or 'digits') or --train_dir.")
    if dataset_name == DIGITS:
        return digits_segmentation_datasets()
    if train_dir is not None:
        return ade20k_folder_datasets(train_dir)
    loaded = datasets.load_dataset(
        dataset_name, dataset_config_name, revision=revision, data_dir=data_dir, cache_dir=cache_dir
    )
    if "train" not in loaded:
        raise ValueError(f"The dataset {dataset_name!r} has no 'train' split; it has {list(loaded)}.")
    return loaded


def find_mask_column(dataset, name: str | None = None, image_column: str | None = None) -> str:
    """The column holding the annotations: `name` if given, else the first other image column or a usual name
    (annotation, label, mask, segmentation, ...)."""
    columns = list(dataset.column_names)
    if name is not None:
        if name not in columns:
            raise ValueError(f"`mask_column_name` {name!r} is not a column of the dataset; its columns are {columns}.")
        return name
    features = dataset.features or {}
    candidates = [c for c in columns if isinstance(features.get(c), datasets.Image)] + [
        c for c in MASK_COLUMN_NAMES if c in columns
    ]
    found = [c for c in candidates if c != image_column]
    if not found:
        raise ValueError(f"No annotation column found among {columns}; name it with --mask_column_name.")
    return found[0]


def read_id2label(path: str) -> dict[int, str]:
    """An `id2label.json` file ({"0": "wall", ...}) as {0: "wall", ...}, checked to number the classes 0..K-1."""
    try:
        with open(path) as file:
            mapping = {int(key): str(value) for key, value in json.load(file).items()}
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(
            f"--id2label {path}: cannot read it as a JSON object of class indices and names, "
            f'{{"0": "wall", "1": "building", ...}} ({type(error).__name__}: {error}).'
        ) from None
    if sorted(mapping) != list(range(len(mapping))):
        raise ValueError(f"{path} must number its classes 0..K-1 without gaps; it has {sorted(mapping)[:10]}...")
    return mapping


def segmentation_class_names(
    dataset_name: str | None,
    train_dir: str | None,
    id2label_file: str | None = None,
    num_labels: int | None = None,
    reduce_labels: bool | None = None,
    cache_dir: str | None = None,
) -> tuple[dict[int, str], bool]:
    """
    The classes of a segmentation source and whether its annotations are reduced (`reduce_zero_label`). The names
    come from, in order: `id2label_file`; the built-in digits; the dataset's `id2label.json` (local directory or Hub
    repository); ADE20K's 150 bundled names for ADE20K (the ADEChallengeData2016 folder, scene_parse_150);
    `num_labels` ("0", "1", ...). ADE20K's annotations are reduced unless `reduce_labels` is False.
    """
    ade20k = train_dir is not None or "scene_parse_150" in (dataset_name or "")
    reduce_labels = ade20k if reduce_labels is None else reduce_labels
    names = None
    if id2label_file is not None:
        names = read_id2label(id2label_file)
    elif dataset_name == DIGITS:
        names = dict(enumerate(DIGITS_SEGMENTATION_CLASSES))
    elif dataset_name is not None and os.path.isfile(os.path.join(dataset_name, "id2label.json")):
        names = read_id2label(os.path.join(dataset_name, "id2label.json"))
    elif ade20k:
        names = dict(enumerate(ade20k_class_names() if reduce_labels else ["other", *ade20k_class_names()]))
    elif num_labels is None and dataset_name is not None and not os.path.isdir(dataset_name):
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(dataset_name, "id2label.json", repo_type="dataset", cache_dir=cache_dir)
        except Exception as error:  # not there, or offline
            raise ValueError(
                f"No class names for {dataset_name!r} (no id2label.json: {type(error).__name__}); pass --id2label FILE "
                "or --num_labels N."
            ) from error
        names = read_id2label(path)
    if names is None:
        if num_labels is None:
            raise ValueError("No class names for the data: pass --id2label FILE (JSON) or --num_labels N.")
        names = {i: str(i) for i in range(num_labels)}
    if num_labels is not None and num_labels != len(names):
        raise ValueError(f"--num_labels {num_labels} disagrees with the {len(names)} class names found.")
    return names, reduce_labels


def reduce_zero_label(mask: np.ndarray) -> np.ndarray:
    """ADE20K's annotations: 0 ("other") becomes the ignore index and every class moves down by one (1..150 ->
    0..149); 255 stays ignored."""
    mask = mask.astype(np.int64) - 1
    mask[(mask < 0) | (mask == UNLABELED_PIXEL - 1)] = UNLABELED_PIXEL
    return mask.astype(np.uint8)


def read_mask(value) -> np.ndarray:
    """An annotation image (datasets' undecoded `{"bytes", "path"}`, bytes or PIL) as `(H, W)` uint8 class indices.
    Gray (L) and palette (P) images hold the indices directly; 16-bit (I) ones must stay below 256."""
    image = open_image(value)
    if image.mode not in ("L", "P", "I", "I;16"):
        raise ValueError(
            f"is a {image.mode} image; an annotation holds one class index per pixel: a gray (L), palette (P) or "
            "16-bit (I) PNG. Color-coded masks must be turned into class indices first."
        )
    mask = np.array(image)  # a writable copy (torch.from_numpy needs one)
    if mask.dtype != np.uint8:
        if mask.max() > 255:
            raise ValueError(f"holds class {mask.max()}; at most 255 (the ignore index) is allowed.")
        mask = mask.astype(np.uint8)
    return mask


def _pil_size(height: int, width: int, scale: tuple[int, int], factor: float = 1.0) -> tuple[int, int]:
    """mmsegmentation's keep-ratio rescale: the largest size whose long side fits `factor * max(scale)` and whose
    short side fits `factor * min(scale)`, as (height, width)."""
    long_side, short_side = factor * max(scale), factor * min(scale)
    ratio = min(long_side / max(height, width), short_side / min(height, width))
    return int(height * ratio + 0.5), int(width * ratio + 0.5)


def photometric_distortion(pixels: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """mmsegmentation's PhotoMetricDistortion on `(3, H, W)` uint8: each with probability 1/2, brightness +-32,
    contrast x0.5-1.5 (before or after the next two), saturation x0.5-1.5 and hue +-18 (of OpenCV's 180) in HSV."""

    def convert(x: torch.Tensor, alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
        return (x.float() * alpha + beta).clamp(0, 255).to(torch.uint8)

    if rng.randrange(2):
        pixels = convert(pixels, beta=rng.uniform(-32, 32))
    contrast_last = rng.randrange(2) == 0
    if not contrast_last and rng.randrange(2):
        pixels = convert(pixels, alpha=rng.uniform(0.5, 1.5))
    saturation = rng.uniform(0.5, 1.5) if rng.randrange(2) else None
    hue = rng.randint(-18, 18) if rng.randrange(2) else None
    if saturation is not None or hue is not None:
        hsv = np.array(PIL.Image.fromarray(pixels.permute(1, 2, 0).numpy()).convert("HSV"))
        if saturation is not None:
            hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255).astype(np.uint8)
        if hue is not None:  # PIL's hue runs over 0..255 for the circle that OpenCV's runs over 0..180
            hsv[..., 0] = ((hsv[..., 0].astype(np.int64) + round(hue * 256 / 180)) % 256).astype(np.uint8)
        rgb = np.asarray(PIL.Image.fromarray(hsv, mode="HSV").convert("RGB"))
        pixels = torch.from_numpy(rgb.copy()).permute(2, 0, 1)
    if contrast_last and rng.randrange(2):
        pixels = convert(pixels, alpha=rng.uniform(0.5, 1.5))
    return pixels


def _to_tensor(image: PIL.Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(to_rgb(image))).permute(2, 0, 1)  # (3, H, W) uint8


@dataclass
class SegmentationTrainTransform:
    """
    mmsegmentation's ADE20K training pipeline on an image and its annotation (already reduced), drawing every random
    choice from `rng`: keep-ratio rescale of `scale` by a factor in `ratio_range` (bilinear; nearest for the
    annotation), a `crop_size` crop (up to 10 tries for one whose largest class covers less than `cat_max_ratio` of
    its labelled pixels), horizontal flip, photometric distortion, normalization, padding to `crop_size` (0 in the
    normalized image, the ignore index in the annotation).
    """

    crop_size: tuple[int, int]
    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    photometric: bool = True
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __call__(self, image: PIL.Image.Image, mask: np.ndarray, rng: random.Random):
        """Returns pixel_values `(3, crop_h, crop_w)` float32 and labels `(crop_h, crop_w)` int64."""
        pixels, labels = _to_tensor(image), torch.from_numpy(mask)[None]
        size = list(_pil_size(*labels.shape[-2:], self.scale, rng.uniform(*self.ratio_range)))
        # Bilinear without antialiasing, as OpenCV resizes in mmsegmentation.
        pixels = tvF.resize(pixels, size, tvF.InterpolationMode.BILINEAR, antialias=False)
        labels = tvF.resize(labels, size, tvF.InterpolationMode.NEAREST)[0]
        top, left = self.crop_box(labels, rng)
        crop_h, crop_w = self.crop_size
        pixels = pixels[:, top : top + crop_h, left : left + crop_w]
        labels = labels[top : top + crop_h, left : left + crop_w]
        if rng.random() < 0.5:
            pixels, labels = pixels.flip(-1), labels.flip(-1)
        if self.photometric:
            pixels = photometric_distortion(pixels, rng)
        pixels = normalize_uint8(pixels, self.mean, self.std)
        pad = (0, crop_w - pixels.shape[-1], 0, crop_h - pixels.shape[-2])
        pixels = F.pad(pixels, pad, value=0.0)
        labels = F.pad(labels.long(), pad, value=UNLABELED_PIXEL)
        return pixels, labels

    def crop_box(self, labels: torch.Tensor, rng: random.Random) -> tuple[int, int]:
        """(top, left) of the crop: up to 10 random boxes, the first whose labels are not mostly one class."""
        height, width = labels.shape
        for _ in range(10):
            top = rng.randint(0, max(height - self.crop_size[0], 0))
            left = rng.randint(0, max(width - self.crop_size[1], 0))
            if self.cat_max_ratio >= 1:
                break
            crop = labels[top : top + self.crop_size[0], left : left + self.crop_size[1]]
            counts = torch.bincount(crop[crop != UNLABELED_PIXEL].long().flatten())
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() < self.cat_max_ratio * counts.sum():
                break
        return top, left


@dataclass
class SegmentationEvalTransform:
    """mmsegmentation's ADE20K test pipeline: the image resized (keep ratio, bilinear) to fit `scale`, normalized; the
    annotation left at its original size, where the prediction is scored. With `ratios`, its multi-scale test
    (`MultiScaleFlipAug`'s `img_ratios`): one image per ratio r, resized to fit `(int(r * long), int(r * short))`."""

    scale: tuple[int, int] = (2048, 512)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    ratios: tuple[float, ...] | None = None

    def __call__(self, image: PIL.Image.Image, mask: np.ndarray, rng: random.Random | None = None):
        """Returns pixel_values `(3, h, w)` float32 (h, w: the rescaled size), or with `ratios` a list of them, one
        per ratio, and labels `(H, W)` int64."""
        pixels = _to_tensor(image)
        if self.ratios is None:
            return self.rescaled(pixels, self.scale), torch.from_numpy(mask).long()
        scales = [tuple(int(side * ratio) for side in self.scale) for ratio in self.ratios]
        return [self.rescaled(pixels, scale) for scale in scales], torch.from_numpy(mask).long()

    def rescaled(self, pixels: torch.Tensor, scale: tuple[int, int]) -> torch.Tensor:
        size = list(_pil_size(*pixels.shape[-2:], scale))
        pixels = tvF.resize(pixels, size, tvF.InterpolationMode.BILINEAR, antialias=False)
        return normalize_uint8(pixels, self.mean, self.std)


class SegmentationDataset(torch.utils.data.Dataset):
    """
    A map-style dataset of image / annotation pairs as `{"pixel_values": (3, h, w), "labels": (H', W')}` items after
    `transform`. Item i of epoch e draws its augmentation from a generator seeded with (seed, e, i), so crops do not
    depend on the number of workers or processes, and are the same after resuming. An unreadable image or annotation
    goes to `bad_images` (skipped and logged by default); in training the next pair takes its place, in evaluation
    (`substitute=False`) the item is None, so that no image is scored twice (`segmentation_collator` drops it).
    """

    def __init__(
        self,
        dataset,
        image_column: str,
        mask_column: str,
        transform,
        reduce_labels: bool = False,
        seed: int = 0,
        bad_images: BadImagePolicy | None = None,
        num_labels: int | None = None,
        substitute: bool = True,
    ):
        self.dataset = undecoded(undecoded(dataset, image_column), mask_column)
        self.image_column, self.mask_column = image_column, mask_column
        self.transform, self.reduce_labels, self.seed, self.epoch = transform, reduce_labels, seed, 0
        self.bad_images, self.num_labels, self.substitute = bad_images or BadImagePolicy(), num_labels, substitute

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.dataset)

    def read(self, index: int) -> tuple[PIL.Image.Image, np.ndarray] | None:
        """Item `index` as an RGB image and its (reduced) annotation, or None when either file cannot be read (it goes
        to `bad_images` under its own name). An annotation that is not one of class indices, or not the image's size,
        is a mistake in the data: ValueError, naming both files."""
        example = self.dataset[index]
        image_file, mask_file = example[self.image_column], example[self.mask_column]
        files = []
        for value in (image_file, mask_file):
            try:
                files.append(open_image(value))
            except IMAGE_ERRORS as error:
                self.bad_images.handle(image_name(value, index), error)
                return None
        try:
            mask = read_mask(files[1])
        except ValueError as error:  # a file of the wrong kind: a mistake in the data, never skipped
            raise ValueError(f"The annotation {image_name(mask_file, index)} {error}") from None
        image = to_rgb(files[0])
        if mask.shape != (image.height, image.width):
            raise ValueError(
                f"The annotation {image_name(mask_file, index)} is {mask.shape[1]}x{mask.shape[0]} pixels, its image "
                f"{image_name(image_file, index)} {image.width}x{image.height}: an annotation labels each pixel of "
                "its image."
            )
        return image, reduce_zero_label(mask) if self.reduce_labels else mask

    def check_classes(self, mask: np.ndarray, index: int) -> None:
        """A class outside the model's is a mistake in the data or the arguments (never skipped like a bad file)."""
        outside = mask[(mask >= self.num_labels) & (mask != UNLABELED_PIXEL)] if self.num_labels is not None else []
        if len(outside):
            name = image_name(self.dataset[index][self.mask_column], index)
            raise ValueError(
                f"The annotation {name} holds class {outside[0]}, outside the {self.num_labels} classes "
                f"(0..{self.num_labels - 1}) and not the ignore index {UNLABELED_PIXEL}. Are ADE20K-style labels to be "
                "reduced (--reduce_zero_label), or are the class names (--id2label, --num_labels) incomplete?"
            )

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.dataset):  # also ends `for item in dataset`
            raise IndexError(f"item {index} of {len(self.dataset)}")
        for offset in range(MAX_BAD_IMAGES_IN_A_ROW):
            position = (int(index) + offset) % len(self.dataset)
            pair = self.read(position)
            if pair is None:
                if not self.substitute:
                    return None
                continue
            image, mask = pair
            self.check_classes(mask, position)
            # A generator of its own per (seed, epoch, item): string seeds are hashed the same in every process.
            pixels, labels = self.transform(image, mask, random.Random(f"{self.seed}/{self.epoch}/{int(index)}"))
            return {"pixel_values": pixels, "labels": labels}
        raise BadImageError(
            f"Items {index} to {position} are all unreadable ({MAX_BAD_IMAGES_IN_A_ROW} in a row): are "
            f"{self.image_column!r} and {self.mask_column!r} the image and annotation columns?"
        )


def segmentation_collator(items: list[dict | None]) -> dict[str, torch.Tensor] | None:
    """Stacks items of one size into `{"pixel_values": (B, 3, h, w), "labels": (B, H, W)}` (evaluation: B = 1), or
    items of several scales (`SegmentationEvalTransform.ratios`) into a list of `(B, 3, h_r, w_r)` pixel_values; the
    unreadable items of an evaluation set (None) are left out, and a batch of only those is None."""
    items = [item for item in items if item is not None]
    if not items:
        return None
    if isinstance(items[0]["pixel_values"], list | tuple):
        scales = zip(*(item["pixel_values"] for item in items), strict=True)
        return {
            "pixel_values": [torch.stack(scale) for scale in scales],
            "labels": torch.stack([item["labels"] for item in items]),
        }
    return {key: torch.stack([item[key] for item in items]) for key in ("pixel_values", "labels")}


def digits_segmentation_datasets(
    canvas_size: int = 64, digit_size: int = 32, num_train: int = 1000, num_validation: int = 100, seed: int = 0
) -> datasets.DatasetDict:
    """
    The offline demo set: scikit-learn's 8x8 digits, enlarged to `digit_size` (bicubic, as the pretraining demo sees
    them) and pasted 2 or 3 at a time at random places (overlapping by at most a quarter) on a black `canvas_size`
    square. Each pixel is labelled with
    the class of the digit drawn there (1 + the digit; 0 is the background; where digits overlap, the brighter wins).
    Train canvases use the digits' train split, validation canvases its validation and test splits, so the validation
    digits are unseen in pretraining. Columns: `image` (RGB) and `annotation` (L), classes
    `DIGITS_SEGMENTATION_CLASSES`.
    """
    digits = digits_datasets()
    rng = np.random.default_rng(seed)
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})

    def canvases(sources: list, count: int) -> datasets.Dataset:
        glyphs = [
            (
                np.asarray(example["image"].resize((digit_size,) * 2, PIL.Image.BICUBIC), dtype=np.int64),
                example["label"],
            )
            for source in sources
            for example in source
        ]
        images, annotations = [], []
        for _ in range(count):
            brightness = np.zeros((canvas_size, canvas_size), dtype=np.int64)
            owner = np.zeros((canvas_size, canvas_size), dtype=np.uint8)
            boxes = []
            for index in rng.choice(len(glyphs), size=rng.integers(2, 4), replace=False):
                glyph, label = glyphs[index]
                for _ in range(20):  # a place where the digit overlaps the others by at most a quarter
                    top, left = rng.integers(0, canvas_size - digit_size + 1, size=2)
                    overlap = sum(
                        max(0, digit_size - abs(top - y)) * max(0, digit_size - abs(left - x)) for y, x in boxes
                    )
                    if overlap <= digit_size**2 / 4:
                        break
                boxes.append((top, left))
                window = (slice(top, top + digit_size), slice(left, left + digit_size))
                brighter = glyph > brightness[window]
                brightness[window] = np.where(brighter, glyph, brightness[window])
                owner[window] = np.where(brighter, label + 1, owner[window])
            # Pixels darker than a quarter of full brightness are background: the digit's faint bicubic halo.
            annotation = np.where(brightness > 64, owner, 0).astype(np.uint8)
            images.append(PIL.Image.fromarray(brightness.clip(0, 255).astype(np.uint8)).convert("RGB"))
            annotations.append(PIL.Image.fromarray(annotation, mode="L"))
        return datasets.Dataset.from_dict({"image": images, "annotation": annotations}, features=features)

    return datasets.DatasetDict(
        {
            "train": canvases([digits["train"]], num_train),
            "validation": canvases([digits["validation"], digits["test"]], num_validation),
        }
    )
