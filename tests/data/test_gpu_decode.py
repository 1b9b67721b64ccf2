"""GPU decoding's plumbing, on a CPU: workers draw the CPU path's crops, files nvJPEG should not get take the CPU path,
batching, the batched resize against the CPU path's pixels, unreadable files and the decode-ahead thread. (The
trainer that decodes ahead: tests/training/test_pretraining.py; `--decode_device cuda` through the task:
tests/tasks/test_pretraining.py. Agreement of nvJPEG itself with the CPU path needs a GPU:
benchmarks/gpu_decode_check.py in run_gpu.sh.)"""

import io
import os
import sys

import numpy as np
import PIL.Image
import pytest
import torch
import torchvision.transforms.v2.functional as tvF
from helpers import ROOT, gray_levels
from torchvision.io import ImageReadMode, decode_jpeg

import supmae.data.gpu_decode
import supmae.data.transforms
from supmae.data.datasets import _sample_rng
from supmae.data.gpu_decode import (
    BatchDecoder,
    DecodeAhead,
    DeviceDecodeTransform,
    EncodedBatch,
    EncodedCrop,
    EncodedImageCollator,
    resize_matrices,
)
from supmae.data.images import BadImageError, BadImagePolicy
from supmae.data.transforms import PretrainingTransform, normalize_uint8


sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from input_pipeline import photos  # noqa: E402


def encode(image: PIL.Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, **{"format": "JPEG", "quality": 90, **kwargs})
    return buffer.getvalue()


@pytest.fixture(scope="module")
def files():
    """Photographs at 500x375 (a quarter portrait) and a grayscale one."""
    found = photos(6, (500, 375))
    found.append(encode(PIL.Image.open(io.BytesIO(found[0])).convert("L")))
    return found


def unreadable_jpeg() -> bytes:
    """A JPEG whose header reads fine (so the workers pass it on) but whose scan names a component that does not
    exist: libjpeg-turbo and PIL both refuse it."""
    data = bytearray(encode(PIL.Image.fromarray(np.full((40, 60, 3), 90, dtype=np.uint8))))
    sos = data.find(b"\xff\xda")
    data[sos + 5] = 9
    return bytes(data)


