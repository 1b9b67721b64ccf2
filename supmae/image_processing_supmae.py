# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Image processor for SupMAE: the MAE / SupMAE evaluation transform.

Self-contained on purpose (imports only the standard library, torch, torchvision, PIL, numpy and
transformers): `save_pretrained` ships this file next to a checkpoint as Hub remote code.
"""

import base64
import binascii
import io
import os
import struct
import urllib.request
import zlib

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from torchvision.transforms.v2 import functional as tvF
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_processing_base import BatchFeature
from transformers.image_transforms import group_images_by_shape, reorder_images
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    PILImageResampling,
    SizeDict,
    infer_channel_dimension_format,
)
from transformers.processing_utils import ImagesKwargs


# What reading a broken image file raises: PIL (UnidentifiedImageError is an OSError; truncated files, broken
# streams), torchvision's JPEG decoder (RuntimeError), zlib and struct inside PIL's plugins, and PIL's guard against
# decompression bombs (more than 2 x PIL.Image.MAX_IMAGE_PIXELS pixels).
IMAGE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    RuntimeError,
    EOFError,
    struct.error,
    zlib.error,
    PIL.Image.DecompressionBombError,
)
# The most pixels a resize may make of one image: 32 Mi pixels (96 MiB as uint8 RGB, 384 MiB as float32). The
# shorter side goes to 256, so a 1 x 400000 strip would otherwise become 256 x 102 400 000 pixels (hundreds of GB);
# an image of aspect ratio 100 needs 6.6 M pixels.
MAX_RESIZED_PIXELS = 2**25

# PIL modes whose pixels are not 8-bit: PIL's own `convert("RGB")` clips them at 255, which turns
# most of a 16-bit image white. They are rescaled by their bit depth instead.
_HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")
# Modes that carry an alpha band. (`"A" in image.getbands()` is not a test for alpha: LAB has an
# "A" colour band.)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _high_bit_depth_to_uint8(image: PIL.Image.Image) -> np.ndarray:
    """(H, W) uint8 gray levels of an "I;16*", "I" or "F" image, scaled by its bit depth.

    - "I;16*": 16-bit container, 0..65535 -> 0..255 (65535 is white, 32768 is mid-gray 128).
    - "I" (32-bit signed container, which holds 8-, 16- or 32-bit data depending on the writer):
      the smallest of 8 / 16 / 31 bits that holds the image's maximum. Values <= 255 are read as
      8-bit, exactly as PIL reads them; only images PIL would clip are rescaled.
    - "F": read as [0, 1] when every value lies in [0, 1] (the float convention of this processor,
      see `SupMAEImageProcessor`), otherwise on PIL's 0..255 scale.
    Negative values and values above the top of the range are clipped.
    """
    values = np.asarray(image).astype(np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
    if image.mode.startswith("I;16"):
        values = values * (255.0 / 65535.0)
    elif image.mode == "I":
        peak = values.max(initial=0.0)
        if peak > 65535:
            values = values * (255.0 / (2**31 - 1))
        elif peak > 255:
            values = values * (255.0 / 65535.0)
    elif values.size and values.min() >= 0.0 and values.max() <= 1.0:  # "F" in [0, 1]
        values = values * 255.0
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def pil_to_rgb_array(image: PIL.Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB array of a PIL image of any mode.

    Transparency (an alpha band, or a "transparency" entry for "P", "L" and "RGB" images) is composited
    onto white, Transformers' convention. High-bit-depth gray modes go through
    `_high_bit_depth_to_uint8`; every other mode uses PIL's own conversion ("CMYK" (0, 0, 0, 0) is white,
    "1" is 0 / 255, "YCbCr", "HSV", "LAB" are converted as colours).
    """
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        gray = _high_bit_depth_to_uint8(image)
        return np.repeat(gray[:, :, None], 3, axis=2)

    if image.mode in _ALPHA_MODES or image.info.get("transparency") is not None:
        if image.mode == "La":  # premultiplied; PIL only converts it to "LA"
            image = image.convert("LA")
        rgba = image.convert("RGBA")  # also un-premultiplies "RGBa"
        white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(PIL.Image.alpha_composite(white, rgba).convert("RGB"))

    return np.asarray(image.convert("RGB"))


