"""supmae.training.files: reports written whole or not at all, into the folders they need."""

import json
import os

import numpy as np
import pytest
import torch

from supmae.training.files import write_report


def test_write_report_content_and_parent_dirs(tmp_path):
    path = tmp_path / "reports" / "imagenet-a" / "report.json"
    metrics = {"top1": np.float32(0.5), "top5": torch.tensor(0.75), "num_samples": np.int64(4)}
    report = write_report(
        path, "imagenet-a", metrics, model="outputs/model", num_classes=200, class_subset="imagenet-a"
    )
    expected = {
        "dataset": "imagenet-a",
        "metrics": {"top1": 0.5, "top5": 0.75, "num_samples": 4},
        "model": "outputs/model",
        "num_classes": 200,
        "class_subset": "imagenet-a",
    }
    assert report == expected and json.loads(path.read_text()) == expected
    assert type(report["metrics"]["top1"]) is float and type(report["metrics"]["num_samples"]) is int
    assert os.listdir(path.parent) == ["report.json"]  # no temporary file left behind


def test_write_report_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "report.json"
    write_report(path, "old", {"top1": 0.1})
    write_report(path, "new", {"top1": 0.2})
    assert json.loads(path.read_text())["dataset"] == "new"
    with pytest.raises(TypeError):  # fails mid-write: the previous report stays, and no temporary file
        write_report(path, "broken", {"top1": 0.3}, extra=object())
    assert json.loads(path.read_text())["dataset"] == "new"
    assert os.listdir(tmp_path) == ["report.json"]
