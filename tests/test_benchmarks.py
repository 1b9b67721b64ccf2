"""The input-pipeline benchmark runs and records its result (timings are reported, never asserted)."""

import json
import os
import sys


sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import input_pipeline  # noqa: E402


def test_input_pipeline_benchmark_records_both_pipelines(tmp_path):
    output = tmp_path / "results.json"
    result = input_pipeline.main(["--images", "4", "--rounds", "1", "--size", "320x240", "--output", str(output)])
    assert set(result["images_per_second_per_core"]) == {"ours", "torchvision"} and result["ratio"] > 0
    for stats in result["output_statistics"].values():
        assert len(stats["mean"]) == 3 and all(s > 0 for s in stats["std"])
    assert json.loads(output.read_text())[-1]["jpeg_size"] == "320x240"