def _load_image_from_string(source: str) -> PIL.Image.Image:
    """Open an image from a local path, an http(s) URL or a base64 string (optionally a data URI).

    PIL decodes it so that file inputs get the same mode handling as PIL inputs (alpha on white,
    16-bit gray rescaled) and every format PIL reads works; EXIF orientation is applied. A file that
    cannot be read (corrupt, truncated, not an image, a decompression bomb) is a ValueError naming it.
    """
    not_a_source = ValueError(
        f"Could not load an image from the string {source[:100]!r}: it is not an existing file, an http(s) URL "
        "or a base64-encoded image."
    )
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=60) as response:
            data = response.read()
    elif os.path.isfile(source):
        with open(source, "rb") as file:
            data = file.read()
    else:
        payload = source.split(",", 1)[1] if source.startswith("data:image/") else source
        try:
            data = base64.b64decode(payload, validate=True)
            image = PIL.Image.open(io.BytesIO(data))
            image.load()
        except (binascii.Error, *IMAGE_ERRORS):
            raise not_a_source from None
        return PIL.ImageOps.exif_transpose(image)
    try:
        image = PIL.Image.open(io.BytesIO(data))
        image.load()
    except IMAGE_ERRORS as error:
        raise ValueError(f"Could not decode the image at {source[:100]!r}: {_reason(error)}") from error
    image = PIL.ImageOps.exif_transpose(image)
    image.filename = source  # later errors (an image too elongated to resize) name it
    return image


def _reason(error: Exception) -> str:
    """An exception as one short line, without the object address PIL puts in for in-memory files."""
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return " ".join(text.split(" <_io.BytesIO object")[0].split())[:300]


def _image_name(image) -> str:
    """How an error names an input: a PIL image by its file, any image by its size."""
    filename = getattr(image, "filename", None)
    if isinstance(image, PIL.Image.Image):
        return f"{filename} ({image.width}x{image.height})" if filename else f"a {image.width}x{image.height} image"
    return f"an image of shape {tuple(image.shape)}"


def resized_pixels(height: int, width: int, size: SizeDict) -> int:
    """How many pixels `size` resizes a `height` x `width` image to: the shorter side to `shortest_edge` (aspect ratio
    kept; the longer side then capped at `longest_edge` if given), or `height` x `width` given outright."""
    if size.shortest_edge:
        short, long = sorted((height, width))
        new_short, new_long = size.shortest_edge, size.shortest_edge * long / max(short, 1)
        if size.longest_edge and new_long > size.longest_edge:
            new_short, new_long = new_short * size.longest_edge / new_long, size.longest_edge
        return int(new_short) * int(new_long)
    if size.longest_edge:
        return size.longest_edge**2
    return (size.height or height) * (size.width or width)


def check_resized_size(image, height: int, width: int, size: SizeDict, crop_pct: float | None = None) -> None:
    """Refuse, before anything is allocated, an image that the resize would make more than `MAX_RESIZED_PIXELS`
    pixels (an extreme aspect ratio: the shorter side is scaled up with the longer one). `crop_pct` given: the
    resize of the `crop_pct` form (`resize_size_for_crop`), as `_preprocess` does it; otherwise `size`'s."""
    if crop_pct is None:
        pixels, how = resized_pixels(height, width, size), f"shorter side to {size.shortest_edge}"
    else:
        new_height, new_width = resize_size_for_crop((height, width), _output_size(size), crop_pct)
        pixels, how = new_height * new_width, f"to {new_height}x{new_width} for a {crop_pct} crop"
    if pixels > MAX_RESIZED_PIXELS:
        raise ValueError(
            f"{_image_name(image)} would be resized to {pixels:,} pixels ({how}), more than "
            f"MAX_RESIZED_PIXELS = {MAX_RESIZED_PIXELS:,}: its aspect ratio is too extreme. Crop it first."
        )


