"""examples/: the digits study runs end to end (cut to a few steps) and writes its table and figure."""

import json
import os
import sys

import pytest
from PIL import Image


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
import digits_study  # noqa: E402


@pytest.mark.slow
def test_the_digits_study_summarizes_every_arm_over_seeds(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPMAE_QUICK", "2")
    summary = digits_study.main(["--output_dir", str(tmp_path / "study"), "--seeds", "0,1"])
    written = json.loads((tmp_path / "study" / "results.json").read_text())
    assert written["summary"] == summary and set(summary) == {"SupMAE", "MAE", "no pretraining"}
    for arm, measures in summary.items():
        assert set(measures) == {"linprobe-cls", "linprobe-mean", "finetune"}
        for measure, result in measures.items():
            runs = [written["per_seed"][seed][arm][measure]["top1"] for seed in ("0", "1")]
            assert result["runs"] == runs and result["mean"] == pytest.approx(sum(runs) / 2)
            assert result["std"] == pytest.approx(abs(runs[0] - runs[1]) / 2**0.5)  # sample std of two
    # Each seed pretrained its own models, and the scratch arm starts from another random initialization per seed.
    assert (tmp_path / "study" / "seed-1" / "mae" / "pretrained" / "model.safetensors").is_file()
    assert Image.open(tmp_path / "study" / "results.png").size == (760, 420)
