# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""The image transforms of the recipes: MAE's pretraining crop (decoded straight into tensors), timm's fine-tuning
augmentation and the evaluation transform."""

import contextlib
import functools
import io
import math
import random

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
import torchvision.transforms.v2.functional as tvF
from torchvision.io import ImageReadMode, decode_jpeg

from ..configuration_supmae import size_pair
from ..image_processing_supmae import SupMAEImageProcessor
from .images import _exif_orientation, check_image_size, encoded_bytes, open_image, to_rgb


IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


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
    (out_height, out_width), crop_width, crop_height = size_pair(size), box[2] - box[0], box[3] - box[1]
    if image.format == "JPEG" and crop_width >= 2 * out_width and crop_height >= 2 * out_height:
        image.draft("RGB", (math.ceil(width * out_width / crop_width), math.ceil(height * out_height / crop_height)))
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

    def __init__(self, image_size, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), mean=IMAGENET_MEAN, std=IMAGENET_STD):
        """`image_size`: the output's side, or its (height, width)."""
        self.image_size, self.scale, self.ratio = size_pair(image_size), scale, ratio
        self.mean, self.std = mean, std

    def __call__(self, image, rng: random.Random | None = None) -> torch.Tensor:
        """`image`: a PIL image, the file's bytes, or datasets' `{"bytes", "path"}`. Returns `(3, H, W)` float32. An
        image more elongated than `MAX_ASPECT_RATIO` is refused from its header (`UnacceptableImageError`)."""
        data = encoded_bytes(image)
        if data is not None:
            image = PIL.Image.open(io.BytesIO(data))  # the header only
            check_image_size(*image.size)
            if _exif_orientation(image):  # rare: decode and rotate with PIL first
                image, data = open_image(data), None
        else:
            check_image_size(*image.size)
        box = random_resized_crop_box(*image.size, self.scale, self.ratio, rng)
        pixels, box = self._decode(image, data, box)
        left, top, right, bottom = (round(v) for v in box)
        crop = tvF.resize(
            pixels[:, top:bottom, left:right], list(self.image_size), tvF.InterpolationMode.BICUBIC, antialias=True
        )
        if (rng or random).random() < 0.5:
            crop = crop.flip(-1)
        return normalize_uint8(crop, self.mean, self.std)

    def _decode(self, image: PIL.Image.Image, data: bytes | None, box) -> tuple[torch.Tensor, tuple]:
        """`(3, H, W)` uint8 pixels and the crop box in them."""
        (height, width), crop_width, crop_height = self.image_size, box[2] - box[0], box[3] - box[1]
        crop_is_small = crop_width < 2 * width or crop_height < 2 * height
        if data is not None and image.format == "JPEG" and image.mode in ("RGB", "L") and crop_is_small:
            return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB), box
        image, box = decode_for_crop(image, box, self.image_size)
        return torch.from_numpy(np.array(image)).permute(2, 0, 1), box


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


@contextlib.contextmanager
def seeded_global_rngs(seed: int):
    """Python's, numpy's and torch's (CPU) global generators seeded with `seed` inside the block and restored after:
    code that draws from them (timm's transforms and mixup) gives the same result for the same seed, whatever drew
    before, and leaves the training's own draws (dropout, drop path) where they were."""
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])


class TimmTrainTransform:
    """MAE's fine-tuning augmentation through timm's `create_transform`: RandomResizedCrop, flip, RandAugment
    (`rand-m9-mstd0.5-inc1`), random erasing (0.25). timm draws from the global generators; with a per-sample `rng`
    (`TransformedImageDataset`'s) they are seeded from it for the sample, so an item's augmentation is a function of
    (seed, epoch, index), and a resumed run sees the same images as an uninterrupted one."""

    def __init__(
        self,
        image_size,
        auto_augment: str | None = "rand-m9-mstd0.5-inc1",
        reprob: float = 0.25,
        scale=(0.08, 1.0),
    ):
        from timm.data import auto_augment as timm_auto_augment
        from timm.data import create_transform

        self.transform = create_transform(
            input_size=(3, *size_pair(image_size)),
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
        if rng is None:
            return self.transform(to_rgb(image))
        with seeded_global_rngs(rng.getrandbits(32)):
            return self.transform(to_rgb(image))


def _posterize(image: PIL.Image.Image, bits_to_keep: int, **kwargs) -> PIL.Image.Image:
    # timm's increasing posterize reaches 0 bits at the top magnitudes. Pillow <= 12 made that a black image; Pillow 13
    # raises ("bits must be between or equal to 1 and 8"). Keep the old result.
    if bits_to_keep >= 8:
        return image
    if bits_to_keep <= 0:
        return PIL.Image.new(image.mode, image.size)
    return PIL.ImageOps.posterize(image, bits_to_keep)


def eval_image_processor(image_size, crop_fraction: float = 0.875) -> SupMAEImageProcessor:
    """MAE's evaluation transform for `image_size` (an int or a (height, width) pair): the shorter side to
    `round(side / crop_fraction)` (256 for 224 px), bicubic, then the center crop of `image_size`. Stored as ConvNeXt
    stores it, so that recipes reading `size` see the model's input: `size` = the crop, `crop_pct` = `crop_fraction`."""
    height, width = size_pair(image_size)
    size = {"shortest_edge": height} if height == width else {"height": height, "width": width}
    return SupMAEImageProcessor(size=size, crop_pct=crop_fraction)
