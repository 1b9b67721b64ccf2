# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Decoding image files, and the bad-image policy: what happens to a file that cannot be read."""

import hashlib
import io
import logging
import os
import re
from dataclasses import dataclass, field

import datasets
import PIL.Image
import PIL.ImageOps

# IMAGE_ERRORS: what reading a broken image file raises (defined beside the image processor, which catches it too).
from ..image_processing_supmae import IMAGE_ERRORS as IMAGE_ERRORS
from ..image_processing_supmae import pil_to_rgb_array


# The most elongated image accepted, longer side / shorter side: beyond it an image is a bad image (skipped and
# listed, or an error with --bad_images error), refused from its header before anything is decoded or resized.
# Panoramas are 2:1 to 10:1; a 1 x 400000 PNG of 1.6 kB would otherwise make the evaluation transform (shorter side
# to 256) allocate gigabytes, and leave the crops of training a strip of a few pixels.
MAX_ASPECT_RATIO = 100


SKIPPED_IMAGES = "skipped_images.tsv"  # the unreadable images a run skipped, in its output directory


MAX_BAD_IMAGES_IN_A_ROW = 50  # more in a row than this is a broken dataset, not a few broken files


logger = logging.getLogger(__name__)


def encoded_bytes(image) -> bytes | None:
    """The encoded file behind `image`: bytes as given, or datasets' undecoded `{"bytes", "path"}`; None for a
    decoded (PIL) image."""
    if isinstance(image, dict):
        if image.get("bytes") is not None:
            return image["bytes"]
        with open(image["path"], "rb") as file:
            return file.read()
    return bytes(image) if isinstance(image, (bytes, bytearray, memoryview)) else None


def undecoded(dataset, image_column: str):
    """`dataset` with its image column left encoded (datasets' `Image(decode=False)`): the transforms decode the
    files themselves, so that an unreadable one is caught, named and skipped (`BadImagePolicy`)."""
    feature = (getattr(dataset, "features", None) or {}).get(image_column)
    if isinstance(feature, datasets.Image) and feature.decode:
        return dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset


class BadImageError(ValueError):
    """An image file that cannot be read (with `--bad_images error`, or too many in a row)."""


class UnacceptableImageError(ValueError):
    """A readable image that the transforms refuse: more elongated than `MAX_ASPECT_RATIO`. A bad image."""


def check_image_size(width: int, height: int) -> None:
    """Refuse, from the header's size, an image more elongated than `MAX_ASPECT_RATIO` (or without pixels)."""
    short, long = sorted((width, height))
    if short < 1 or long > MAX_ASPECT_RATIO * short:
        raise UnacceptableImageError(
            f"{width}x{height} pixels: more elongated than MAX_ASPECT_RATIO = {MAX_ASPECT_RATIO} (longer side / "
            "shorter side) allows"
        )


def shown_name(name: str) -> str:
    """A file name as logs and `skipped_images.tsv` can show it, on one line: bytes that are not UTF-8 (which Python
    keeps as surrogate escapes) as \\xNN, and tabs, newlines and other control characters escaped."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)


@dataclass
class BadImagePolicy:
    """What happens to an image that cannot be read (corrupt, truncated, empty, not an image, a decompression bomb).
    `skip` (the default): a warning names it, a line `name<TAB>reason` goes to `log_file`, and the dataset moves
    on. `error`: `BadImageError`, naming it. Odd but valid images (CMYK, 16-bit, palette, alpha, gray, 1x1) are
    converted to RGB, never skipped."""

    action: str = "skip"
    log_file: str | None = None
    reported: set = field(default_factory=set, repr=False, compare=False)  # names logged (per process)

    def __post_init__(self):
        if self.action not in ("skip", "error"):
            raise ValueError(f"bad_images must be 'skip' or 'error', got {self.action!r}.")

    def handle(self, name: str, error: Exception) -> None:
        name = shown_name(name)
        # PIL names an in-memory file by its object address: "cannot identify image file <_io.BytesIO object ...>".
        reason = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", f"{type(error).__name__}: {error}")
        reason = " ".join(reason.split())
        if self.action == "error":
            raise BadImageError(
                f"Cannot read image {name}: {reason}. (--bad_images skip skips such files.)"
            ) from error
        if name in self.reported:  # once per process (a dataloader worker lives one epoch): files are met again
            return
        self.reported.add(name)
        if self.log_file and os.path.isfile(self.log_file):  # listed by an earlier worker or epoch
            with open(self.log_file) as file:
                if any(line.split("\t", 1)[0] == name for line in file):
                    return
        logger.warning(f"Skipping unreadable image {name}: {reason}")
        if self.log_file:
            os.makedirs(os.path.dirname(os.path.abspath(self.log_file)), exist_ok=True)  # before the run's own files
            with open(self.log_file, "a") as file:  # one short append per line: safe across dataloader workers
                file.write(f"{name}\t{reason}\n")


def count_skipped_images(log_file: str | None) -> int:
    """The distinct images named in a `BadImagePolicy` log file (0 when there is none)."""
    if not log_file or not os.path.isfile(log_file):
        return 0
    with open(log_file) as file:
        return len({line.split("\t", 1)[0] for line in file if line.strip()})


def image_name(value, index=None) -> str:
    """How the log names an image: its path when the dataset has one, else a digest of its bytes (the same in every
    process, worker and epoch, so that the log's distinct names count distinct files); and its position if known."""
    path = value.get("path") if isinstance(value, dict) else getattr(value, "filename", None)
    if not path:
        data = value.get("bytes") if isinstance(value, dict) else value
        data = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else None
        path = f"<{len(data)} bytes, sha1 {hashlib.sha1(data).hexdigest()[:12]}>" if data is not None else "<image>"
    return path if index is None else f"{path} (item {index})"


def open_image(value) -> PIL.Image.Image:
    """Decode an undecoded datasets image (`{"bytes", "path"}`) or the file's bytes as datasets' Image feature
    does: PIL, fully loaded, EXIF orientation applied. A PIL image is returned as it is. Either is first checked
    against `MAX_ASPECT_RATIO` (`UnacceptableImageError`), from the header."""
    if isinstance(value, PIL.Image.Image):
        check_image_size(*value.size)
        return value
    image = PIL.Image.open(io.BytesIO(encoded_bytes(value)))
    check_image_size(*image.size)
    image.load()
    return PIL.ImageOps.exif_transpose(image) if _exif_orientation(image) else image


def _exif_orientation(image: PIL.Image.Image) -> int | None:
    """The EXIF orientation when it asks for a rotation or flip (2..8), else None."""
    orientation = image.getexif().get(PIL.Image.ExifTags.Base.Orientation)
    return orientation if orientation in range(2, 9) else None


JPEG_END = b"\xff\xd9"


def plain_jpeg(header: PIL.Image.Image, data: bytes) -> bool:
    """Whether `data` (opened as `header`, not decoded) is a baseline RGB or grayscale JPEG, upright (no EXIF
    rotation) and complete (it ends with the end-of-image marker): the files that GPU decoding takes as they are,
    and that prepare_dataset keeps byte for byte."""
    return (
        header.format == "JPEG"
        and header.mode in ("RGB", "L")
        and not header.info.get("progressive")
        and not _exif_orientation(header)
        and data.rstrip(b"\x00\r\n ").endswith(JPEG_END)
    )


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """Any PIL mode as RGB (transparency onto white, 16-bit gray scaled by its depth)."""
    return image if image.mode == "RGB" else PIL.Image.fromarray(pil_to_rgb_array(image))
