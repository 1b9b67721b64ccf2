"""Every decode path goes through the bad-image policy (issue 19, item 3; and item 10's file names): the figures, the
image processor, transfer's suite data, image folders and prepare_dataset. With `--bad_images skip` an unreadable
file is left out, said so and listed in skipped_images.tsv; with `error` it stops the run, named. (Evaluation:
tests/tasks/test_evaluation_counts.py.)"""

import io
import json
import os

import numpy as np
import PIL.Image
import pytest
import torch
from helpers import TINY, tiny_config, write_shapes_folder

from supmae import SupMAEForPreTraining, SupMAEImageProcessor
from supmae.cli import run_script
from supmae.data.images import SKIPPED_IMAGES, BadImageError, BadImagePolicy, count_skipped_images
from supmae.data.prepare import prepare
from supmae.data.segmentation import SegmentationDataset, SegmentationEvalTransform
from supmae.data.sources import load_image_datasets, load_image_split
from supmae.reports import reconstruction_figure as figures
from supmae.reports import segmentation_figure
from supmae.tasks import pretraining
from supmae.tasks.transfer import DataSource, SuiteDataset, TransferData


TINY_OVERRIDES = ",".join(f"{k}={v}" for k, v in TINY.items() if k != "num_labels")
COMMON = ["--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true", "--dataloader_num_workers", "0"]


