"""supmae.data.transforms: MAE's pretraining crop (torchvision's RandomResizedCrop distribution and pixels, large
JPEGs decoded at reduced scale), the flip, and timm's fine-tuning augmentation."""

import io
import math
import random

import numpy as np
import torch
import torchvision.transforms.v2 as T
from PIL import Image

from supmae.data.transforms import (
    PretrainingTransform,
    TimmTrainTransform,
    _posterize,
    decode_for_crop,
    random_resized_crop_box,
)


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


def test_randaugment_survives_pillow_13_posterize():
    """timm's increasing posterize asks for 0 bits at its top magnitude; Pillow 13 raises there, Pillow <= 12 gave a
    black image, which the transform keeps. Deterministically: the transform's own posterize op, always applied, at
    the magnitude that gives 0 bits."""
    from timm.data.auto_augment import RandAugment

    from supmae.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    transform = TimmTrainTransform(32, reprob=0.0)  # no random erasing: the output is a function of the ops alone
    [randaugment] = [step for step in transform.transform.transforms if isinstance(step, RandAugment)]
    [posterize] = [op for op in randaugment.ops if op.name == "PosterizeIncreasing"]
    posterize.prob, posterize.magnitude_std = 1.0, 0.0  # always applied, at exactly its magnitude
    assert posterize.level_fn(10, posterize.hparams) == (0,)  # timm's top magnitude keeps 0 bits
    posterize.magnitude = 10
    black = posterize(image)
    assert (black.size, black.mode) == (image.size, image.mode) and np.asarray(black).max() == 0
    posterize.magnitude = 5  # 4 - int(5 / 10 * 4) = 2 bits
    np.testing.assert_array_equal(np.asarray(posterize(image)), np.asarray(image) & 0b11000000)
    assert _posterize(image, 8) is image

    # The whole transform with posterize as RandAugment's only op (drawn for each of its layers): a black crop,
    # normalized, whatever the crop and the flip.
    randaugment.ops = [posterize]
    posterize.magnitude = 10
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(transform(image), (-mean / std).expand(3, 32, 32))
