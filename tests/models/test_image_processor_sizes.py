"""SupMAEImageProcessor's size convention: `size` is the model's input and `crop_pct` the share of the resized image
that the center crop keeps (ConvNeXt's convention), and directories saved with the older explicit form (resize 256,
crop 224) load with the same pixels.

The pixels of the torchvision reference are checked in tests/models/test_image_processing.py; here the resize and crop
sizes are checked exactly, against torchvision's tensor functions on uint8 images (no rescaling, no normalization).
"""

import json

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as tvF
from transformers import AutoImageProcessor

from supmae import SupMAEImageProcessor
from supmae.data.transforms import eval_image_processor
from supmae.image_processing_supmae import resize_size_for_crop


# preprocessor_config.json as supmae 0.1 wrote it before the crop_pct convention: the default (MAE's 256 / 224) and
# the 32 px demo's (`eval_image_processor(32)`: 37 / 32).
OLD_STYLE = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "SupMAEImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "return_tensors": "pt",
    "size": {"shortest_edge": 256},
}
OLD_STYLE_DEMO = {**OLD_STYLE, "crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 37}}


def uint8_image(height, width, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, height, width), dtype=np.uint8))


def levels(processor, image):
    """The processor's crop in 0..255 (no rescaling or normalization), (3, h, w)."""
    return processor(image, do_rescale=False, do_normalize=False, return_tensors="pt").pixel_values[0].float()


def resize_then_crop(image, resize, crop):
    """torchvision: `Resize(resize)` (an int: the shorter side) with antialiased bicubic, then `CenterCrop(crop)`."""
    resized = tvF.resize(image, resize, interpolation=InterpolationMode.BICUBIC, antialias=True)
    return tvF.center_crop(resized, crop).to(torch.float32)


IMAGE_SIZES = [(300, 417), (417, 300), (256, 256), (600, 224), (191, 1000), (37, 50)]


@pytest.mark.parametrize("height, width", IMAGE_SIZES)
def test_default_is_maes_resize_256_and_crop_224(height, width):
    processor = SupMAEImageProcessor()
    assert dict(processor.size) == {"shortest_edge": 224} and processor.crop_pct == 0.875
    image = uint8_image(height, width)
    torch.testing.assert_close(levels(processor, image), resize_then_crop(image, 256, 224), rtol=0, atol=0)


@pytest.mark.parametrize("config", [OLD_STYLE, OLD_STYLE_DEMO], ids=["224", "demo-32"])
def test_an_old_style_directory_loads_with_the_same_pixels(tmp_path, config):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config, indent=2))
    crop, resize = config["crop_size"]["height"], config["size"]["shortest_edge"]
    for loaded in (SupMAEImageProcessor.from_pretrained(tmp_path), AutoImageProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is SupMAEImageProcessor
        # Read in the crop_pct form, which recipes that look at `size` understand.
        assert dict(loaded.size) == {"shortest_edge": crop} and loaded.crop_size is None
        assert loaded.crop_pct == pytest.approx(crop / resize)
        for height, width in IMAGE_SIZES:
            image = uint8_image(height, width, seed=height)
            torch.testing.assert_close(levels(loaded, image), resize_then_crop(image, resize, crop), rtol=0, atol=0)
    # Saved again, it is written in the new form, and reads back the same.
    loaded.save_pretrained(tmp_path / "again")
    saved = json.loads((tmp_path / "again" / "preprocessor_config.json").read_text())
    assert saved["size"] == {"shortest_edge": crop} and "crop_size" not in saved
    again = SupMAEImageProcessor.from_pretrained(tmp_path / "again")
    image = uint8_image(300, 417)
    torch.testing.assert_close(levels(again, image), levels(loaded, image), rtol=0, atol=0)


@pytest.mark.parametrize("image_size", [16, 24, 32, 64, 96, 128, 192, 224, 256, 384, 448, 512])
def test_eval_image_processor_resizes_to_image_size_over_0875(image_size):
    """The tooling's processor: shorter side to round(image_size / 0.875), as before the convention changed."""
    processor = eval_image_processor(image_size)
    assert dict(processor.size) == {"shortest_edge": image_size} and processor.crop_pct == 0.875
    image = uint8_image(300, 417)
    expected = resize_then_crop(image, round(image_size / 0.875), image_size)
    torch.testing.assert_close(levels(processor, image), expected, rtol=0, atol=0)


def test_a_rectangular_crop_spans_crop_pct_along_its_tighter_side():
    # A 32x64 crop of a square image: the width binds (64 / 100 > 32 / 100), 64 / 0.875 = 73.1 -> 73 x 73.
    assert resize_size_for_crop((100, 100), (32, 64), 0.875) == (73, 73)
    # A tall image under the same crop: still the width (64 / 100 > 32 / 400), height follows the aspect ratio.
    assert resize_size_for_crop((400, 100), (32, 64), 0.875) == (292, 73)
    # A very wide image: the height binds (32 / 100 > 64 / 1000).
    assert resize_size_for_crop((100, 1000), (32, 64), 0.875) == (37, 370)
    # Square crops: the shorter side to round(S / crop_pct), the longer as torchvision's Resize(int) computes it.
    assert resize_size_for_crop((300, 417), (224, 224), 0.875) == (256, int(256 * 417 / 300))
    assert resize_size_for_crop((417, 300), (224, 224), 0.875) == (int(256 * 417 / 300), 256)
    processor = SupMAEImageProcessor(size={"height": 32, "width": 64})
    for height, width in [(100, 100), (400, 100), (100, 1000), (20, 300)]:
        image = uint8_image(height, width)
        resized = resize_size_for_crop((height, width), (32, 64), 0.875)
        assert resized[0] >= 32 and resized[1] >= 64  # never padded
        expected = tvF.center_crop(
            tvF.resize(image, list(resized), interpolation=InterpolationMode.BICUBIC, antialias=True), [32, 64]
        ).to(torch.float32)
        torch.testing.assert_close(levels(processor, image), expected, rtol=0, atol=0)


def test_the_explicit_form_keeps_its_meaning_for_other_crops():
    """A rectangular `crop_size` next to a shortest-edge `size` (the explicit form) resizes to `size`, crops
    `crop_size`, as before; `crop_pct` is not used."""
    processor = SupMAEImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 200})
    assert dict(processor.size) == {"shortest_edge": 256}
    assert dict(processor.crop_size) == {"height": 224, "width": 200}
    image = uint8_image(300, 417)
    torch.testing.assert_close(levels(processor, image), resize_then_crop(image, 256, [224, 200]), rtol=0, atol=0)


def test_without_the_center_crop_size_is_the_resize():
    processor = SupMAEImageProcessor(do_center_crop=False)
    assert levels(processor, uint8_image(300, 417)).shape == (3, 224, int(224 * 417 / 300))


def test_sizes_the_convention_cannot_read_name_the_problem():
    with pytest.raises(ValueError, match=r"size must be \{'shortest_edge': S\}.*or \{'height': h, 'width': w\}"):
        SupMAEImageProcessor(size={"shortest_edge": 224, "longest_edge": 448})(uint8_image(30, 40))
    with pytest.raises(ValueError, match="crop_pct must be a number > 0"):
        SupMAEImageProcessor(crop_pct=0)(uint8_image(30, 40))
