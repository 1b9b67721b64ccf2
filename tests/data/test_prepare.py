"""supmae.prepare_dataset: shards that load like any dataset (labels and class names kept, the shorter side capped),
files kept or re-encoded as they need, resuming after an interruption without losing or half-writing a shard, and
one-paragraph command-line errors."""

import io
import json
import os

import datasets
import numpy as np
import PIL.Image
import pytest

import supmae.data.prepare as prepare_dataset
from supmae.data.images import IMAGE_ERRORS
from supmae.data.prepare import prepare, reencode, shrunk_size
from supmae.data.sources import PREPARE_MANIFEST, load_image_datasets, load_image_split


COLORS = {"cat": (200, 30, 30), "dog": (30, 30, 200)}


def jpeg(image: PIL.Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, **{"format": "JPEG", "quality": 90, **kwargs})
    return buffer.getvalue()


def write_source(root, per_class=5):
    """Class folders whose images are their class's colour (plus noise), in several sizes and orientations; and one
    unreadable file."""
    rng = np.random.default_rng(0)
    sizes = [(120, 90), (90, 120), (50, 40), (200, 100), (64, 64)]
    for name, color in COLORS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            width, height = sizes[i % len(sizes)]
            pixels = np.clip(np.array(color) + rng.integers(-20, 20, (height, width, 3)), 0, 255).astype(np.uint8)
            (root / name / f"{name}_{i}.jpg").write_bytes(jpeg(PIL.Image.fromarray(pixels)))
    (root / "cat" / "broken.jpg").write_bytes(b"not an image")
    return root


def rows(directory):
    """The prepared train split as (image bytes, label) pairs, in order."""
    split = load_image_datasets(str(directory))["train"].cast_column("image", datasets.Image(decode=False))
    return [(example["image"]["bytes"], example["label"]) for example in split]


def test_prepared_shards_load_like_any_dataset(tmp_path):
    source = write_source(tmp_path / "source")
    plan = prepare(str(source), str(tmp_path / "out"), max_side=64, shard_size=3, num_workers=2, progress=False)
    assert plan.complete and plan.rows == {"train": 11}
    assert sorted(os.listdir(tmp_path / "out" / "data")) == [f"train-0000{i}-of-00004.parquet" for i in range(4)]
    assert not os.path.exists(tmp_path / "out" / ".shards")  # nothing half-written left anywhere
    splits = load_image_datasets(str(tmp_path / "out"))
    assert splits["train"].features["label"].names == ["cat", "dog"]
    source_split = load_image_datasets(str(source))["train"]
    prepared = rows(tmp_path / "out")
    assert len(prepared) == 10  # the unreadable file is skipped and listed
    assert (tmp_path / "out" / "skipped_images.tsv").read_text().startswith(str(source / "cat" / "broken.jpg"))
    originals = [
        (PIL.Image.open(example["image"]["path"]).size, example["label"])
        for example in source_split.cast_column("image", datasets.Image(decode=False))
        if "broken" not in example["image"]["path"]
    ]
    for (data, label), (size, source_label) in zip(prepared, originals, strict=True):
        image = PIL.Image.open(io.BytesIO(data))
        assert label == source_label and image.format == "JPEG"
        assert image.size == shrunk_size(*size, 64) and min(image.size) == min(64, *size)
        mean = np.asarray(image.convert("RGB")).reshape(-1, 3).mean(0)
        assert np.abs(mean - COLORS[("cat", "dog")[label]]).max() < 15  # the label still names the picture
    assert len(load_image_split(str(tmp_path / "out"), "train")) == 10  # as run_classification loads a split
    assert "- train: 10 images (11 in the source)" in (tmp_path / "out" / "README.md").read_text()


