"""Tests for SupMAEImageProcessor: the MAE eval transform, checked against torchvision on PIL images.

Differences are measured in de-normalized gray levels (0..255 units): `(ours - ref) * std * 255`.
"""

import base64
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T


try:
    from supmae.image_processing_supmae import SupMAEImageProcessor
except ImportError:
    # The package (its __init__ or a module it imports) may not be importable while it is being written;
    # the processor file is self-contained, so load it by path.
    _path = Path(__file__).resolve().parents[2] / "supmae" / "image_processing_supmae.py"
    _spec = importlib.util.spec_from_file_location("_supmae_image_processing", _path)
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    SupMAEImageProcessor = _module.SupMAEImageProcessor


MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
_MEAN = torch.tensor(MEAN).view(3, 1, 1)
_STD = torch.tensor(STD).view(3, 1, 1)

# The MAE / SupMAE eval transform as the official code writes it (main_finetune.py / util/datasets.py).
REFERENCE = T.Compose(
    [
        T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(224),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ]
)


@pytest.fixture(scope="module")
def processor():
    return SupMAEImageProcessor()


def natural_image(width, height, seed=0):
    """Smooth colour gradients plus pixel noise, saturating in places: (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack(
        [
            128 + 110 * np.sin(3 * x + y + seed),
            128 + 110 * np.cos(2 * y - x),
            128 + 100 * np.sin(5 * x * y + 0.5),
        ],
        axis=-1,
    )
    base += rng.normal(0, 12, base.shape)
    return np.clip(np.round(base), 0, 255).astype(np.uint8)


def gray_levels(pixel_values):
    """Normalized (..., 3, H, W) -> 0..255 units."""
    return (pixel_values * _STD + _MEAN) * 255


def level_diff(a, b):
    return ((a - b) * _STD * 255).abs()


def run(processor, images, **kwargs):
    return processor(images, return_tensors="pt", **kwargs)["pixel_values"]


# --- agreement with torchvision on PIL images --------------------------------------------------------


@pytest.mark.parametrize(
    "width, height",
    [(500, 375), (375, 500), (640, 480), (300, 300), (200, 150), (457, 331), (686, 512), (512, 686)],
)
def test_matches_torchvision_reference(processor, width, height):
    image = Image.fromarray(natural_image(width, height))
    ours = run(processor, image)
    reference = REFERENCE(image)
    assert ours.shape == (1, 3, 224, 224) and ours.dtype == torch.float32

    diff = level_diff(ours[0], reference)
    # torchvision's antialiased bicubic on uint8 CPU tensors reproduces PIL's filter (a = -0.5, fixed
    # point, horizontal pass then vertical, rounded and clipped in between); only the fixed-point
    # rounding differs. Measured on these images: max 2 gray levels (one value in 300x300 and one in
    # 200x150, else 1), mean <= 0.011, <= 1.1% of values differ at all. 1e-3 absorbs float32 error in
    # normalize / de-normalize. (686x512 and 512x686 have a crop margin of 119 -> offset 59.5, which
    # torchvision rounds to 60; Transformers' backend truncates to 59: off by mean 5, max 32 levels.)
    assert diff.max() <= 2 + 1e-3
    assert diff.mean() < 0.02
    assert (diff > 0.5).float().mean() < 0.02
    assert (diff > 1.5).sum() <= 2


def test_portrait_where_pillow_13_resizes_vertically_first(processor):
    # Pillow 13 runs the vertical pass first when the height shrinks much more than the width
    # (python-pillow/Pillow#9549); older Pillow, the one the official MAE numbers come from, and torch
    # always go horizontal first. The intermediate 8-bit rounding then differs.
    image = Image.fromarray(natural_image(330, 768))  # -> 256x595
    ours = run(processor, image)[0]
    bicubic = Image.Resampling.BICUBIC
    horizontal_first = image.resize((256, 768), bicubic).resize((256, 595), bicubic)
    after_resize = T.Compose([T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN, STD)])
    diff = level_diff(ours, after_resize(horizontal_first))
    assert diff.max() <= 2 + 1e-3 and diff.mean() < 0.02  # measured: max 1, mean 0.007
    # Against whatever order the installed Pillow picks. Measured with Pillow 13: mean 0.27, max 2
    # (up to 4 over 60 random sizes).
    diff = level_diff(ours, REFERENCE(image))
    assert diff.max() <= 4 + 1e-3 and diff.mean() < 0.35


def test_crop_offset_is_rounded_like_torchvision(processor):
    # No resampling involved: a 256x343 image is only cropped, so the match must be exact.
    image = Image.fromarray(natural_image(343, 256))
    ours = run(processor, image, do_resize=False)
    reference = T.Compose([T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN, STD)])(image)
    torch.testing.assert_close(ours[0], reference, rtol=0, atol=1e-5)


# --- geometry ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("width, height", [(600, 300), (300, 600), (400, 400)])
def test_centered_marker_stays_centered(processor, width, height):
    pixels = np.zeros((height, width, 3), np.uint8)
    cy, cx = height // 2, width // 2  # even sizes: a 20x20 block around the exact centre
    pixels[cy - 10 : cy + 10, cx - 10 : cx + 10] = 255
    brightness = gray_levels(run(processor, Image.fromarray(pixels))[0]).mean(0).clamp(min=0)
    rows, cols = torch.meshgrid(torch.arange(224.0), torch.arange(224.0), indexing="ij")
    total = brightness.sum()
    centroid = ((rows * brightness).sum() / total, (cols * brightness).sum() / total)
    assert abs(centroid[0] - 111.5) < 0.05 and abs(centroid[1] - 111.5) < 0.05


def test_wide_image_loses_equal_amounts_left_and_right(processor):
    # Red encodes x: R = 255 * x / (W - 1). 600x300 -> 512x256 -> crop drops 144 columns on each side.
    width, height = 600, 300
    ramp = np.round(np.linspace(0, 255, width)).astype(np.uint8)
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[..., 0] = ramp
    red = gray_levels(run(processor, Image.fromarray(pixels))[0])[0].mean(0)  # per output column
    scale = 512 / width
    for column in (0, 111, 223):
        source_x = (144 + column + 0.5) / scale - 0.5
        assert abs(red[column].item() - 255 * source_x / (width - 1)) < 1.0
    # Symmetric about the middle of the ramp.
    torch.testing.assert_close(red + red.flip(0), torch.full_like(red, 255.0), rtol=0, atol=1.0)


def test_crop_larger_than_resize_pads_black_like_torchvision():
    # crop_pct 224 / 200 > 1: the shorter side goes to 200 < crop 224, and both sides are zero-padded (black)
    # symmetrically, as CenterCrop does.
    processor = SupMAEImageProcessor(size={"shortest_edge": 224}, crop_pct=224 / 200)
    image = Image.fromarray(natural_image(300, 200))
    ours = run(processor, image)[0]
    reference = T.Compose(
        [
            T.Resize(200, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )(image)
    assert ours.shape == (3, 224, 224)
    assert level_diff(ours, reference).max() <= 1 + 1e-3
    levels = gray_levels(ours)
    assert levels[:, :12].abs().max() < 1e-3 and levels[:, -12:].abs().max() < 1e-3  # 24 rows of padding
    assert levels[:, 12:-12].mean() > 50


def test_int_size_means_shortest_edge():
    processor = SupMAEImageProcessor(size=256)
    assert dict(processor.size) == {"shortest_edge": 256}
    assert run(processor, Image.fromarray(natural_image(400, 300))).shape == (1, 3, 256, 256)
    # The explicit form with ints (resize 288, crop 256) reads as the crop_pct form.
    processor = SupMAEImageProcessor(size=288, crop_size=256)
    assert dict(processor.size) == {"shortest_edge": 256} and processor.crop_pct == 256 / 288
    assert run(processor, Image.fromarray(natural_image(400, 300))).shape == (1, 3, 256, 256)


# --- PIL modes --------------------------------------------------------------------------------------


def solid(mode, value, size=(40, 30)):
    return Image.new(mode, size, value)


def rgb_of(processor, image):
    """Mean de-normalized RGB of a (constant) image: a length-3 tensor in 0..255."""
    out = run(processor, image)
    assert out.shape == (1, 3, 224, 224)
    return gray_levels(out[0]).mean(dim=(1, 2))


def p_image(transparent):
    image = Image.new("P", (40, 30), 1)
    image.putpalette([0, 0, 0, 200, 30, 60] + [0] * 762)
    if transparent:
        image.info["transparency"] = 1
    return image


def sixteen_bit(value):
    return Image.fromarray(np.full((30, 40), value, np.uint16))  # mode "I;16"


def int32_image(value):
    return Image.fromarray(np.full((30, 40), value, np.int32))  # mode "I"


def float_image(value):
    return Image.fromarray(np.full((30, 40), value, np.float32))  # mode "F"


WHITE, BLACK = (255, 255, 255), (0, 0, 0)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: solid("RGB", (10, 200, 90)), (10, 200, 90)),
        (lambda: solid("L", 77), (77, 77, 77)),
        (lambda: solid("LA", (77, 255)), (77, 77, 77)),
        (lambda: solid("LA", (0, 0)), WHITE),  # fully transparent -> white
        (lambda: solid("RGBA", (255, 0, 0, 255)), (255, 0, 0)),
        (lambda: solid("RGBA", (255, 0, 0, 0)), WHITE),
        (lambda: solid("RGBA", (0, 0, 0, 0)), WHITE),
        (lambda: solid("RGBA", (255, 0, 0, 128)), (255, 127, 127)),  # half over white
        (lambda: solid("RGBA", (255, 0, 0, 128)).convert("RGBa"), (255, 127, 127)),  # premultiplied
        (lambda: p_image(transparent=False), (200, 30, 60)),
        (lambda: p_image(transparent=True), WHITE),
        (lambda: solid("PA", (1, 0)), WHITE),
        (lambda: solid("CMYK", (0, 0, 0, 0)), WHITE),
        (lambda: solid("CMYK", (0, 255, 255, 0)), (255, 0, 0)),
        (lambda: solid("CMYK", (0, 0, 0, 255)), BLACK),
        (lambda: solid("1", 1), WHITE),
        (lambda: solid("1", 0), BLACK),
        (lambda: sixteen_bit(65535), WHITE),
        (lambda: sixteen_bit(32768), (128, 128, 128)),  # mid-gray, not clipped to white as PIL would
        (lambda: sixteen_bit(200), (1, 1, 1)),  # 16-bit 200 is nearly black
        (lambda: Image.frombytes("I;16B", (40, 30), np.full((30, 40), 32768, ">u2").tobytes()), (128,) * 3),
        (lambda: int32_image(65535), WHITE),
        (lambda: int32_image(32768), (128, 128, 128)),
        (lambda: int32_image(200), (200, 200, 200)),  # "I" holding 8-bit data (e.g. L.convert("I"))
        (lambda: float_image(1.0), WHITE),  # "F" in [0, 1]
        (lambda: float_image(0.5), (128, 128, 128)),
        (lambda: float_image(200.0), (200, 200, 200)),  # "F" on PIL's 0..255 scale
        (lambda: float_image(1000.0), WHITE),  # clipped
        (lambda: solid("RGB", (255, 0, 0)).convert("YCbCr"), (255, 0, 0)),
        (lambda: solid("HSV", (0, 255, 255)), (255, 0, 0)),
        (lambda: solid("RGB", (255, 255, 255)).convert("LAB"), WHITE),
    ],
)
def test_pil_modes_become_the_right_rgb(processor, make, expected):
    image = make()
    # PIL's own YCbCr / LAB round trips are off by a level or two; every other case is exact.
    tolerance = 2.5 if image.mode in ("YCbCr", "LAB") else 0.01
    expected = torch.tensor(expected, dtype=torch.float32)
    torch.testing.assert_close(rgb_of(processor, image), expected, rtol=0, atol=tolerance)


def test_opaque_red_rgba_gives_the_normalized_red(processor):
    out = run(processor, solid("RGBA", (255, 0, 0, 255)))[0]
    expected = torch.tensor([(1 - MEAN[0]) / STD[0], (0 - MEAN[1]) / STD[1], (0 - MEAN[2]) / STD[2]])
    torch.testing.assert_close(out.mean(dim=(1, 2)), expected, rtol=0, atol=1e-5)
    assert out.std(dim=(1, 2)).max() < 1e-5


def test_sixteen_bit_gradient_keeps_its_tones(processor):
    # A 16-bit ramp must come out as the corresponding 8-bit ramp, not saturated. Exact equality with
    # the PIL path on the same tones scaled to 8 bits (round(v / 257)).
    values = np.tile(np.linspace(0, 65535, 400).round().astype(np.uint16), (300, 1))
    eight_bit = np.round(values / 257).astype(np.uint8)
    torch.testing.assert_close(run(processor, Image.fromarray(values)), run(processor, Image.fromarray(eight_bit)))


# --- arrays and tensors agree with the PIL path -----------------------------------------------------


@pytest.fixture(scope="module")
def rgb_pixels():
    return natural_image(500, 375, seed=1)


@pytest.fixture(scope="module")
def pil_output(processor, rgb_pixels):
    return run(processor, Image.fromarray(rgb_pixels))


@pytest.mark.parametrize(
    "convert",
    [
        lambda p: p,  # numpy HWC uint8
        lambda p: np.ascontiguousarray(p.transpose(2, 0, 1)),  # numpy CHW uint8
        lambda p: torch.from_numpy(p).permute(2, 0, 1),  # torch CHW uint8
        lambda p: torch.from_numpy(p),  # torch HWC uint8
        lambda p: p[:, ::-1][:, ::-1],  # non-contiguous view
        lambda p: p[None],  # a batch of one, (1, H, W, C)
    ],
    ids=["np_hwc", "np_chw", "torch_chw", "torch_hwc", "np_strided", "np_batch"],
)
def test_uint8_arrays_match_pil_exactly(processor, rgb_pixels, pil_output, convert):
    # Same uint8 pixels, same tensor path: identical output.
    torch.testing.assert_close(run(processor, convert(rgb_pixels)), pil_output, rtol=0, atol=0)


@pytest.mark.parametrize(
    "convert",
    [
        lambda p: p.astype(np.float32) / 255,  # numpy HWC float in [0, 1]
        lambda p: np.ascontiguousarray(p.transpose(2, 0, 1)).astype(np.float64) / 255,  # numpy CHW float64
        lambda p: torch.from_numpy(p).permute(2, 0, 1).float() / 255,  # torch CHW float in [0, 1]
        lambda p: p.astype(np.float32),  # float on the 0..255 scale
        lambda p: p.astype(np.int64),  # other integer types are 0..255
    ],
    ids=["np_float01_hwc", "np_float64_chw", "torch_float01", "np_float255", "np_int64"],
)
def test_float_arrays_match_pil(processor, rgb_pixels, pil_output, convert):
    diff = level_diff(run(processor, convert(rgb_pixels)), pil_output)
    # Floats are resized in float; the PIL path rounds to uint8 after each of its two resize passes and
    # clips in between. Measured: mean 0.30, max 1.74 gray levels (the max where the image saturates).
    assert diff.mean() < 0.35
    assert diff.max() < 2.0


def test_do_rescale_false_keeps_float_inputs_as_given(processor, rgb_pixels, pil_output):
    # The usual Transformers idiom for already-scaled floats still works.
    diff = level_diff(run(processor, rgb_pixels.astype(np.float32) / 255, do_rescale=False), pil_output)
    assert diff.mean() < 0.35 and diff.max() < 2.0


@pytest.mark.parametrize(
    "convert",
    [lambda g: g, lambda g: g[None], lambda g: g[..., None], lambda g: torch.from_numpy(g)],
    ids=["np_hw", "np_1hw", "np_hw1", "torch_hw"],
)
def test_grayscale_arrays_match_pil_l(processor, rgb_pixels, convert):
    gray = np.ascontiguousarray(rgb_pixels[..., 1])
    expected = run(processor, Image.fromarray(gray))  # mode "L"
    torch.testing.assert_close(run(processor, convert(gray)), expected, rtol=0, atol=0)


def test_rgba_array_matches_pil_rgba(processor, rgb_pixels):
    alpha = np.random.default_rng(2).integers(0, 256, rgb_pixels.shape[:2] + (1,), dtype=np.uint8)
    rgba = np.concatenate([rgb_pixels, alpha], axis=-1)
    expected = run(processor, Image.fromarray(rgba))
    # Composited onto white with rounding, as PIL's alpha_composite: identical.
    torch.testing.assert_close(run(processor, rgba), expected, rtol=0, atol=0)
    # Float RGBA in [0, 1] is composited and resized in float. With this per-pixel random alpha (far
    # noisier than a photo) measured: mean 0.32, max 3.6 gray levels from PIL's rounded path.
    diff = level_diff(run(processor, rgba.astype(np.float32) / 255), expected)
    assert diff.mean() < 0.4 and diff.max() < 4.0


def test_uint16_arrays_match_pil_sixteen_bit(processor):
    values = np.random.default_rng(3).integers(0, 65536, (300, 400), dtype=np.uint16)
    expected = run(processor, Image.fromarray(values))  # mode "I;16"
    torch.testing.assert_close(run(processor, values), expected, rtol=0, atol=0)
    torch.testing.assert_close(run(processor, torch.from_numpy(values.astype(np.int32)).to(torch.uint16)), expected)


def test_batched_list_of_mixed_kinds_and_sizes(processor):
    images = [
        Image.fromarray(natural_image(500, 375, seed=4)),
        natural_image(375, 500, seed=5),
        torch.from_numpy(natural_image(640, 480, seed=6)).permute(2, 0, 1),
        np.ascontiguousarray(natural_image(300, 300, seed=7)[..., 0]),  # 2-D gray
        Image.fromarray(natural_image(200, 150, seed=8)).convert("RGBA"),
    ]
    batch = run(processor, images)
    assert batch.shape == (5, 3, 224, 224) and batch.dtype == torch.float32
    for i, image in enumerate(images):
        torch.testing.assert_close(batch[i : i + 1], run(processor, image), rtol=0, atol=0)
    # A nested list is flattened the same way.
    torch.testing.assert_close(run(processor, [images[:2], images[2:]]), batch, rtol=0, atol=0)


def test_default_return_is_a_batched_tensor_and_none_gives_a_list(processor):
    image = Image.fromarray(natural_image(300, 300))
    assert processor(image)["pixel_values"].shape == (1, 3, 224, 224)
    as_list = processor([image, image], return_tensors=None)["pixel_values"]
    assert isinstance(as_list, list) and len(as_list) == 2 and as_list[0].shape == (3, 224, 224)


# --- strings: paths and base64 ----------------------------------------------------------------------


def test_paths_and_base64_load_with_the_same_mode_handling(processor, tmp_path):
    half_red = solid("RGBA", (255, 0, 0, 128), size=(64, 48))
    path = tmp_path / "half_red.png"
    half_red.save(path)
    expected = run(processor, half_red)
    torch.testing.assert_close(run(processor, str(path)), expected, rtol=0, atol=0)
    encoded = base64.b64encode(path.read_bytes()).decode()
    torch.testing.assert_close(run(processor, encoded), expected, rtol=0, atol=0)
    torch.testing.assert_close(run(processor, "data:image/png;base64," + encoded), expected, rtol=0, atol=0)

    mid_gray = sixteen_bit(32768)
    path16 = tmp_path / "gray16.png"
    mid_gray.save(path16)
    torch.testing.assert_close(rgb_of(processor, str(path16)), torch.full((3,), 128.0), rtol=0, atol=0.01)


def test_exif_orientation_is_applied_to_files(processor, tmp_path):
    pixels = natural_image(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", exif=exif, quality=95)
    path.write_bytes(buffer.getvalue())
    upright = Image.open(buffer).transpose(Image.Transpose.ROTATE_270)
    torch.testing.assert_close(run(processor, str(path)), run(processor, upright), rtol=0, atol=0)


# --- save / load ------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    processor = SupMAEImageProcessor()
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "SupMAEImageProcessor"
    assert saved["size"] == {"shortest_edge": 224} and saved["crop_pct"] == 0.875  # ConvNeXt's convention
    assert "crop_size" not in saved
    assert saved["resample"] == 3  # PIL bicubic
    assert saved["image_mean"] == list(MEAN) and saved["image_std"] == list(STD)
    assert saved["rescale_factor"] == pytest.approx(1 / 255)
    for flag in ("do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb"):
        assert saved[flag] is True, flag

    loaded = SupMAEImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    image = Image.fromarray(natural_image(500, 375))
    torch.testing.assert_close(run(loaded, image), run(processor, image), rtol=0, atol=0)


def test_custom_settings_survive_the_round_trip(tmp_path):
    processor = SupMAEImageProcessor(size={"shortest_edge": 256}, crop_pct=0.9)
    processor.save_pretrained(tmp_path)
    loaded = SupMAEImageProcessor.from_pretrained(tmp_path)
    assert dict(loaded.size) == {"shortest_edge": 256} and loaded.crop_pct == 0.9
    assert run(loaded, Image.fromarray(natural_image(400, 300))).shape == (1, 3, 256, 256)


# --- bad input --------------------------------------------------------------------------------------


def test_string_that_is_not_an_image_source(processor):
    with pytest.raises(ValueError, match=r"not an existing file, an http\(s\) URL or a base64-encoded image"):
        processor("definitely not an image.jpg")
    with pytest.raises(ValueError, match="not an existing file"):
        processor("aGVsbG8gd29ybGQ=")  # valid base64 ("hello world") but not an image


def test_five_channel_array(processor):
    with pytest.raises(ValueError, match=r"1, 3 or 4 channels.*\(5, 64, 64\)"):
        processor(np.zeros((5, 64, 64), np.uint8))
    with pytest.raises(ValueError, match=r"1, 3 or 4 channels.*\(64, 64, 5\)"):
        processor(np.zeros((64, 64, 5), np.uint8))


def test_empty_list(processor):
    with pytest.raises(ValueError, match="empty list of images"):
        processor([])
    with pytest.raises(ValueError, match="empty list of images"):
        processor([[]])


def test_wrong_rank_and_type(processor):
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 4, 5, 6\)"):
        processor(np.zeros((2, 3, 4, 5, 6), np.uint8))
    with pytest.raises(TypeError, match="Expected a PIL image, numpy array, torch tensor.*got int"):
        processor(3)


# --- shipped as remote code ---------------------------------------------------------------------------


def test_processor_file_is_self_contained():
    # save_pretrained copies the file next to a checkpoint; it must not import the rest of the package.
    import ast
    import sys

    path = Path(__file__).resolve().parents[2] / "supmae" / "image_processing_supmae.py"
    allowed = {"torch", "torchvision", "PIL", "numpy", "transformers"} | set(sys.stdlib_module_names)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import: from {'.' * node.level}{node.module}"
            assert node.module.split(".")[0] in allowed, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name.split(".")[0] in allowed, alias.name

    spec = importlib.util.spec_from_file_location("standalone_image_processing_supmae", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    image = Image.fromarray(natural_image(300, 200))
    torch.testing.assert_close(run(module.SupMAEImageProcessor(), image), run(SupMAEImageProcessor(), image))


def test_http_url_on_localhost(processor, tmp_path):
    import functools
    import http.server
    import threading

    image = solid("RGBA", (0, 0, 255, 64), size=(64, 48))
    image.save(tmp_path / "blue.png")

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/blue.png"
        torch.testing.assert_close(run(processor, url), run(processor, image), rtol=0, atol=0)
    finally:
        server.shutdown()
        server.server_close()