def resize_size_for_crop(image_size: tuple[int, int], crop: tuple[int, int], crop_pct: float) -> tuple[int, int]:
    """
    (height, width) to resize an `image_size` image to before a center crop of `crop`, aspect ratio kept, so that
    the crop spans `crop_pct` of the resized image along the side where it is tighter and less along the other.

    For a square crop S that is ConvNeXt's and MAE's rule: the shorter side goes to `round(S / crop_pct)` (224 ->
    256 at 0.875), the longer side to `int(new_short * long / short)` as torchvision's `Resize(int)` computes it.
    For a (h, w) crop the binding side is the one with the larger `crop / image` ratio; it goes to
    `round(side / crop_pct)`, the other follows the aspect ratio. With `crop_pct <= 1` the resized image always
    covers the crop; above 1 it is smaller, and the crop pads it.
    """
    height, width = image_size
    crop_height, crop_width = crop
    if crop_height * width >= crop_width * height:  # crop_height / height >= crop_width / width: the height binds
        new_height = round(crop_height / crop_pct)
        return new_height, int(new_height * width / height)
    new_width = round(crop_width / crop_pct)
    return int(new_width * height / width), new_width


class SupMAEImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    crop_pct (`float`, *optional*, defaults to `self.crop_pct`):
        Share of the resized image that the center crop keeps along its tighter side: images are resized so that
        the crop of `size` spans `crop_pct` of them (shorter side to `size / crop_pct`, 256 for 224 at 0.875).
    """

    crop_pct: float


class SupMAEImageProcessor(TorchvisionBackend):
    r"""
    The evaluation transform of MAE and SupMAE, as used for ImageNet fine-tuning evaluation and linear
    probing: resize the shorter side to 256 with bicubic interpolation (aspect ratio kept), center crop
    224x224, rescale by 1/255 and normalize with the ImageNet mean (0.485, 0.456, 0.406) and std
    (0.229, 0.224, 0.225). This is `torchvision.transforms` `Resize(256, BICUBIC)`, `CenterCrop(224)`,
    `ToTensor()`, `Normalize(mean, std)` on an RGB PIL image, computed on tensors.

    Sizes follow ConvNeXt's convention: `size` is the model's input, `{"shortest_edge": 224}` (square) or
    `{"height": h, "width": w}`, and `crop_pct` (0.875) says how much of the resized image the center crop keeps:
    images are resized so that their shorter side is `round(224 / 0.875)` = 256, then cropped to 224x224 (for a
    (h, w) crop, the side where the crop is tighter is resized to `side / crop_pct`; see `resize_size_for_crop`).
    Recipes that read `size` for their own transforms (Transformers' image-classification example and
    fine-tuning tutorial) therefore train and evaluate at the model's input size. With `do_center_crop=False`
    images are only resized to `size`.

    Older directories stored the two sizes instead (`size={"shortest_edge": 256}`, `crop_size={"height": 224,
    "width": 224}`). They load unchanged: a square crop is read as `size` = the crop and `crop_pct` = crop / resize
    (224 / 256), which gives the same pixels; any other explicit `crop_size` keeps its meaning (resize to `size`,
    then crop `crop_size`, `crop_pct` unused).

    Example:

    ```python
    >>> processor = SupMAEImageProcessor()
    >>> inputs = processor(images=PIL.Image.open("cat.jpg"), return_tensors="pt")
    >>> inputs["pixel_values"].shape  # torch.Size([1, 3, 224, 224]), float32
    ```

    Inputs: PIL images of any mode, numpy arrays and torch tensors ((H, W), (C, H, W) or (H, W, C)
    with C in 1, 3, 4), file paths, http(s) URLs or base64 strings; one image or a list (sizes may
    differ). `pixel_values` comes back as a (B, 3, H, W) float32 tensor unless `return_tensors` is
    set otherwise (`return_tensors=None` gives a list).

    - Colour: everything becomes 3-channel RGB. Transparent pixels are composited onto white
      (Transformers' convention); gray becomes three equal channels; PIL "I;16" (16-bit) and "I" images
      are scaled by their bit depth rather than clipped at 255 as PIL's `convert("RGB")` does.
    - Value range: uint8 and other integer types are 0..255, bool is black / white; uint16 arrays and
      tensors are 16-bit (scaled to 0..255). Float arrays and tensors are read as [0, 1] when every
      value lies in [0, 1] (they are multiplied by `1 / rescale_factor` so that rescaling is not applied
      twice), otherwise as 0..255; they stay in float (not quantized to 8 bits).
    - Resize: torchvision's antialiased bicubic, whose uint8 CPU kernel reproduces PIL's (a = -0.5,
      fixed point, horizontal pass then vertical, rounded and clipped in between): within 1 gray level
      of the PIL reference (rarely 2), on about 1% of the values. Pillow 13 runs the vertical pass first
      when the height shrinks much more than the width (python-pillow/Pillow#9549); for those portrait
      images it differs from older Pillow, which the official MAE results used, and from this
      processor by ~0.3 gray levels on average. Float inputs are resized in float, without the
      intermediate rounding, then clipped to the valid range: ~0.3 levels from the PIL path on average,
      under 2 at most. (On GPU torchvision resizes uint8 through the float kernel too, so expect those
      numbers there.) tests/models/test_image_processing.py has the measurements.
    - Crop: the crop offset is rounded the way torchvision's `CenterCrop` rounds it. If `crop_size` is
      larger than the resized image (impossible with the defaults, 256 >= 224, but possible if `size`
      or `crop_size` are changed), the image is first zero-padded (black before normalization)
      symmetrically up to `crop_size`, also exactly like torchvision's `CenterCrop`.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = SupMAEImageProcessorKwargs

    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 224}
    default_to_square = False
    crop_pct = 0.875
    crop_size = None  # only in the explicit (resize, crop) form; see the class docstring
    do_resize = True
    do_center_crop = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    # Off by default in the backend; MAE always works on RGB (its loader calls `convert("RGB")`).
    do_convert_rgb = True
    return_tensors = "pt"

    def __init__(self, **kwargs):
        super().__init__(**_crop_pct_form(kwargs))

    def fetch_images(self, image_url_or_urls):
        """Open strings (paths, URLs, base64) with PIL; pass images through; reject anything else."""
        if isinstance(image_url_or_urls, (list, tuple)):
            return [self.fetch_images(item) for item in image_url_or_urls]
        if isinstance(image_url_or_urls, str):
            return _load_image_from_string(image_url_or_urls)
        if isinstance(image_url_or_urls, (PIL.Image.Image, np.ndarray, torch.Tensor)):
            return image_url_or_urls
        raise TypeError(
            "Expected a PIL image, numpy array, torch tensor, path, URL or base64 string (or a list of them); "
            f"got {type(image_url_or_urls).__name__}."
        )

    def _prepare_images_structure(self, images, expected_ndims: int = 3) -> list:
        """Flat list of single images.

        Unlike Transformers' `make_flat_list_of_images`, which decides from the first element only, every
        element is looked at: (H, W) and (C, H, W) / (H, W, C) arrays are one image, 4-D arrays a batch,
        and lists may nest and mix kinds and sizes.
        """
        flat = []

        def visit(item):
            if isinstance(item, (list, tuple)):
                if len(item) == 0:
                    raise ValueError("Received an empty list of images: pass at least one image.")
                for element in item:
                    visit(element)
            elif isinstance(item, PIL.Image.Image):
                flat.append(item)
            elif item.ndim in (2, 3):
                flat.append(item)
            elif item.ndim == 4:
                if len(item) == 0:
                    raise ValueError(f"Received an empty batch of images (shape {tuple(item.shape)}).")
                flat.extend(item)
            else:
                raise ValueError(
                    "Expected an image of shape (H, W), (C, H, W) or (H, W, C), or a batch (B, C, H, W) / "
                    f"(B, H, W, C); got shape {tuple(item.shape)}."
                )

        visit(self.fetch_images(images))
        return flat

    def process_image(self, image, do_convert_rgb=None, input_data_format=None, device=None, **kwargs):
        """One raw image -> (3, H, W) tensor: uint8 in 0..255, or float in 0..255 for float inputs. An image that
        would be resized to more than `MAX_RESIZED_PIXELS` pixels, or a PIL image whose file cannot be decoded, is a
        ValueError naming it."""
        size = kwargs.get("size") if kwargs.get("do_resize") else None
        # The crop_pct form (a center crop of `size`, no `crop_size`) resizes by `resize_size_for_crop`.
        crop_form = kwargs.get("do_center_crop") and kwargs.get("crop_size") is None
        crop_pct = kwargs.get("crop_pct") if crop_form else None
        if isinstance(image, PIL.Image.Image) and size is not None:  # from the header, before decoding
            check_resized_size(image, image.height, image.width, size, crop_pct)
        if isinstance(image, PIL.Image.Image) and do_convert_rgb:
            try:  # a lazily opened file is decoded here
                image = torch.from_numpy(pil_to_rgb_array(image).copy())
            except IMAGE_ERRORS as error:
                raise ValueError(f"Cannot decode {_image_name(image)}: {_reason(error)}") from error
            input_data_format = ChannelDimension.LAST
        elif isinstance(image, (np.ndarray, torch.Tensor)):
            image = self._check_channels(image, input_data_format)
            if isinstance(image, np.ndarray):
                # torch.from_numpy rejects negative strides (flipped views) and non-native byte order.
                image = torch.from_numpy(np.ascontiguousarray(image, dtype=image.dtype.newbyteorder("=")))
            if image.dtype == torch.uint16:
                image = self._sixteen_bit_to_uint8(image.to(torch.int32))
            elif image.dtype == torch.bool:
                image = image.to(torch.uint8) * 255

        image = super().process_image(
            image, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format, device=device, **kwargs
        )
        if size is not None:  # arrays and tensors: (3, H, W) now, before the resize
            check_resized_size(image, *image.shape[-2:], size, crop_pct)

        if image.is_floating_point():
            do_rescale, rescale_factor = kwargs.get("do_rescale"), kwargs.get("rescale_factor")
            if do_rescale and rescale_factor and image.numel() and image.min() >= 0 and image.max() <= 1:
                image = image * (1.0 / rescale_factor)
        elif image.dtype != torch.uint8:
            # Other integer types hold 0..255 values; resizing them in float lets `_preprocess` clip the
            # bicubic overshoot as it does for floats (torchvision only clips uint8).
            image = image.to(torch.float32)
        return image

    @staticmethod
    def _check_channels(image, input_data_format):
        """Fail early, with the shape in the message, on arrays that are not 1-, 3- or 4-channel images."""
        if image.ndim == 2:
            return image
        if image.ndim != 3:
            raise ValueError(f"Expected an image of shape (H, W), (C, H, W) or (H, W, C); got {tuple(image.shape)}.")
        try:
            data_format = input_data_format or infer_channel_dimension_format(image, num_channels=(1, 3, 4))
        except ValueError:
            raise ValueError(
                f"Expected an image with 1, 3 or 4 channels (gray, RGB or RGBA), channels first or last; got "
                f"shape {tuple(image.shape)}."
            ) from None
        channels = image.shape[0] if ChannelDimension(data_format) == ChannelDimension.FIRST else image.shape[-1]
        if channels not in (1, 3, 4):
            raise ValueError(
                f"Expected an image with 1, 3 or 4 channels (gray, RGB or RGBA); got {channels} channels in shape "
                f"{tuple(image.shape)}."
            )
        return image

    @staticmethod
    def _sixteen_bit_to_uint8(image: torch.Tensor) -> torch.Tensor:
        # 65535 -> 255, 32768 -> 128; same scaling as PIL "I;16" images get.
        return (image.to(torch.float64) * (255.0 / 65535.0)).round().clamp(0, 255).to(torch.uint8)

    def convert_to_rgb(self, image: torch.Tensor, input_data_format=None) -> torch.Tensor:
        """1-channel -> 3 equal channels; 4-channel (RGBA) -> RGB composited onto white.

        The backend composites RGBA in float and truncates back to uint8, half a gray level darker than
        PIL's `alpha_composite` on average; this rounds. Integer images are 0..255; float images are
        [0, 1] when every value lies in [0, 1] and 0..255 otherwise (so alpha 1.0 or 255 is opaque).
        """
        if image.ndim == 2:
            image = image[None]
            input_data_format = ChannelDimension.FIRST
        if input_data_format is None:
            input_data_format = infer_channel_dimension_format(image, num_channels=(1, 3, 4))
        channel_axis = -3 if ChannelDimension(input_data_format) == ChannelDimension.FIRST else -1
        image = image.movedim(channel_axis, -3)
        if image.shape[-3] == 1:
            image = image.expand(*image.shape[:-3], 3, *image.shape[-2:])
        elif image.shape[-3] == 4:
            if image.is_floating_point():
                white = 1.0 if image.numel() == 0 or (image.min() >= 0 and image.max() <= 1) else 255.0
            else:
                white = 255.0
            work = image.to(torch.float32)
            alpha = work[..., 3:, :, :] / white
            composite = work[..., :3, :, :] * alpha + white * (1.0 - alpha)
            if not image.is_floating_point():
                composite = composite.round().clamp(0, 255)
            image = composite.to(image.dtype)
        return image.movedim(-3, channel_axis)

    def _validate_preprocess_kwargs(self, size=None, crop_size=None, crop_pct=None, do_center_crop=None, **kwargs):
        """The backend's checks, plus the sizes of the `crop_pct` form (where `size` is also the crop)."""
        if crop_size is None and size is not None:
            _output_size(size)  # names the problem if `size` is not one of the two forms
            if do_center_crop and not (isinstance(crop_pct, (int, float)) and crop_pct > 0):
                raise ValueError(
                    f"crop_pct must be a number > 0 (the share of the resized image the crop keeps, e.g. 0.875); "
                    f"got {crop_pct!r}."
                )
        super()._validate_preprocess_kwargs(
            size=size,
            crop_size=crop_size if crop_size is not None else size,
            do_center_crop=do_center_crop,
            **kwargs,
        )

    def center_crop(self, image: torch.Tensor, size: SizeDict, **kwargs) -> torch.Tensor:
        """Center crop (zero-padding first if needed) with torchvision's offset rounding.

        The backend truncates the offset ((H - h) / 2) where torchvision's `CenterCrop`, used by MAE,
        rounds it; for odd margins such as 341 - 224 = 117 -> 58.5 or 119 -> 59.5 the two can pick
        windows one pixel apart.
        """
        if size.height is None or size.width is None:
            raise ValueError(f"crop_size must have keys 'height' and 'width'; got {dict(size)}.")
        return tvF.center_crop(image, [size.height, size.width])

    def _preprocess(
        self,
        images: list[torch.Tensor],
        do_resize: bool,
        size: SizeDict,
        resample,
        do_center_crop: bool,
        crop_size: SizeDict,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean,
        image_std,
        do_pad: bool | None,
        pad_size: SizeDict | None,
        disable_grouping: bool | None,
        return_tensors,
        crop_pct: float | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Resize, clip, center crop, rescale and normalize; images of one shape are processed as a batch.

        The resize makes the crop of `size` span `crop_pct` of the image (`resize_size_for_crop`); without
        the center crop, or in the explicit form (`crop_size` given), it resizes to `size`. Float images
        (float inputs, kept in float for precision) are clipped to [0, 1 / rescale_factor] after the resize,
        as PIL's 8-bit resize and torchvision's uint8 resize clip the bicubic overshoot; otherwise values past
        black or white survive at high-contrast edges. (One grouping pass instead of the backend's two:
        images of one input shape also share their resized shape.)
        """
        explicit_crop = crop_size is not None
        crop = (crop_size.height, crop_size.width) if explicit_crop else _output_size(size)
        grouped_images, grouped_images_index = group_images_by_shape(images, disable_grouping=disable_grouping)
        processed_images_grouped = {}
        for shape, stacked_images in grouped_images.items():
            if do_resize:
                resize_to = size
                if do_center_crop and not explicit_crop:
                    height, width = resize_size_for_crop(tuple(stacked_images.shape[-2:]), crop, crop_pct)
                    resize_to = SizeDict(height=height, width=width)
                stacked_images = self.resize(stacked_images, size=resize_to, resample=resample)
                if do_rescale and stacked_images.is_floating_point():
                    stacked_images = stacked_images.clamp(0.0, 1.0 / rescale_factor)
            if do_center_crop:
                stacked_images = self.center_crop(stacked_images, SizeDict(height=crop[0], width=crop[1]))
            stacked_images = self.rescale_and_normalize(
                stacked_images, do_rescale, rescale_factor, do_normalize, image_mean, image_std
            )
            processed_images_grouped[shape] = stacked_images
        processed_images = reorder_images(processed_images_grouped, grouped_images_index)

        if do_pad:
            processed_images = self.pad(processed_images, pad_size=pad_size, disable_grouping=disable_grouping)
        return BatchFeature(data={"pixel_values": processed_images}, tensor_type=return_tensors)


def _output_size(size: SizeDict) -> tuple[int, int]:
    """(height, width) of the crop in the `crop_pct` form: `size` itself, a square for `shortest_edge`."""
    if size.shortest_edge and not (size.height or size.width or size.longest_edge):
        return size.shortest_edge, size.shortest_edge
    if size.height and size.width and not size.shortest_edge:
        return size.height, size.width
    raise ValueError(
        f"size must be {{'shortest_edge': S}} (an S x S input) or {{'height': h, 'width': w}}; got {dict(size)}. "
        "(To resize to one size and crop another, give `crop_size` as well.)"
    )


def _crop_pct_form(kwargs: dict) -> dict:
    """Read the explicit form of older directories, `size={"shortest_edge": R}` + a square `crop_size` S (and no
    `crop_pct`), as `size={"shortest_edge": S}` + `crop_pct = S / R`: the same resize (`round(S / crop_pct)` = R) and
    crop, in the form that recipes reading `size` understand. Other explicit sizes are left as they are."""
    crop_size, size = kwargs.get("crop_size"), kwargs.get("size")
    if crop_size is None or kwargs.get("crop_pct") is not None:
        return kwargs
    if isinstance(crop_size, int):
        crop_size = {"height": crop_size, "width": crop_size}
    if isinstance(size, int):
        size = {"shortest_edge": size}
    if not (isinstance(crop_size, dict) and isinstance(size, dict) and set(size) == {"shortest_edge"}):
        return kwargs
    side = crop_size.get("height")
    if side is None or side != crop_size.get("width") or not size["shortest_edge"]:
        return kwargs
    return {**kwargs, "size": {"shortest_edge": side}, "crop_size": None, "crop_pct": side / size["shortest_edge"]}


__all__ = ["SupMAEImageProcessor"]
