# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
Decoding the pretraining images on the GPU (`run_pretraining.py --decode_device cuda`).

The work is split in two, so that crops stay a function of (seed, epoch, index) and resume stays exact:

- in the dataloader workers, `DeviceDecodeTransform` reads each file's bytes and header and draws its crop box and
  flip from the item's own generator, exactly as `PretrainingTransform` does (same calls, same order);
  `EncodedImageCollator` packs a batch of encoded files, boxes and flips (`EncodedBatch`);
- in the training process, `BatchDecoder` decodes the batch with torchvision's batched nvJPEG decoder
  (`decode_jpeg(list, device="cuda")`), and crops, resizes (antialiased bicubic, as the CPU path's uint8 kernel),
  flips and normalizes there; `DeviceDecodingTrainer` does it one or two batches ahead, in a thread of its own on a
  CUDA stream of its own, so that decoding overlaps the training step.

Files the GPU decoder should not get are decoded in the workers by the CPU path, with the same generator: anything
but a JPEG, CMYK/YCCK JPEGs, progressive JPEGs (nvJPEG decodes those one at a time with host work), EXIF-rotated
photos, and files that do not end with the JPEG end-of-image marker (truncated). A file that still fails on the GPU
is decoded on the CPU; one that fails there too goes to `BadImagePolicy` and its place in the batch goes to the next
readable image of the same batch (the CPU path takes the next readable image of the dataset instead).
"""

from __future__ import annotations

import contextlib
import io
import queue
import random
import threading
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from torchvision.io import ImageReadMode, decode_jpeg

from ..configuration_supmae import size_pair
from .collators import ImageCollator
from .images import (
    IMAGE_ERRORS,
    BadImageError,
    BadImagePolicy,
    check_image_size,
    encoded_bytes,
    image_name,
    open_image,
    plain_jpeg,
    to_rgb,
)
from .transforms import PretrainingTransform, random_resized_crop_box


@dataclass
class EncodedCrop:
    """One training image as a dataloader worker leaves it: the JPEG file, its crop box `(left, top, right, bottom)`
    in the file's pixels, the flip, and the file's path (None inside Parquet) to name it if it cannot be read."""

    data: bytes
    box: tuple[int, int, int, int]
    flip: bool
    path: str | None = None


class DeviceDecodeTransform:
    """The dataloader-worker half of GPU decoding: returns an `EncodedCrop` for a file the GPU decodes, or the CPU
    path's `(3, S, S)` tensor for the others. Both draw from `rng` exactly as `PretrainingTransform` does."""

    wants_encoded = True

    def __init__(self, cpu_transform: PretrainingTransform):
        self.cpu_transform = cpu_transform

    def __call__(self, image, rng: random.Random | None = None):
        data = encoded_bytes(image)
        if data is None:  # a decoded (PIL) image
            return self.cpu_transform(image, rng)
        header = PIL.Image.open(io.BytesIO(data))  # the header only; an unreadable one raises, as on the CPU path
        check_image_size(*header.size)  # as PretrainingTransform does, before plain_jpeg reads the EXIF
        if not plain_jpeg(header, data):
            return self.cpu_transform(data, rng)
        t = self.cpu_transform
        left, top, right, bottom = random_resized_crop_box(*header.size, t.scale, t.ratio, rng)
        flip = (rng or random).random() < 0.5
        path = image.get("path") if isinstance(image, dict) else None
        return EncodedCrop(bytes(data), (left, top, right, bottom), flip, path)


@dataclass
class EncodedBatch:
    """A batch of `size` images of which some are still encoded. Deliberately has no `.to()`, so accelerate and
    Trainer leave it on the CPU, where nvJPEG reads the files.

    data       uint8 (total bytes,): the encoded files, one after another; file i is data[offsets[i]:offsets[i+1]]
    boxes      int64 (E, 4): crop boxes (left, top, right, bottom) in each file's pixels
    flips      bool (E,)
    positions  int64 (E,): where each encoded image goes in the batch
    paths      the files' paths (None where there is none), to name unreadable ones
    decoded    float32 (D, 3, S, S): images the workers decoded (CPU path), at `decoded_positions`
    """

    data: torch.Tensor
    offsets: torch.Tensor
    boxes: torch.Tensor
    flips: torch.Tensor
    positions: torch.Tensor
    paths: list
    decoded: torch.Tensor
    decoded_positions: torch.Tensor
    size: int
    image_size: int

    def numel(self) -> int:
        """The decoded batch's element count (Trainer's `floating_point_ops` estimate reads it)."""
        return self.size * 3 * self.image_size * self.image_size

    def files(self) -> list[torch.Tensor]:
        """The encoded files as 1-D uint8 views (contiguous, on the CPU, as nvJPEG wants them)."""
        sizes = (self.offsets[1:] - self.offsets[:-1]).tolist()
        return list(torch.split(self.data, sizes)) if sizes else []


def square_side(image_size) -> int:
    """The side of a square `image_size` (an int or a (height, width) pair); GPU decoding resizes to squares only."""
    height, width = size_pair(image_size)
    if height != width:
        raise ValueError(
            f"--decode_device cuda resizes crops to squares; this model's images are {height}x{width}. Use "
            "--decode_device cpu (the default) for non-square images."
        )
    return height


class EncodedImageCollator(ImageCollator):
    """Batches `DeviceDecodeTransform` items into `{"pixel_values": EncodedBatch, "labels": (B,)}`."""

    def __init__(self, image_size, num_labels: int | None = None):
        super().__init__(num_labels)
        self.image_size = square_side(image_size)

    def __call__(self, items: list[dict]) -> dict:
        pixels = [item["pixel_values"] for item in items]
        encoded = [i for i, p in enumerate(pixels) if isinstance(p, EncodedCrop)]
        decoded = [i for i, p in enumerate(pixels) if not isinstance(p, EncodedCrop)]
        files = [np.frombuffer(pixels[i].data, dtype=np.uint8) for i in encoded]
        sizes = [len(f) for f in files]
        size = self.image_size
        batch = EncodedBatch(
            data=torch.from_numpy(np.concatenate(files)) if files else torch.empty(0, dtype=torch.uint8),
            offsets=torch.tensor(np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]), dtype=torch.int64),
            boxes=torch.tensor([pixels[i].box for i in encoded], dtype=torch.int64).reshape(-1, 4),
            flips=torch.tensor([pixels[i].flip for i in encoded], dtype=torch.bool),
            positions=torch.tensor(encoded, dtype=torch.int64),
            paths=[pixels[i].path for i in encoded],
            decoded=torch.stack([torch.as_tensor(pixels[i]) for i in decoded])
            if decoded
            else torch.empty(0, 3, size, size),
            decoded_positions=torch.tensor(decoded, dtype=torch.int64),
            size=len(items),
            image_size=size,
        )
        return self.add_labels({"pixel_values": batch}, items)