def test_files_are_kept_when_they_need_nothing_and_re_encoded_otherwise():
    photo = PIL.Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    baseline = jpeg(photo)
    assert reencode(baseline, 0) is baseline and reencode(baseline, 90) is baseline  # within the cap
    shrunk = PIL.Image.open(io.BytesIO(reencode(baseline, 45)))
    assert shrunk.size == (60, 45) and shrunk.format == "JPEG"
    assert shrunk_size(1000, 10, 256) == (1000, 10) and shrunk_size(500, 375, 256) == (341, 256)
    exif = PIL.Image.Exif()
    exif[PIL.Image.ExifTags.Base.Orientation] = 6
    png = io.BytesIO()
    photo.save(png, "PNG")
    for data, size, mode in (
        (jpeg(photo, progressive=True), (120, 90), "RGB"),  # progressive -> baseline
        (jpeg(photo.convert("CMYK")), (120, 90), "RGB"),
        (png.getvalue(), (120, 90), "RGB"),
        (jpeg(photo, exif=exif), (90, 120), "RGB"),  # turned upright
        (jpeg(photo, exif=exif), (45, 60), "RGB"),  # upright, then capped at 45
        (jpeg(photo.convert("L"), progressive=True), (120, 90), "L"),  # grayscale stays grayscale
    ):
        out = PIL.Image.open(io.BytesIO(reencode(data, 45 if size == (45, 60) else 0)))
        assert (out.size, out.mode, out.format) == (size, mode, "JPEG")
        assert not out.info.get("progressive") and out.getexif().get(PIL.Image.ExifTags.Base.Orientation) is None
    # A file that would be kept must decode: a truncated JPEG (no end marker) or one with damaged data is refused
    # here, where prepare() lists and skips it, not in training.
    damaged = bytearray(baseline)
    damaged[len(damaged) // 2 : len(damaged) // 2 + 200] = b"\xff" * 200
    for broken in (baseline[: len(baseline) // 2], bytes(damaged)):
        with pytest.raises(IMAGE_ERRORS):
            reencode(broken, 0)


def test_an_interrupted_preparation_resumes_and_loses_nothing(tmp_path, monkeypatch):
    source = write_source(tmp_path / "source")
    prepare(str(source), str(tmp_path / "reference"), max_side=64, shard_size=2, num_workers=2, progress=False)

    output = tmp_path / "out"
    written = []
    original = prepare_dataset._write_rows

    def dies_after_two_shards(*args):
        if len(written) == 2:
            raise KeyboardInterrupt  # the process killed mid-run
        written.append(original(*args))
        return written[-1]

    monkeypatch.setattr(prepare_dataset, "_write_rows", dies_after_two_shards)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(source), str(output), max_side=64, shard_size=2, num_workers=1, progress=False)
    staged = output / ".shards"
    assert sorted(os.listdir(staged)) == sorted(name for name, _, _ in written)
    assert not os.path.exists(output / "data")  # no shard of an unfinished preparation is visible to datasets
    (staged / ".train-00005-of-00006.parquet.partial-123").write_bytes(b"half a shard")  # a crash while writing
    with pytest.raises(ValueError, match="preparation has not finished. Run the same command again") as error:
        load_image_datasets(str(output))
    assert f"--output {output} --max_side 64" in str(error.value)
    stamps = {name: os.stat(staged / name).st_mtime_ns for name in os.listdir(staged)}

    monkeypatch.setattr(prepare_dataset, "_write_rows", original)
    with pytest.raises(ValueError, match=r"other settings \(max_side=64; now max_side=32\)"):
        prepare(str(source), str(output), max_side=32, shard_size=2, progress=False)
    assert prepare(str(source), str(output), max_side=64, shard_size=2, num_workers=2, progress=False).complete
    for name, stamp in stamps.items():  # finished shards kept, not rewritten
        if not name.startswith("."):
            assert os.stat(output / "data" / name).st_mtime_ns == stamp
    assert rows(output) == rows(tmp_path / "reference")  # the same dataset as an uninterrupted, parallel run
    assert not os.path.exists(staged)
    assert json.loads((output / PREPARE_MANIFEST).read_text())["complete"] is True
    assert prepare(str(source), str(output), max_side=64, shard_size=2, progress=False).complete  # nothing to do


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (["--source", "x", "--output", "y"], 2, "the following arguments are required: --max_side"),
        (["--source", "/nonexistent/images", "--output", "{tmp}/o", "--max_side", "0"], 1, "error: "),
        (["--source", "digits", "--output", "{tmp}/full", "--max_side", "0"], 1, "is not empty and holds no"),
        (["--source", "digits", "--output", "{tmp}/o", "--max_side", "-1"], 1, "--max_side must be >= 0"),
        (["--source", "digits", "--output", "{tmp}/o", "--max_side", "0", "--splits", "dev"], 1, "has no split 'dev'"),
    ],
)
def test_command_line_mistakes_are_one_paragraph(tmp_path, capsys, arguments, code, message):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exit_:
        prepare_dataset.main([a.format(tmp=tmp_path) for a in arguments])
    error = capsys.readouterr().err
    assert exit_.value.code == code and message in error and "Traceback" not in error
    assert (tmp_path / "full" / "notes.txt").read_text() == "keep me"


def test_two_prepared_directories_of_the_same_name_load_their_own_images(tmp_path):
    """datasets caches a local directory by its name (and any data-file patterns its card declares): the card must
    not make two preparations share a cache entry."""
    for folder, per_class in (("a", 2), ("b", 3)):
        write_source(tmp_path / folder / "source", per_class=per_class)
        prepare(str(tmp_path / folder / "source"), str(tmp_path / folder / "out"), 0, progress=False)
    assert len(rows(tmp_path / "a" / "out")) == 4 and len(rows(tmp_path / "b" / "out")) == 6