def test_workers_draw_the_crop_boxes_and_flips_of_the_cpu_path(files, monkeypatch):
    drawn = []
    original = supmae.data.transforms.random_resized_crop_box

    def recording(*args, **kwargs):
        drawn.append(original(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(supmae.data.transforms, "random_resized_crop_box", recording)
    monkeypatch.setattr(supmae.data.gpu_decode, "random_resized_crop_box", recording)
    cpu, worker = PretrainingTransform(224), DeviceDecodeTransform(PretrainingTransform(224))
    flips = set()
    for index, data in enumerate(files * 3):
        cpu_rng, worker_rng = _sample_rng(3, 1, index), _sample_rng(3, 1, index)
        cpu(data, cpu_rng)
        item = worker(data, worker_rng)
        assert isinstance(item, EncodedCrop) and item.data == data
        assert item.box == drawn[-1]  # the box the CPU path cut
        assert cpu_rng.random() == worker_rng.random()  # the same draws, in the same number: the flip's too
        flips.add(item.flip)
    assert flips == {True, False}


def test_files_the_gpu_should_not_get_are_decoded_by_the_cpu_path(files):
    photo = PIL.Image.open(io.BytesIO(files[0]))
    exif = PIL.Image.Exif()
    exif[PIL.Image.ExifTags.Base.Orientation] = 6
    png = io.BytesIO()
    photo.save(png, "PNG")
    routed = {
        "progressive": encode(photo, progressive=True),
        "cmyk": encode(photo.convert("CMYK")),
        "png": png.getvalue(),
        "exif-rotated": encode(photo, exif=exif),
    }
    cpu, worker = PretrainingTransform(64), DeviceDecodeTransform(PretrainingTransform(64))
    for name, data in routed.items():
        item = worker(data, _sample_rng(0, 0, 5))
        assert isinstance(item, torch.Tensor), name
        assert torch.equal(item, cpu(data, _sample_rng(0, 0, 5))), name
    truncated = files[1][: len(files[1]) - 2000]  # no end-of-image marker: the CPU path finds it unreadable
    for transform in (cpu, worker):
        with pytest.raises(OSError, match="truncated"):  # ... and BadImagePolicy skips it, as for any file
            transform(truncated, _sample_rng(0, 0, 5))
    assert isinstance(worker(files[-1], _sample_rng(0, 0, 5)), EncodedCrop)  # grayscale JPEGs go to the GPU
    assert isinstance(worker(PIL.Image.open(io.BytesIO(files[0])), _sample_rng(0, 0, 5)), torch.Tensor)  # decoded
    with pytest.raises(PIL.UnidentifiedImageError):  # as on the CPU path, for BadImagePolicy to handle
        worker(b"not an image", _sample_rng(0, 0, 5))


def test_the_collator_packs_files_boxes_flips_and_decoded_items_in_batch_order(files):
    decoded = torch.randn(3, 8, 8)
    pixels = [
        EncodedCrop(files[0], (1, 2, 30, 40), True, "a.jpg"),
        decoded,
        EncodedCrop(files[1], (0, 0, 9, 9), False),
    ]
    batch = EncodedImageCollator(8, num_labels=5)([{"pixel_values": p, "labels": i} for i, p in enumerate(pixels)])
    encoded = batch["pixel_values"]
    assert isinstance(encoded, EncodedBatch) and not hasattr(encoded, "to")  # accelerate leaves it on the CPU
    assert [bytes(f.numpy()) for f in encoded.files()] == [files[0], files[1]]
    assert encoded.positions.tolist() == [0, 2] and encoded.decoded_positions.tolist() == [1]
    assert encoded.boxes.tolist() == [[1, 2, 30, 40], [0, 0, 9, 9]] and encoded.flips.tolist() == [True, False]
    assert encoded.paths == ["a.jpg", None] and torch.equal(encoded.decoded[0], decoded)
    assert encoded.size == 3 and encoded.numel() == 3 * 3 * 8 * 8 and batch["labels"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="Label 7 is outside the model's 5 classes"):
        EncodedImageCollator(8, num_labels=5)([{"pixel_values": decoded, "labels": 7}])


@pytest.mark.parametrize("out", [224, 32])
def test_resize_matrices_are_torchs_antialiased_bicubic(out):
    """Resizes as matrices, for lengths of all kinds in one call (down, up, identity, padded to a common width),
    equal torch's antialiased bicubic (the float kernel behind the CPU path's uint8 one)."""
    lengths = [500, 375, 130, out, 1000, 7]
    matrices = resize_matrices(lengths, out, 1005, torch.float64)
    for length, matrix in zip(lengths, matrices, strict=True):
        signal = torch.rand(1, 1, 3, length, dtype=torch.float64)
        expected = torch.nn.functional.interpolate(signal, size=(3, out), mode="bicubic", antialias=True)
        padded = torch.nn.functional.pad(signal, (0, 1005 - length), value=1e6)  # padding must weigh nothing
        torch.testing.assert_close(padded @ matrix.T, expected, atol=1e-10, rtol=0)
        assert matrix[:, length:].abs().max() == 0


def decode_both(files, size=224, seed=0, **decoder):
    cpu_transform = PretrainingTransform(size)
    cpu = torch.stack([cpu_transform(data, _sample_rng(seed, 0, i)) for i, data in enumerate(files)])
    worker = DeviceDecodeTransform(cpu_transform)
    items = [{"pixel_values": worker(data, _sample_rng(seed, 0, i))} for i, data in enumerate(files)]
    batch = EncodedImageCollator(size)(items)["pixel_values"]
    return cpu, BatchDecoder.for_transform(cpu_transform, "cpu", **decoder)(batch)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_batch_decoding_reproduces_the_cpu_path(files, dtype):
    """Same decoder (libjpeg-turbo), same crops and flips: only the resize differs (matrices in `dtype` against
    torchvision's fixed-point uint8 kernel), by rounding. Measured: float32 mean 0.003 and max 2 gray levels with
    0.3% of values off at all; float16 (what CUDA uses) mean 0.06, max 2."""
    cpu, device = decode_both(files, compute_dtype=dtype)
    difference = gray_levels(cpu, device)
    assert device.shape == cpu.shape and device.dtype == torch.float32
    assert difference.max() <= 2.01
    assert difference.mean() < (0.02 if dtype == torch.float32 else 0.1)
    assert (difference > 0.5).float().mean() < (0.01 if dtype == torch.float32 else 0.1)


def test_small_groups_and_large_photos_give_the_same_pixels(files):
    """Grouping crops of similar size (bounded padding) changes nothing. Large photos: the batch decoder decodes them
    whole, so it matches a full decode + crop + torchvision resize of the same box as closely as any 500x375 photo.
    (The CPU path decodes crops of at least twice the output size at 1/2-1/8 scale instead, which moves the box by up
    to half a reduced pixel: from it the batch differs by a mean of 2.6-5.3 gray levels on these photos.)"""
    _, one_group = decode_both(files, size=64)
    _, small_groups = decode_both(files, size=64, max_group_size=2, max_group_elements=3 * 400 * 400)
    torch.testing.assert_close(one_group, small_groups, atol=0, rtol=0)

    large = encode(PIL.Image.open(io.BytesIO(files[0])).resize((2000, 1500)))
    transform = PretrainingTransform(224)
    items = [{"pixel_values": DeviceDecodeTransform(transform)(large, _sample_rng(0, 0, i))} for i in range(4)]
    device = BatchDecoder.for_transform(transform, "cpu")(EncodedImageCollator(224)(items)["pixel_values"])
    whole = decode_jpeg(torch.frombuffer(bytearray(large), dtype=torch.uint8), mode=ImageReadMode.RGB)
    for item, out in zip(items, device, strict=True):
        left, top, right, bottom = item["pixel_values"].box
        crop = tvF.resize(whole[:, top:bottom, left:right], [224, 224], tvF.InterpolationMode.BICUBIC, antialias=True)
        crop = crop.flip(-1) if item["pixel_values"].flip else crop
        difference = gray_levels(normalize_uint8(crop)[None], out[None])
        assert difference.max() <= 2.01 and difference.mean() < 0.02


def test_an_unreadable_file_takes_the_next_readable_image_of_the_batch(files, tmp_path):
    data = [files[0], unreadable_jpeg(), files[2]]
    worker = DeviceDecodeTransform(PretrainingTransform(32))
    items = [{"pixel_values": worker(d, _sample_rng(0, 0, i))} for i, d in enumerate(data)]
    assert all(isinstance(item["pixel_values"], EncodedCrop) for item in items)  # the header reads fine
    items[1]["pixel_values"].path = "broken.jpg"
    for i, item in enumerate(items):
        item["labels"] = i
    collated = EncodedImageCollator(32)(items)
    batch = collated["pixel_values"]
    log = tmp_path / "skipped.tsv"
    decoder = BatchDecoder(32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "cpu", BadImagePolicy(log_file=str(log)))
    decoded = decoder.decode_batch(collated)
    out = decoded["pixel_values"]
    assert torch.equal(out[1], out[2]) and not torch.equal(out[0], out[2])
    assert decoded["labels"].tolist() == [0, 2, 2]  # the replacement's label comes with it
    assert torch.equal(decoder(batch), out)
    assert log.read_text().startswith("broken.jpg\t")
    strict = BatchDecoder(32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "cpu", BadImagePolicy("error"))
    with pytest.raises(BadImageError, match="broken.jpg"):
        strict(batch)
    items[0]["pixel_values"].data = items[2]["pixel_values"].data = unreadable_jpeg()
    with pytest.raises(BadImageError, match="All 3 images of a batch are unreadable"):
        decoder(EncodedImageCollator(32)(items)["pixel_values"])
    # Every JPEG unreadable, but a PNG the workers decoded on the CPU: its image takes their places.
    png = io.BytesIO()
    PIL.Image.new("RGB", (40, 30), "red").save(png, format="PNG")
    mixed = [
        {"pixel_values": worker(png.getvalue(), _sample_rng(0, 0, 0)), "labels": 0},
        {"pixel_values": worker(unreadable_jpeg(), _sample_rng(0, 0, 1)), "labels": 1},
    ]
    decoded = decoder.decode_batch(EncodedImageCollator(32)(mixed))
    assert torch.equal(decoded["pixel_values"][0], decoded["pixel_values"][1])
    assert decoded["labels"].tolist() == [0, 0]


def test_decoding_ahead_keeps_order_and_hands_errors_to_the_loop():
    ahead = DecodeAhead(iter([{"pixel_values": i} for i in range(5)]), None, "cpu", depth=2)
    assert [ahead.next()["pixel_values"] for _ in range(5)] == list(range(5))
    assert ahead.next() is None and ahead.next() is None
    ahead.close()

    def failing():
        yield {"pixel_values": 0}
        raise BadImageError("a file of the second batch")

    ahead = DecodeAhead(failing(), None, "cpu")
    assert ahead.next()["pixel_values"] == 0
    with pytest.raises(BadImageError, match="second batch"):
        ahead.next()
    ahead.close()
    endless = DecodeAhead(iter(lambda: {"pixel_values": 1}, None), None, "cpu", depth=1)
    endless.close()  # a thread blocked on a full queue stops
    assert not endless.thread.is_alive()
