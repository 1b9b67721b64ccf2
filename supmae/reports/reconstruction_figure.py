# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""MAE-style reconstruction pictures for SupMAE pretraining checkpoints.

`reconstruct` runs a `SupMAEForPreTraining` on a batch and returns four images per input, in [0, 1]: the original,
the visible patches (removed ones gray), the model's prediction for every patch, and that prediction with the visible
patches pasted back. `reconstruction_figure` lays them out as one PNG-ready picture, one row per image:

    original | masked | reconstruction | reconstruction + visible

From the command line:

```bash
python -m supmae.visualization --model supmae-pretrained --images cat.jpg dog.png --output figure.png
```

Shapes: B images, C = 3 channels, H x W pixels, P patch size, L = (H / P)(W / P) patches.
"""

import argparse
import json
import logging
import math
import os
from collections.abc import Sequence

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..cli import run_script
from ..configuration_supmae import size_pair
from ..data.images import IMAGE_ERRORS, BadImageError, BadImagePolicy, image_name, open_image
from ..data.transforms import eval_image_processor
from ..image_processing_supmae import SupMAEImageProcessor
from ..modeling_supmae import SupMAEForPreTraining


logger = logging.getLogger(__name__)


COLUMN_TITLES = ("original", "masked", "reconstruction", "reconstruction + visible")
GAP = 4  # pixels between tiles and around the figure
HEADER_HEIGHT = 28  # the title strip: room for two lines of PIL's default font
MIN_TILE_HEIGHT = 128  # the default `scale` makes tiles at least this tall
MASK_GRAY = 0.5  # removed patches in the "masked" column


@torch.no_grad()
def reconstruct(
    model: SupMAEForPreTraining,
    pixel_values: torch.Tensor,
    noise: torch.Tensor | None = None,
    image_mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    image_std: Sequence[float] = IMAGENET_DEFAULT_STD,
) -> dict[str, torch.Tensor]:
    """
    Mask, encode and decode `pixel_values` with a pretraining model, and turn everything back into pixels.

    The model runs in eval mode under `torch.no_grad`; its previous train/eval mode is restored afterwards. Inputs of
    a size other than `config.image_size` run with `interpolate_pos_encoding=True`.

    Args:
        model: a `SupMAEForPreTraining` (any checkpoint that has the pixel decoder).
        pixel_values: `(B, 3, H, W)` images normalized with `image_mean` / `image_std`; H, W multiples of P.
        noise: `(B, L)` masking noise (the patches with the smallest noise stay visible); random if not given.
        image_mean, image_std: the per-channel normalization of `pixel_values`, undone for display.

    Returns:
        A dict of `(B, 3, H, W)` float32 CPU tensors in [0, 1]:
        - `original`: the input image;
        - `masked`: the visible patches, removed ones painted gray (0.5);
        - `reconstruction`: the model's prediction for every patch. With `config.norm_pix_loss` the predictions are
          per-patch normalized pixels; each is de-normalized with the mean and unbiased variance of the matching
          original patch, `pred * sqrt(var + 1e-6) + mean`, as MAE's visualization does;
        - `pasted`: `reconstruction` with the visible patches replaced by the original ones.
    """
    if not hasattr(model, "decoder"):
        raise TypeError(f"{type(model).__name__} has no pixel decoder; pass a SupMAEForPreTraining model.")
    config = model.config
    size = tuple(pixel_values.shape[-2:])
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        outputs = model(
            pixel_values.to(device=parameter.device, dtype=parameter.dtype),
            noise=noise,
            interpolate_pos_encoding=size != size_pair(config.image_size),
        )
    finally:
        model.train(was_training)

    pixels = pixel_values.detach().float().cpu()
    target = model.patchify(pixels)  # (B, L, P * P * C)
    predictions = outputs.logits.float().cpu()
    if config.norm_pix_loss:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        predictions = predictions * (var + 1e-6) ** 0.5 + mean
    removed = outputs.mask.float().cpu().unsqueeze(-1).expand_as(target)
    removed_pixels = model.unpatchify(removed, size).bool()  # (B, 3, H, W), True on removed patches

    mean = torch.tensor(image_mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(image_std, dtype=torch.float32).view(1, -1, 1, 1)
    original = (pixels * std + mean).clamp(0, 1)
    reconstruction = (model.unpatchify(predictions, size) * std + mean).clamp(0, 1)
    return {
        "original": original,
        "masked": original.masked_fill(removed_pixels, MASK_GRAY),
        "reconstruction": reconstruction,
        "pasted": torch.where(removed_pixels, reconstruction, original),
    }


def figure_size(num_images: int, tile_height: int, tile_width: int) -> tuple[int, int]:
    """
    `(width, height)` in pixels of a `reconstruction_figure` with `num_images` rows of `tile_height x tile_width`
    tiles (after scaling): `width = 4 * tile_width + 5 * GAP`, `height = HEADER_HEIGHT + num_images * tile_height +
    (num_images + 1) * GAP`, with GAP = 4 and HEADER_HEIGHT = 28.
    """
    columns = len(COLUMN_TITLES)
    width = columns * tile_width + (columns + 1) * GAP
    height = HEADER_HEIGHT + num_images * tile_height + (num_images + 1) * GAP
    return width, height


def _default_image_processor(config) -> SupMAEImageProcessor:
    """The MAE evaluation transform at the model's size: shorter side to image_size / 0.875, center crop."""
    return eval_image_processor(config.image_height_width)