def truncated_png(path, size=(32, 32)) -> None:
    """A PNG cut in half: the header reads, the pixels do not ("Truncated File Read" inside datasets)."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def listed(output) -> list[str]:
    """The names skipped_images.tsv lists."""
    return [line.split("\t")[0] for line in (output / SKIPPED_IMAGES).read_text().splitlines()]


# ------------------------------------------------------------------------------------------------------- pretraining
@pytest.mark.slow
def test_an_unreadable_validation_image_leaves_the_figure_and_the_run_record_whole(tmp_path, caplog):
    """The issue's run: evaluation skipped the file, then the figure decoded the raw images and the run died before
    its card and record ('error: Truncated File Read', the file unnamed), and did so again on every rerun."""
    train = write_shapes_folder(tmp_path / "train", per_class=4)
    validation = write_shapes_folder(tmp_path / "validation", per_class=1)
    truncated_png(validation / "circle" / "0_truncated.png")  # sorts first: among the figure's images
    output = tmp_path / "out"
    argv = [
        *f"--train_dir {train} --validation_dir {validation} --output_dir {output} --max_steps 2".split(),
        *"--per_device_train_batch_size 4 --per_device_eval_batch_size 4 --num_figure_images 4".split(),
        *["--config_overrides", TINY_OVERRIDES, *COMMON],
    ]
    metrics = pretraining.main(argv)
    assert metrics["eval_num_samples"] == 3  # evaluation scored the readable images, none in the unreadable's place
    assert (output / "README.md").is_file() and (output / "run_complete.json").is_file()
    with PIL.Image.open(output / "reconstructions.png") as figure:
        assert figure.size == figures.figure_size(3, 128, 128)  # 4 images, the unreadable one left out
    assert "The figure leaves out 1 of its 4 images, which cannot be read: " in caplog.text
    assert listed(output) == [f"{validation / 'circle' / '0_truncated.png'} (item 0)"]  # once: evaluation's name
    assert json.loads((output / "run_complete.json").read_text())["results"]["figure"] == "reconstructions.png"
    pretraining.main(argv)  # the rerun reports the finished run

    strict = [*argv[:5], str(tmp_path / "strict"), *argv[6:], "--bad_images", "error"]
    with pytest.raises(BadImageError, match=r"Cannot read image .*circle/0_truncated\.png"):
        pretraining.main(strict)


# ------------------------------------------------------------------------------------------------------------ figures
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("figure")
    torch.manual_seed(0)
    SupMAEForPreTraining(tiny_config()).save_pretrained(root / "model")
    PIL.Image.new("RGB", (48, 40), (200, 30, 30)).save(root / "good.png")
    PIL.Image.new("1", (20000, 20000)).save(root / "bomb.png")  # 400 M pixels in 48 kB: over PIL's limit
    truncated_png(root / "truncated.png")
    return root


def test_the_figure_command_on_a_decompression_bomb_is_one_paragraph_naming_it(checkpoint, capsys):
    argv = ["--model", str(checkpoint / "model"), "--output", str(checkpoint / "figure.png")]
    with pytest.raises(SystemExit) as exit_info:
        run_script(figures.main, [*argv, "--images", str(checkpoint / "bomb.png")])
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]  # besides the weights' progress bar
    assert exit_info.value.code == 2 and "Traceback" not in err and err.strip().endswith(line)
    assert line.startswith("error: None of the figure's images can be read: ")
    assert f"{checkpoint / 'bomb.png'} (item 0) (DecompressionBombError: Image size (400000000 pixels)" in line

    with pytest.raises(SystemExit):
        run_script(figures.main, [*argv, "--images", str(checkpoint / "bomb.png"), "--bad_images", "error"])
    assert f"error: Cannot read image {checkpoint / 'bomb.png'} (item 0): DecompressionBomb" in capsys.readouterr().err


def test_the_figure_leaves_out_what_it_cannot_read_and_says_so(checkpoint, caplog):
    images = [checkpoint / name for name in ("good.png", "truncated.png", "bomb.png", "good.png")]
    argv = ["--model", str(checkpoint / "model"), "--output", str(checkpoint / "figure.png"), "--images", *images]
    figures.main(list(map(str, argv)))
    with PIL.Image.open(checkpoint / "figure.png") as figure:
        assert figure.size == figures.figure_size(2, 128, 128)
    assert "The figure leaves out 2 of its 4 images, which cannot be read: " in caplog.text
    assert f"{checkpoint / 'truncated.png'} (item 1) (OSError: image file is truncated" in caplog.text

    model = SupMAEForPreTraining.from_pretrained(checkpoint / "model")
    lazy = PIL.Image.open(checkpoint / "truncated.png")  # opened, not decoded: the figure decodes it
    with pytest.raises(
        BadImageError, match=r"Cannot read image .*truncated\.png \(item 1\): ValueError: Cannot decode .*truncated"
    ):
        figures.reconstruction_figure(model, [PIL.Image.open(checkpoint / "good.png"), lazy])  # error: the default
    log = checkpoint / "skipped.tsv"
    figure = figures.reconstruction_figure(
        model,
        [lazy, {"path": str(checkpoint / "good.png"), "bytes": None}],
        bad_images=BadImagePolicy("skip", str(log)),
    )
    assert figure.size == figures.figure_size(1, 128, 128)
    assert listed_file(log) == [f"{checkpoint / 'truncated.png'} (item 0)"]


def listed_file(log) -> list[str]:
    return [line.split("\t")[0] for line in log.read_text().splitlines()]


def test_the_segmentation_figure_leaves_out_unreadable_pairs_or_names_them(tmp_path, monkeypatch, caplog):
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(3):
        PIL.Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(tmp_path / f"{i}.jpg")
        PIL.Image.fromarray(rng.integers(0, 3, (16, 24), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        pairs.append({"image": {"path": str(tmp_path / f"{i}.jpg"), "bytes": None}})
        pairs[-1]["annotation"] = {"path": str(tmp_path / f"{i}.png"), "bytes": None}
    truncated_png(tmp_path / "1.png", size=(16, 24))
    monkeypatch.setattr(segmentation_figure, "predict_segmentation", lambda model, pixels, shape, *a: np.zeros(shape))

    class Model(torch.nn.Module):
        config = type("Config", (), {"num_labels": 3})

    def dataset(action):
        policy = BadImagePolicy(action, str(tmp_path / "skipped.tsv"))
        return SegmentationDataset(
            pairs, "image", "annotation", SegmentationEvalTransform((24, 16)), bad_images=policy, substitute=False
        )

    figure = segmentation_figure.prediction_figure(Model(), dataset("skip"), (16, 16), (8, 8), "cpu", count=3)
    assert figure.size == (3 * 24 * 4 + 4 * 4, 2 * (16 * 4 + 4) + 4)  # two rows: the readable pairs
    assert "The segmentation figure leaves out 1 unreadable pairs" in caplog.text
    with pytest.raises(BadImageError, match=r"Cannot read image .*1\.png \(item 1\): OSError"):
        segmentation_figure.prediction_figure(Model(), dataset("error"), (16, 16), (8, 8), "cpu", count=3)


# ----------------------------------------------------------------------------------------------------------- processor
def test_the_image_processor_names_an_input_it_cannot_decode(checkpoint):
    processor = SupMAEImageProcessor()
    with pytest.raises(ValueError, match=r"Cannot decode .*truncated\.png \(32x32\): OSError: image file is trunc"):
        processor(PIL.Image.open(checkpoint / "truncated.png"))
    with pytest.raises(ValueError, match=r"Could not decode the image at '.*truncated\.png': OSError: image file"):
        processor(str(checkpoint / "truncated.png"))
    with pytest.raises(ValueError, match=r"Could not decode the image at '.*bomb\.png': DecompressionBombError"):
        processor(str(checkpoint / "bomb.png"))


# ------------------------------------------------------------------------------------------------------------ transfer
def test_a_suite_dataset_whose_first_image_is_unreadable_loads(tmp_path):
    """Reading the first row for its label decoded its image inside datasets, unnamed."""
    folder = write_shapes_folder(tmp_path / "data", per_class=2)
    truncated_png(folder / "circle" / "0_truncated.png")
    entry = SuiteDataset("shapes", DataSource(str(folder)), DataSource(str(folder)), "accuracy")
    data = TransferData.load(entry)
    assert data.names == ["circle", "square", "triangle"] and len(data.train) == 7


# ------------------------------------------------------------------------------------------------------ file names
@pytest.fixture
def badly_named(tmp_path):
    """An image folder of 6 images, one of them named with bytes that are not UTF-8 (and a newline)."""
    root = write_shapes_folder(tmp_path / "data" / "train", per_class=2)
    name = os.path.join(os.fsencode(root / "circle"), b"caf\xe9\n.png")  # Latin-1, as an old camera might write
    PIL.Image.new("RGB", (8, 8)).save(name)
    return root, str(root / "circle") + "/caf\\xe9\\n.png"


def test_a_file_name_that_is_not_utf8_is_skipped_and_listed_and_the_rest_loads(badly_named, tmp_path):
    root, shown = badly_named
    log = tmp_path / "out" / SKIPPED_IMAGES
    policy = BadImagePolicy("skip", str(log))
    for loaded in (
        load_image_datasets(None, None, str(root), None, bad_images=policy)["train"],  # --train_dir
        load_image_datasets(str(root.parent), bad_images=policy)["train"],  # a local dataset directory
        load_image_split(str(root), bad_images=policy),  # an evaluation set
    ):
        assert len(loaded) == 6 and loaded.features["label"].names == ["circle", "square", "triangle"]
    stream = load_image_datasets(None, None, str(root), None, streaming=True, bad_images=policy)["train"]
    assert len(list(stream)) == 6
    assert log.read_text().splitlines() == [
        f"{shown}\tUnicodeError: its name is not valid UTF-8, which datasets cannot store: rename the file"
    ]
    with pytest.raises(BadImageError, match=r"Cannot read image .*caf\\xe9\\n\.png: UnicodeError: its name"):
        load_image_datasets(None, None, str(root), None, bad_images=BadImagePolicy("error"))


def test_prepare_dataset_skips_and_lists_a_file_name_that_is_not_utf8(badly_named, tmp_path):
    root, shown = badly_named
    plan = prepare(str(root), str(tmp_path / "prepared"), max_side=0, progress=False, num_workers=1)
    assert plan.complete and plan.rows == {"train": 6}
    assert listed(tmp_path / "prepared") == [shown]
    assert count_skipped_images(str(tmp_path / "prepared" / SKIPPED_IMAGES)) == 1
    assert len(load_image_datasets(str(tmp_path / "prepared"))["train"]) == 6