def _cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    # The bicubic kernel of PIL and of torch's antialiased resize (a = -0.5).
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resize_matrices(lengths: list[int], out_size: int, pad_to: int, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """`(N, out_size, pad_to)` matrices that resize N signals of `lengths` samples (padded to `pad_to`) to `out_size`
    with the antialiased bicubic filter of PIL and `torch`'s `_upsample_bicubic2d_aa` (align_corners=False): the same
    taps, centers and normalization as torchvision's resize of a crop, computed in float64 on `device` (without
    waiting for it: the number of taps is bounded from the lengths, extra taps weigh 0)."""
    n = torch.tensor(lengths, dtype=torch.float64, device=device)
    scale = n / out_size  # input samples per output sample
    support = 2.0 * scale.clamp(min=1.0)
    inverse = torch.where(scale >= 1.0, 1.0 / scale, torch.ones_like(scale))
    center = scale[:, None] * (torch.arange(out_size, device=device, dtype=torch.float64) + 0.5)[None]
    first = torch.floor(center - support[:, None] + 0.5).clamp(min=0)
    end = torch.minimum(torch.floor(center + support[:, None] + 0.5), n[:, None])
    taps = int(4 * max(max(lengths, default=1) / out_size, 1.0)) + 2  # >= 2 support + 1, the most a window spans
    index = first[..., None] + torch.arange(taps, device=device, dtype=torch.float64)  # (N, out, taps)
    weights = _cubic((index - center[..., None] + 0.5) * inverse[:, None, None]) * (index < end[..., None])
    weights = (weights / weights.sum(-1, keepdim=True)).to(dtype)
    matrices = torch.zeros(len(lengths), out_size, pad_to, dtype=dtype, device=device)
    # Each tap has a column of its own; taps past the end weigh 0 (clamped onto the last column, they add nothing).
    return matrices.scatter_add_(2, index.long().clamp(max=pad_to - 1), weights)


class BatchDecoder:
    """The training-process half of GPU decoding: `EncodedBatch` -> `(B, 3, S, S)` float32 on `device`, normalized.

    JPEGs are decoded in one call (nvJPEG on CUDA; libjpeg-turbo on a CPU, which tests use). Each crop is resized as
    two matrix products (columns, then rows), with the intermediate rounded to integers as the CPU path's uint8
    kernel does; the flip is folded into the column matrix. Crops are padded to the largest of a group, groups being
    formed by size so that padding stays bounded (`max_group_elements`). `compute_dtype`: float16 on CUDA (integers
    up to 2048 are exact in it; the weights carry 11 bits), float32 on a CPU."""

    def __init__(
        self,
        image_size: int,
        mean,
        std,
        device="cuda",
        bad_images: BadImagePolicy | None = None,
        compute_dtype: torch.dtype | None = None,
        max_group_elements: int = 2**27,
        max_group_size: int = 128,
    ):
        self.image_size, self.device = image_size, torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:  # a thread of its own sets it (DecodeAhead)
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.bad_images = bad_images or BadImagePolicy()
        self.compute_dtype = compute_dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.max_group_elements, self.max_group_size = max_group_elements, max_group_size
        self.scale = torch.tensor([1 / (255 * s) for s in std], device=self.device).view(1, 3, 1, 1)
        self.shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], device=self.device).view(
            1, 3, 1, 1
        )

    @classmethod
    def for_transform(cls, transform: PretrainingTransform, device, bad_images=None, **kwargs) -> BatchDecoder:
        return cls(square_side(transform.image_size), transform.mean, transform.std, device, bad_images, **kwargs)

    def __call__(self, batch: EncodedBatch) -> torch.Tensor:
        """The batch's `(B, 3, S, S)` pixels (see `decode_batch` for the labels of replaced images)."""
        return self.pixels(batch)[0]

    def decode_batch(self, batch: dict) -> dict:
        """A collated `{"pixel_values": EncodedBatch, "labels": ...}` decoded: an unreadable image's place goes to the
        next readable image of the batch, label included (batches keep their size)."""
        pixels, source = self.pixels(batch["pixel_values"])
        decoded = {**batch, "pixel_values": pixels}
        if "labels" in batch and source != list(range(len(source))):
            decoded["labels"] = batch["labels"][torch.tensor(source)]
        return decoded

    def pixels(self, batch: EncodedBatch) -> tuple[torch.Tensor, list[int]]:
        """The pixels, and for each position of the batch the position whose image it holds (itself but where an
        unreadable file was replaced)."""
        size = self.image_size
        out = torch.empty(batch.size, 3, size, size, device=self.device)
        if len(batch.decoded_positions):
            out[batch.decoded_positions.to(self.device)] = batch.decoded.to(self.device, non_blocking=True)
        source = list(range(batch.size))
        if not len(batch.positions):
            return out, source
        images = self.decode(batch)
        readable = [i for i, image in enumerate(images) if image is not None]
        if not readable:  # their places go to the images the workers decoded, if any
            donors, positions = batch.decoded_positions.tolist(), batch.positions.tolist()
            if not donors:
                raise BadImageError(f"All {len(images)} images of a batch are unreadable.")
            for k, position in enumerate(positions):
                out[position], source[position] = out[donors[k % len(donors)]], donors[k % len(donors)]
            return out, source
        boxes = batch.boxes.tolist()
        crops = [
            images[i][:, b[1] : b[3], b[0] : b[2]] if images[i] is not None else None for i, b in enumerate(boxes)
        ]
        resized = torch.empty(len(crops), 3, size, size, device=self.device)
        for group in self._groups(crops, readable):
            resized[torch.tensor(group, device=self.device)] = self._resize(
                [crops[i] for i in group], batch.flips[group].to(self.device)
            )
        # An unreadable file's place goes to the next readable one of the batch.
        replacement = [
            i if images[i] is not None else min(readable, key=lambda r, i=i: (r - i) % len(images))
            for i in range(len(images))
        ]
        if replacement != list(range(len(images))):
            resized = resized[torch.tensor(replacement, device=self.device)]
            positions = batch.positions.tolist()
            for i, r in enumerate(replacement):
                source[positions[i]] = positions[r]
        out[batch.positions.to(self.device)] = torch.addcmul(self.shift, resized, self.scale)
        return out, source

    def decode(self, batch: EncodedBatch) -> list[torch.Tensor | None]:
        """`(3, H, W)` uint8 images on `device`, None for a file that neither nvJPEG nor the CPU can read (handed to
        the bad-image policy). The whole batch in one call; file by file only when that call fails."""
        files = batch.files()
        try:
            return list(decode_jpeg(files, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:
            pass
        images = []
        for data, path in zip(files, batch.paths, strict=True):
            try:
                images.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
                continue
            except RuntimeError:
                pass
            try:  # the CPU path's decoders (PIL converts what libjpeg-turbo refuses)
                pixels = np.array(to_rgb(open_image(data.numpy().tobytes())))
                images.append(torch.from_numpy(pixels).permute(2, 0, 1).to(self.device))
            except IMAGE_ERRORS as error:
                self.bad_images.handle(path or image_name(data.numpy().tobytes()), error)
                images.append(None)
        return images

    def _groups(self, crops: list, indices: list[int]) -> list[list[int]]:
        """`indices` in groups of similar crop sizes whose padded batch stays under `max_group_elements`."""
        order = sorted(indices, key=lambda i: (crops[i].shape[1], crops[i].shape[2]))
        groups, current, height, width = [], [], 0, 0
        for i in order:
            h, w = max(height, crops[i].shape[1]), max(width, crops[i].shape[2])
            if current and (
                (len(current) + 1) * 3 * h * w > self.max_group_elements or len(current) == self.max_group_size
            ):
                groups.append(current)
                current, h, w = [], crops[i].shape[1], crops[i].shape[2]
            current.append(i)
            height, width = h, w
        return groups + [current] if current else groups

    def _resize(self, crops: list[torch.Tensor], flips: torch.Tensor) -> torch.Tensor:
        """Crops `(3, h_i, w_i)` uint8 -> `(N, 3, S, S)`: columns then rows, each pass rounded to 0..255."""
        size, dtype = self.image_size, self.compute_dtype
        heights, widths = [c.shape[1] for c in crops], [c.shape[2] for c in crops]
        n, height, width = len(crops), max(heights), max(widths)
        padded = torch.zeros(n, 3, height, width, dtype=dtype, device=self.device)
        for i, crop in enumerate(crops):
            padded[i, :, : crop.shape[1], : crop.shape[2]] = crop
        columns = resize_matrices(widths, size, width, dtype, self.device)  # (N, S, W)
        columns = torch.where(flips[:, None, None], columns.flip(1), columns)
        rows = resize_matrices(heights, size, height, dtype, self.device)  # (N, S, H)
        half = torch.bmm(padded.view(n, 3 * height, width), columns.transpose(1, 2))  # (N, 3H, S)
        half = half.view(n, 3, height, size).round_().clamp_(0, 255).transpose(1, 2).reshape(n, height, 3 * size)
        out = torch.bmm(rows, half).view(n, size, 3, size).transpose(1, 2)  # (N, 3, S, S)
        return out.float().round_().clamp_(0, 255)


class DecodeAhead:
    """Runs `decode` (`BatchDecoder.decode_batch`) on the batches of `iterator` in a thread of its own, up to `depth` batches ahead of the training
    loop (on CUDA, on a stream of its own: the decoding overlaps the step)."""

    _END = object()

    def __init__(self, iterator, decode, device, depth: int = 2):
        self.iterator, self.decode, self.device = iterator, decode, torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="supmae-decode-ahead", daemon=True)
        self.thread.start()

    def _run(self):
        try:
            if self.cuda:
                torch.cuda.set_device(self.device)
            with torch.cuda.stream(self.stream) if self.cuda else contextlib.nullcontext():
                for batch in self.iterator:
                    if self.stopping.is_set():
                        return
                    if isinstance(batch.get("pixel_values"), EncodedBatch):
                        batch = self.decode(batch)
                    event = None
                    if self.cuda:
                        event = torch.cuda.Event()
                        event.record(self.stream)
                    self._put((batch, event))
            self._put(self._END)
        except BaseException as error:  # handed to the training loop, which raises it
            self._put(error)

    def _put(self, item) -> None:
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self) -> dict | None:
        """The next decoded batch, or None at the end of the iterator."""
        item = self.queue.get()
        if item is self._END:
            self.queue.put(self._END)  # later calls see the end too
            return None
        if isinstance(item, BaseException):
            raise item
        batch, event = item
        if event is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(event)
            for value in batch.values():
                if isinstance(value, torch.Tensor) and value.is_cuda:
                    value.record_stream(stream)
        return batch

    def close(self) -> None:
        self.stopping.set()
        while True:  # unblock a thread waiting to put
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self.thread.join(timeout=10)


def check_device_decoding(device, streaming: bool) -> None:
    """`--decode_device cuda` needs a GPU, torchvision built with nvJPEG, and a map-style dataset."""
    if streaming:
        raise ValueError(
            "--decode_device cuda works with map-style datasets (local folders, prepared shards, Hub datasets "
            "downloaded), not with --streaming: drop one of the two."
        )
    if torch.device(device).type != "cuda":
        raise ValueError(
            f"--decode_device cuda decodes images on the training process's GPU, but it trains on {device}; use "
            "--decode_device cpu (the default: dataloader workers decode)."
        )