def _to_pil(image: torch.Tensor, scale: int) -> PIL.Image.Image:
    """`(3, H, W)` in [0, 1] -> RGB PIL image of `(W * scale, H * scale)`, upscaled with NEAREST."""
    array = (image * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    tile = PIL.Image.fromarray(array)
    return tile.resize((tile.width * scale, tile.height * scale), PIL.Image.Resampling.NEAREST)


def _wrap(draw: PIL.ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Greedy word wrap of `text` to lines no wider than `width` pixels (a single long word stays whole)."""
    lines = [text.split()[0]]
    for word in text.split()[1:]:
        candidate = f"{lines[-1]} {word}"
        if draw.textlength(candidate, font=font) <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def preprocess(processor: SupMAEImageProcessor, images: Sequence, bad_images: BadImagePolicy) -> torch.Tensor:
    """`(B, 3, H, W)` pixel values of the `images` (PIL images, or undecoded dataset images) that can be read and
    resized, processed one by one: each one that cannot goes to `bad_images` (`skip`: left out of the figure, with
    a warning; `error`: BadImageError naming it). None readable is a BadImageError."""
    pixel_values, unreadable = [], []
    for index, image in enumerate(images):
        try:
            pixel_values.append(processor(images=open_image(image), return_tensors="pt")["pixel_values"])
        except IMAGE_ERRORS as error:
            name = image_name(image, index)  # as evaluation names the first images of a dataset
            bad_images.handle(name, error)
            unreadable.append(f"{name} ({type(error).__name__}: {error})")
    if not pixel_values:
        raise BadImageError(f"None of the figure's images can be read: {'; '.join(unreadable)[:1000]}.")
    if unreadable:  # said here too: the policy names a file only once per run
        logger.warning(
            f"The figure leaves out {len(unreadable)} of its {len(images)} images, which cannot be read: "
            + "; ".join(unreadable)[:1000]
        )
    return torch.cat(pixel_values)


def reconstruction_figure(
    model: SupMAEForPreTraining,
    images: Sequence[PIL.Image.Image] | torch.Tensor,
    image_processor: SupMAEImageProcessor | None = None,
    noise: torch.Tensor | None = None,
    seed: int = 0,
    path: str | os.PathLike | None = None,
    scale: int | None = None,
    bad_images: BadImagePolicy | None = None,
) -> PIL.Image.Image:
    """
    One picture of what the model reconstructs: a row per image, columns original | masked | reconstruction |
    reconstruction + visible, under a strip of column titles, on a white background.

    Args:
        model: a `SupMAEForPreTraining`.
        images: a list of PIL images or undecoded dataset images (`{"bytes", "path"}`), preprocessed with
            `image_processor`, or a `(B, 3, H, W)` tensor of pixels already normalized with the processor's mean and
            std.
        image_processor: defaults to the MAE evaluation transform sized to the model (shorter side to
            `round(image_size / 0.875)`, center crop `image_size`, ImageNet mean and std).
        noise: `(B, L)` masking noise; by default `torch.rand` from a generator seeded with `seed`, so the same
            seed draws the same masks and the same figure.
        path: where to save the figure as PNG (parent directories are created).
        scale: integer NEAREST upscaling of every tile; defaults to the smallest making tiles >= 128 px tall.
        bad_images: what happens to an image that cannot be read or resized (`BadImagePolicy`): `skip` leaves it out
            of the figure and says so; `error` (the default) raises BadImageError naming it.

    Returns:
        An RGB image of exactly `figure_size(B, H * scale, W * scale)` pixels, B the images it shows:
        width `4 * W * scale + 5 * 4`, height `28 + B * H * scale + (B + 1) * 4`.
    """
    processor = image_processor if image_processor is not None else _default_image_processor(model.config)
    if isinstance(images, torch.Tensor):
        pixel_values = images
    else:
        pixel_values = preprocess(processor, list(images), bad_images or BadImagePolicy("error"))
    batch_size, _, height, width = pixel_values.shape
    if noise is None:
        patch_size = model.config.patch_size
        generator = torch.Generator().manual_seed(seed)
        noise = torch.rand(batch_size, (height // patch_size) * (width // patch_size), generator=generator)
    results = reconstruct(model, pixel_values, noise, processor.image_mean, processor.image_std)

    scale = scale if scale is not None else max(1, math.ceil(MIN_TILE_HEIGHT / height))
    tile_height, tile_width = height * scale, width * scale
    figure = PIL.Image.new("RGB", figure_size(batch_size, tile_height, tile_width), "white")
    draw = PIL.ImageDraw.Draw(figure)
    font = PIL.ImageFont.load_default()
    line_height = sum(font.getmetrics()) if hasattr(font, "getmetrics") else 11

    for column, title in enumerate(COLUMN_TITLES):
        center = GAP + column * (tile_width + GAP) + tile_width / 2
        lines = _wrap(draw, title, font, tile_width)
        top = (HEADER_HEIGHT - len(lines) * line_height) / 2
        for i, line in enumerate(lines):
            left = center - draw.textlength(line, font=font) / 2
            draw.text((round(left), round(top + i * line_height)), line, fill="black", font=font)

    for row in range(batch_size):
        top = HEADER_HEIGHT + GAP + row * (tile_height + GAP)
        for column, key in enumerate(("original", "masked", "reconstruction", "pasted")):
            figure.paste(_to_pil(results[key][row], scale), (GAP + column * (tile_width + GAP), top))

    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        figure.save(path, format="PNG")
    return figure


def _load_pretraining_model(model_dir: str, mask_ratio: float | None) -> SupMAEForPreTraining:
    """`SupMAEForPreTraining.from_pretrained(model_dir)`, refusing directories that hold no pixel decoder."""
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"Model directory not found: {model_dir}")
    config_file = os.path.join(model_dir, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{model_dir} has no config.json; it is not a saved SupMAE model.")
    with open(config_file) as file:
        config = json.load(file)
    architectures = config.get("architectures") or []
    if config.get("model_type") != "supmae" or (architectures and "SupMAEForPreTraining" not in architectures):
        kind = ", ".join(architectures) or config.get("model_type", "unknown")
        raise ValueError(
            f"{model_dir} holds a {kind} checkpoint, not a SupMAE pretraining checkpoint (SupMAEForPreTraining): "
            "reconstructions need the pixel decoder, which fine-tuned classifiers don't have."
        )
    overrides = {"mask_ratio": mask_ratio} if mask_ratio is not None else {}
    model, info = SupMAEForPreTraining.from_pretrained(model_dir, output_loading_info=True, **overrides)
    missing_decoder = [key for key in info["missing_keys"] if key.startswith("decoder.")]
    if missing_decoder:
        raise ValueError(
            f"{model_dir} is not a SupMAE pretraining checkpoint: it has no pixel decoder weights "
            f"({len(missing_decoder)} decoder tensors missing)."
        )
    return model


def main(argv: Sequence[str] | None = None) -> str:
    """Command-line entry point: write a reconstruction figure and return (and print) its path."""
    parser = argparse.ArgumentParser(
        prog="python -m supmae.visualization", description="Draw SupMAE reconstructions of some images."
    )
    parser.add_argument("--model", required=True, help="directory of a SupMAE pretraining checkpoint")
    parser.add_argument("--images", required=True, nargs="+", help="image files, one figure row each")
    parser.add_argument("--output", help="where to write the PNG figure (default: MODEL-reconstructions.png)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the masking noise")
    parser.add_argument("--mask_ratio", type=float, default=None, help="fraction of patches removed (config's)")
    parser.add_argument(
        "--bad_images",
        choices=("skip", "error"),
        default="skip",
        help="an image that cannot be read: left out of the figure, with a warning (skip), or an error naming it",
    )
    args = parser.parse_args(argv)
    if args.output is None:  # beside the model's folder; for a Hub name "user/model", user-model-... here
        local = os.path.isdir(args.model)
        model_name = os.path.abspath(args.model) if local else args.model.replace("/", "-")
        args.output = model_name + "-reconstructions.png"

    missing = [path for path in args.images if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"Image file not found: {', '.join(missing)}")
    model = _load_pretraining_model(args.model, args.mask_ratio)
    images = [{"path": path, "bytes": None} for path in args.images]  # decoded under --bad_images
    if os.path.isfile(os.path.join(args.model, "preprocessor_config.json")):
        processor = SupMAEImageProcessor.from_pretrained(args.model)
    else:
        processor = _default_image_processor(model.config)
    bad_images = BadImagePolicy(args.bad_images)
    reconstruction_figure(model, images, processor, seed=args.seed, path=args.output, bad_images=bad_images)
    print(args.output)
    return args.output


if __name__ == "__main__":
    run_script(main)
