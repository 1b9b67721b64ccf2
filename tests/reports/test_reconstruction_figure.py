"""Reconstruction pictures: the pixels `reconstruct` returns, the figure's layout and size, and the CLI."""

import io
import os

import numpy as np
import pytest
import torch
from helpers import tiny_config
from PIL import Image

from supmae import SupMAEForImageClassification, SupMAEForPreTraining, SupMAEImageProcessor, visualization
from supmae.reports.reconstruction_figure import (
    GAP,
    HEADER_HEIGHT,
    figure_size,
    main,
    reconstruct,
    reconstruction_figure,
)


MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def normalized_images(batch_size=2, height=32, width=32, seed=0):
    """`(pixels in [0, 1], the same images ImageNet-normalized)`, so that `original` is known exactly."""
    pixels = torch.rand(batch_size, 3, height, width, generator=torch.Generator().manual_seed(seed))
    return pixels, (pixels - MEAN) / STD


def removed_pixels(noise, height, width, patch_size=8, mask_ratio=0.75):
    """`(B, 3, H, W)` bool, True on the patches the model removes: all but the lowest-noise ones."""
    keep = int(noise.shape[1] * (1 - mask_ratio))
    removed = torch.ones_like(noise, dtype=torch.bool)
    removed.scatter_(1, noise.argsort(dim=1)[:, :keep], False)
    grid = removed.view(-1, 1, height // patch_size, width // patch_size)
    return grid.repeat_interleave(patch_size, 2).repeat_interleave(patch_size, 3).expand(-1, 3, -1, -1)


def patch_means(pixels, patch_size=8):
    """Each pixel replaced by the mean of its patch over all channels (what a zero norm_pix prediction decodes to)."""
    batch_size, _, height, width = pixels.shape
    patches = pixels.view(batch_size, 3, height // patch_size, patch_size, width // patch_size, patch_size)
    means = patches.mean(dim=(1, 3, 5), keepdim=True).expand_as(patches)
    return means.reshape(batch_size, 3, height, width)


def decoder_returning(model, monkeypatch, predictions, seen):
    """Make the pixel decoder output `predictions` `(B, L, P * P * C)`, recording the mode it was called in."""

    def forward(latent, ids_restore, grid_size):
        seen.append((model.training, torch.is_grad_enabled()))
        return predictions

    monkeypatch.setattr(model.decoder, "forward", forward)


@pytest.mark.parametrize("norm_pix_loss", [True, False])
@pytest.mark.parametrize("size", [(32, 32), (32, 48)])
def test_perfect_predictions_reconstruct_the_original(norm_pix_loss, size, monkeypatch):
    model = SupMAEForPreTraining(tiny_config(norm_pix_loss=norm_pix_loss)).train()
    pixels, pixel_values = normalized_images(3, *size)
    target = model.patchify(pixel_values)
    if norm_pix_loss:  # the training target: per-patch normalized pixels
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    seen = []
    decoder_returning(model, monkeypatch, target, seen)
    noise = torch.rand(3, (size[0] // 8) * (size[1] // 8), generator=torch.Generator().manual_seed(1))

    out = reconstruct(model, pixel_values, noise=noise)

    assert seen == [(False, False)]  # eval mode, no autograd
    assert model.training  # mode restored
    assert set(out) == {"original", "masked", "reconstruction", "pasted"}
    for image in out.values():
        assert image.shape == (3, 3, *size) and image.dtype == torch.float32
        assert image.min() >= 0 and image.max() <= 1
    torch.testing.assert_close(out["original"], pixels, atol=1e-6, rtol=0)
    torch.testing.assert_close(out["reconstruction"], pixels, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["pasted"], pixels, atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_masked_and_pasted_follow_the_mask(norm_pix_loss, monkeypatch):
    model = SupMAEForPreTraining(tiny_config(norm_pix_loss=norm_pix_loss)).eval()
    pixels, pixel_values = normalized_images(4)
    # A zero prediction decodes to each patch's mean with norm_pix_loss, and to black (0 -> ImageNet mean) without.
    decoder_returning(model, monkeypatch, torch.zeros(4, 16, 192), [])
    noise = torch.rand(4, 16, generator=torch.Generator().manual_seed(2))
    removed = removed_pixels(noise, 32, 32)

    out = reconstruct(model, pixel_values, noise=noise)

    assert not model.training
    expected = patch_means(pixel_values) * STD + MEAN if norm_pix_loss else MEAN.expand_as(pixels)
    torch.testing.assert_close(out["reconstruction"], expected.clamp(0, 1), atol=1e-5, rtol=0)
    assert removed[:, 0].flatten(1).sum(1).tolist() == [12 * 64] * 4  # 75% of the 16 8x8 patches
    assert torch.all(out["masked"][removed] == 0.5)
    assert torch.equal(out["masked"][~removed], out["original"][~removed])
    assert torch.equal(out["pasted"][~removed], out["original"][~removed])
    assert torch.equal(out["pasted"][removed], out["reconstruction"][removed])


def test_values_are_clamped_and_custom_normalization_is_undone(monkeypatch):
    model = SupMAEForPreTraining(tiny_config(norm_pix_loss=False))
    decoder_returning(model, monkeypatch, torch.full((1, 16, 192), 100.0), [])
    pixel_values = torch.full((1, 3, 32, 32), -1.0)  # with mean = std = 0.5: black

    out = reconstruct(model, pixel_values, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5))

    assert torch.all(out["original"] == 0)
    assert torch.all(out["reconstruction"] == 1)  # 100 * 0.5 + 0.5, clamped


def test_real_model_any_batch_size_and_restored_mode():
    model = SupMAEForPreTraining(tiny_config()).eval()
    for batch_size in (1, 5):
        out = reconstruct(model, normalized_images(batch_size, 32, 40)[1])
        assert all(image.shape == (batch_size, 3, 32, 40) for image in out.values())
        assert all(image.min() >= 0 and image.max() <= 1 for image in out.values())
    assert not model.training


def test_figure_size_formula():
    assert figure_size(1, 128, 128) == (4 * 128 + 5 * GAP, HEADER_HEIGHT + 128 + 2 * GAP)
    assert figure_size(3, 128, 192) == (4 * 192 + 5 * GAP, HEADER_HEIGHT + 3 * 128 + 4 * GAP)


def random_pil(seed, size=(50, 40)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SupMAEForPreTraining(tiny_config()).eval()


@pytest.mark.parametrize("num_images", [1, 3])
def test_figure_from_pil_images_has_the_documented_size(model, num_images, tmp_path):
    images = [random_pil(i, size=(40 + 7 * i, 50)) for i in range(num_images)]
    path = tmp_path / "nested" / "figure.png"

    figure = reconstruction_figure(model, images, path=path)

    # 32x32 crops, scaled 4x to reach 128 px.
    assert figure.size == figure_size(num_images, 128, 128)
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.size == figure.size
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(figure))


@pytest.mark.parametrize("num_images", [1, 3])
def test_figure_of_non_square_tensors_and_tile_placement(model, num_images):
    pixels, pixel_values = normalized_images(num_images, 32, 48)

    figure = reconstruction_figure(model, pixel_values, scale=2)

    assert figure.size == figure_size(num_images, 64, 96)
    array = np.asarray(figure)
    # The first tile of each row is the original, upscaled 2x with NEAREST; the gaps are white.
    original = (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for row in range(num_images):
        top = HEADER_HEIGHT + GAP + row * (64 + GAP)
        tile = array[top : top + 64, GAP : GAP + 96]
        assert np.array_equal(tile, original[row].repeat(2, axis=0).repeat(2, axis=1))
        assert np.all(array[top - GAP : top, :] == 255)
    assert np.all(array[:, :GAP] == 255) and np.all(array[:, -GAP:] == 255)
    header = array[:HEADER_HEIGHT]
    assert np.any(header < 128)  # the titles are drawn


def png_bytes(figure):
    buffer = io.BytesIO()
    figure.save(buffer, format="PNG")
    return buffer.getvalue()


def test_same_seed_same_figure_other_seed_other_figure(model):
    images = [random_pil(0), random_pil(1)]
    first = png_bytes(reconstruction_figure(model, images, seed=3))
    assert png_bytes(reconstruction_figure(model, images, seed=3)) == first
    assert png_bytes(reconstruction_figure(model, images, seed=4)) != first
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(3))
    assert png_bytes(reconstruction_figure(model, images, noise=noise)) == first


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    SupMAEForPreTraining(tiny_config()).save_pretrained(tmp_path / "pretrained")
    random_pil(0, size=(60, 45)).save(tmp_path / "a.png")
    random_pil(1, size=(40, 64)).save(tmp_path / "b.jpg")
    return tmp_path


def test_cli_writes_the_figure(checkpoint, capsys):
    output = checkpoint / "out" / "figure.png"
    argv = [
        "--model",
        str(checkpoint / "pretrained"),
        "--images",
        str(checkpoint / "a.png"),
        str(checkpoint / "b.jpg"),
    ]

    main([*argv, "--output", str(output)])

    assert capsys.readouterr().out.strip() == str(output)
    with Image.open(output) as figure:
        assert figure.format == "PNG" and figure.size == figure_size(2, 128, 128)
        default = np.asarray(figure.convert("RGB"))

    # A saved image processor is used (here: a 16x16 crop, scaled 8x); --seed and --mask_ratio change the masks.
    SupMAEImageProcessor(size={"shortest_edge": 18}, crop_size={"height": 16, "width": 16}).save_pretrained(
        checkpoint / "pretrained"
    )
    main([*argv, "--output", str(output), "--seed", "1", "--mask_ratio", "0.5"])
    with Image.open(output) as figure:
        assert figure.size == figure_size(2, 128, 128)
        assert not np.array_equal(np.asarray(figure.convert("RGB")), default)


def test_cli_errors_name_the_problem(checkpoint):
    images = ["--images", str(checkpoint / "a.png"), "--output", str(checkpoint / "figure.png")]
    with pytest.raises(FileNotFoundError, match="Model directory not found"):
        main(["--model", str(checkpoint / "missing"), *images])

    (checkpoint / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        main(["--model", str(checkpoint / "pretrained"), "--images", str(checkpoint / "broken.png"), *images[2:]])

    SupMAEForImageClassification(tiny_config()).save_pretrained(checkpoint / "classifier")
    with pytest.raises(ValueError, match="SupMAEForImageClassification checkpoint, not a SupMAE pretraining"):
        main(["--model", str(checkpoint / "classifier"), *images])


def test_visualization_writes_beside_the_model_by_default(checkpoint, capsys):
    """`python -m supmae.visualization` (the command's module) without --output: the figure goes beside the model."""
    Image.new("RGB", (40, 30), "red").save(checkpoint / "red.png")
    path = visualization.main(["--model", str(checkpoint / "pretrained"), "--images", str(checkpoint / "red.png")])
    assert path == str(checkpoint / "pretrained") + "-reconstructions.png" and os.path.isfile(path)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        visualization.main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m supmae.visualization")
