"""supmae.tasks.segmentation (what run_segmentation.py runs) end to end on an easy generated set: it learns, writes a
Hub-ready directory and resumes to the same weights; its mistakes fail before training. (The backbone:
tests/models/test_backbone.py; UperNet on it: tests/interop/test_upernet.py; the data, the trainer and the metric:
tests/data/, tests/training/test_segmentation.py, tests/test_metrics.py.)"""

import json
import os
import shutil
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from helpers import ROOT, TINY_SEGMENTATION, flags
from PIL import Image
from transformers import pipeline

from supmae.tasks import segmentation


COLORS = {1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255)}


def write_rectangles_dataset(path, count, seed):
    """An easy set: colored rectangles (red, green, blue = classes 1..3) on black (class 0), 32x32."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for _ in range(count):
        image, annotation = np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.uint8)
        for label in rng.choice([1, 2, 3], size=2, replace=False):
            top, left = rng.integers(0, 20, size=2)
            height, width = rng.integers(8, 14, size=2)
            image[top : top + height, left : left + width] = COLORS[label]
            annotation[top : top + height, left : left + width] = label
        images.append(Image.fromarray(image))
        annotations.append(Image.fromarray(annotation))
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    return datasets.Dataset.from_dict({"image": images, "annotation": annotations}, features=features)


@pytest.fixture(scope="module")
def rectangles(tmp_path_factory):
    root = tmp_path_factory.mktemp("rectangles")
    splits = datasets.DatasetDict(
        {"train": write_rectangles_dataset(root, 96, 0), "validation": write_rectangles_dataset(root, 16, 1)}
    )
    splits.save_to_disk(root / "data")
    (root / "data" / "id2label.json").write_text(
        json.dumps({"0": "background", "1": "red", "2": "green", "3": "blue"})
    )
    return root / "data"


SCRIPT_TINY = flags(
    **TINY_SEGMENTATION,
    decode_channels=32,
    auxiliary_channels=16,
    per_device_train_batch_size=8,
    learning_rate=2e-3,
    layer_decay=1.0,
    warmup_steps=5,
    report_to="none",
    disable_tqdm=True,
    use_cpu=True,
    dataloader_num_workers=0,
    eval_strategy="no",
    logging_steps=10,
    seed=0,
)


@pytest.mark.slow
def test_run_segmentation_learns_and_writes_a_hub_ready_directory(rectangles, tmp_path):
    output = tmp_path / "out"
    metrics = segmentation.main(
        [*SCRIPT_TINY, *flags(dataset_name=rectangles, max_steps=200, save_strategy="no", output_dir=output)]
    )
    # Chance is about 0.1 mIoU (4 classes, mostly background); the colors make the task easy. The recipe (head
    # dropout, layer scale, relative position bias) measured 0.790 after 200 steps (0.566 after 120).
    assert metrics["eval_mean_iou"] > 0.6, metrics
    assert set(os.listdir(output)) >= {
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "README.md",
        "modeling_supmae.py",
        "configuration_supmae.py",
        "eval_validation.json",
    }
    config = json.loads((output / "config.json").read_text())
    assert config["id2label"] == {"0": "background", "1": "red", "2": "green", "3": "blue"}
    assert config["backbone_config"]["model_type"] == "supmae" and config["backbone_config"]["add_fpn"]
    report = json.loads((output / "eval_validation.json").read_text())
    assert report["metrics"]["eval_mean_iou"] == pytest.approx(metrics["eval_mean_iou"])
    assert f"{metrics['eval_mean_iou']:.4g}" in (output / "README.md").read_text()
    segment = pipeline("image-segmentation", model=str(output))
    assert {r["label"] for r in segment(Image.new("RGB", (32, 32)))} <= {"background", "red", "green", "blue"}


@pytest.mark.slow
def test_a_run_killed_after_a_checkpoint_resumes_to_the_same_weights(rectangles, tmp_path):
    common = [*SCRIPT_TINY, *flags(dataset_name=rectangles, max_steps=8, save_steps=4, max_eval_samples=2)]
    segmentation.main([*common, "--output_dir", str(tmp_path / "whole")])
    segmentation.main([*common, "--output_dir", str(tmp_path / "killed")])
    # What a kill after checkpoint-4 leaves: no final model, no checkpoint-8, no record of a finished run.
    os.remove(tmp_path / "killed" / "model.safetensors")
    os.remove(tmp_path / "killed" / "trainer_state.json")
    os.remove(tmp_path / "killed" / "run_complete.json")
    shutil.rmtree(tmp_path / "killed" / "checkpoint-8")
    segmentation.main([*common, "--output_dir", str(tmp_path / "killed")])
    from safetensors.torch import load_file

    whole, resumed = (
        load_file(tmp_path / "whole" / "model.safetensors"),
        load_file(tmp_path / "killed" / "model.safetensors"),
    )
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--model_name_or_path", "x", "--config_name", "vit-small-patch16"], "both give the architecture"),
        (["--mask_column_name", "seg"], r"`mask_column_name` 'seg' is not a column.*\['image', 'annotation'\]"),
        (["--config_name", "vit-gigantic"], "neither a preset"),
        (["--num_labels", "3"], "--num_labels 3 disagrees with the 4 class names"),
        (["--stride", "40"], r"--stride 40 must be between 1 and --crop_size \(32\)"),
        (["--stride", "0"], r"--stride 0 must be between 1 and --crop_size"),
        (["--windows_per_batch", "0"], "--windows_per_batch must be at least 1, got 0"),
        (
            ["--crop_size", "30", "--stride", "16"],
            r"--crop_size 30 is not a multiple of the encoder's patch size \(8\)",
        ),
    ],
)
def test_mistakes_fail_before_training(rectangles, tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        segmentation.main([*SCRIPT_TINY, *flags(dataset_name=rectangles, output_dir=tmp_path / "out"), *arguments])
    assert not os.path.exists(tmp_path / "out" / "model.safetensors")


def test_a_command_line_mistake_is_one_line_not_a_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "run_segmentation.py"),
            "--output_dir",
            str(tmp_path / "out"),
            "--dataset_name",
            "digits",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: Give --model_name_or_path")
