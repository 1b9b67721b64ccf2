"""The benchmarks run and record their results (timings are reported, never asserted): the input pipeline, the
train step's optimizer comparison, the GPU-decode check, the profile, end to end through run_pretraining.py, the
summary, run_gpu.sh's every command line on a CPU, the segmentation step's two arms, and a short soak (its memory
bounded)."""

import json
import os
import subprocess
import sys

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import end_to_end  # noqa: E402
import gpu_decode_check  # noqa: E402
import input_pipeline  # noqa: E402
import profile_step  # noqa: E402
import summarize  # noqa: E402
import train_step  # noqa: E402


def test_input_pipeline_benchmark_records_both_pipelines(tmp_path):
    output = tmp_path / "results.json"
    result = input_pipeline.main(["--images", "4", "--rounds", "1", "--size", "320x240", "--output", str(output)])
    assert set(result["images_per_second_per_core"]) == {"ours", "torchvision"} and result["ratio"] > 0
    for stats in result["output_statistics"].values():
        assert len(stats["mean"]) == 3 and all(s > 0 for s in stats["std"])
    assert json.loads(output.read_text())[-1]["jpeg_size"] == "320x240"


def test_input_pipeline_times_prepared_files_and_records_what_the_cap_changes(tmp_path):
    result = input_pipeline.main(["--images", "4", "--rounds", "1", "--size", "320x240", "--prepared", "120"])
    assert set(result["images_per_second_per_core"]) == {"ours", "torchvision", "ours_prepared"}
    assert result["ratio_prepared"] > 0 and result["prepared_max_side"] == 120
    assert result["prepared_bytes_per_image"] < result["original_bytes_per_image"]
    originals, prepared = result["crop_statistics"]["originals"], result["crop_statistics"]["prepared"]
    # Capping 240 -> 120 pixels halves every crop's pixels: crops are upsampled twice as much, and come out softer.
    assert prepared["median_scale"] == pytest.approx(2 * originals["median_scale"], rel=0.05)
    assert prepared["upsampled_fraction"] > originals["upsampled_fraction"]
    assert prepared["sharpness"] < originals["sharpness"]


def test_train_step_compares_fused_with_default_adamw(tmp_path):
    output = tmp_path / "steps.json"
    record = train_step.main(
        [
            "--tiny",
            "--comparison",
            "optimizer",
            "--rounds",
            "1",
            "--warmup",
            "1",
            "--batch_size",
            "4",
            "--output",
            str(output),
        ]
    )
    arms = record["results"][0]["arms"]
    assert set(arms) == {"supmae_dec1_fused", "supmae_dec1_default"}
    assert "fused AdamW" in arms["supmae_dec1_fused"]["label"] and record["args"]["optimizer"] == "fused"
    assert json.loads(output.read_text())[-1]["results"][0]["comparisons"][0]["ours"] == "supmae_dec1_fused"


def test_summary_picks_the_best_batch_and_tabulates_the_suite(tmp_path):
    def step(batch, optimizer, images_per_s, mode="default"):
        arm = {"images_per_s": images_per_s, "achieved_flops": 4e14, "mfu": 0.5}
        return {
            "script": "train_step.py",
            "machine": {"device": "cuda"},
            "args": {"compile": True, "compile_mode": mode, "optimizer": "fused"},
            "results": [{"batch_size": batch, "arms": {f"supmae_dec1_{optimizer}": arm}}],
        }

    records = [
        step(512, "fused", 9000),
        step(1024, "fused", 9900),
        step(2048, "fused", 10100),
        step(1024, "default", 9990),
        step(1024, "fused", 11000, mode="reduce-overhead"),
    ]
    assert summarize.best_batch(records, None, 512) == 2048
    assert summarize.best_batch(records, 1024, 512) == 1024  # the default AdamW and CUDA-graph rows do not count
    assert summarize.best_batch([], None, 512) == 512
    e2e = {
        "benchmark": "end_to_end",
        "run": "folder:cuda",
        "batch_size": 1024,
        "workers": 15,
        "images_per_second": 9000.0,
        "step_only_images_per_second": 9900.0,
        "end_to_end_vs_step_only": 0.91,
        "data_wait_fraction": 0.05,
        "mfu_spec": 0.4,
    }
    failed = {"benchmark": "end_to_end", "run": "folder:cpu", "batch_size": 1024, "error": "OSError: no shm"}
    text = summarize.table(records + [e2e, failed], 989.0)
    assert "40.4%" in text  # 4e14 FLOP/s of 989 TFLOP/s
    assert "folder:cuda" in text and "91%" in text and "FAILED: OSError: no shm" in text
    path = tmp_path / "r.json"
    path.write_text(json.dumps(records))
    assert summarize.main([str(path), "--best_batch", "--at_most", "1024"]) == 0


def test_gpu_decode_check_exits_nonzero_when_the_paths_disagree(capsys):
    arguments = ["--device", "cpu", "--images", "3", "--batch_size", "4", "--rounds", "1"]
    assert gpu_decode_check.main(arguments) == 0
    assert "AGREES" in capsys.readouterr().out
    assert gpu_decode_check.main([*arguments, "--max_tolerance", "0.5"]) == 1  # a single gray level now disagrees
    assert "DISAGREES: photo" in capsys.readouterr().out


def test_profile_names_where_the_step_time_goes(tmp_path):
    record = profile_step.main(
        [
            "--tiny",
            "--steps",
            "1",
            "--rounds",
            "1",
            "--warmup",
            "1",
            "--batch_size",
            "4",
            "--profile_dir",
            str(tmp_path),
        ]
    )
    categories = record["categories_s_per_step"]
    assert "GEMM (matmuls, patch convolution)" in categories and "AdamW" in categories
    assert sum(categories.values()) == pytest.approx(record["busy_s_per_step"])
    assert "LayerNorm" in (tmp_path / "profile-cpu-tiny-b4.txt").read_text()
    assert profile_step.category("sm90_xmma_gemm_bf16bf16_bf16f32") == "GEMM (matmuls, patch convolution)"
    assert profile_step.category("pytorch_flash::flash_bwd_kernel") == "attention"
    assert profile_step.category("triton_per_fused_native_layer_norm_backward_3") == "LayerNorm"


@pytest.mark.slow
def test_end_to_end_runs_the_training_script_and_records_each_run(tmp_path):
    output = tmp_path / "e2e.json"
    records = end_to_end.main(
        [
            "--tiny",
            "--batch_size",
            "4",
            "--steps",
            "2",
            "--skip",
            "2",
            "--workers",
            "1",
            "--step_only_steps",
            "1",
            "--runs",
            "prepared:cpu,shards:cuda,folder:cpu",
            "--max_side",
            "128",
            "--data_dir",
            str(tmp_path / "data"),
            "--json",
            str(output),
        ]
    )
    prepared, on_gpu, folder = records
    for record in (prepared, folder):
        assert "error" not in record, record.get("error")
        assert record["images_per_second"] > 0 and record["step_only_images_per_second"] > 0
        assert 0 <= record["data_wait_fraction"] <= 1 and record["workers"] == 1
        assert record["argv"][:2] == ["python", "run_pretraining.py"] and "--max_steps" in record["argv"]
        assert record["images"] == (2 + 2 + 1) * 4 and record["optimizer"] == "adamw_torch_fused"
    assert "--dataset_name" in prepared["argv"] and "--train_dir" in folder["argv"]
    assert "--decode_device cuda decodes images on the training process's GPU" in on_gpu["error"]  # no GPU here
    assert [r["run"] for r in json.loads(output.read_text())] == ["prepared:cpu", "shards:cuda", "folder:cpu"]


@pytest.mark.slow
def test_run_gpu_sh_runs_every_part_on_a_cpu(tmp_path):
    """The GPU suite's command lines, at tiny sizes on the CPU (compilation switched off): a typo in any of them
    fails here rather than in the one GPU run."""
    out = tmp_path / "gpu.json"
    environment = {
        **os.environ,
        "SUPMAE_BENCH_SMOKE": "1",
        "TORCHDYNAMO_DISABLE": "1",
        "TMPDIR": str(tmp_path),
        "PYTHONPATH": ROOT,
    }
    done = subprocess.run(
        ["bash", os.path.join(ROOT, "benchmarks", "run_gpu.sh"), str(out)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for trouble in ("did not finish", "failed (exit status", "the suite's"):
        assert trouble not in done.stdout, done.stdout[-3000:]
    kinds = [r.get("script") or r.get("benchmark") for r in json.loads(out.read_text())]
    assert kinds == [
        "gpu_decode_check",
        "segmentation_step.py",
        "input_pipeline",
        "train_step.py",
        "end_to_end",
        "end_to_end",
        "profile_step.py",
        "train_step.py",
    ]
    assert "end to end (run_pretraining.py, Trainer):" in done.stdout
    assert "segmentation step (UperNet" in done.stdout
    assert (tmp_path / "gpu-summary.txt").read_text().strip() in done.stdout


@pytest.mark.slow  # a tiny model, but the memory child imports torch and transformers again
def test_segmentation_benchmark_compares_the_same_architecture(tmp_path, monkeypatch):
    """benchmarks/segmentation_step.py on a tiny ViT: both arms run and are recorded, and they do the same work (the
    same FLOPs per step: same blocks, same pyramid, same heads). Timings are not asserted."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    monkeypatch.setenv("PYTHONPATH", ROOT)  # the memory child imports this checkout's package
    import segmentation_step

    output = tmp_path / "results.json"
    record = segmentation_step.main(
        ["--tiny", "--device", "cpu", "--rounds", "1", "--warmup", "0", "--output", str(output)]
    )
    (point,) = record["results"]
    ours, beit = point["arms"]["supmae"], point["arms"]["beit"]
    assert ours["label"] == "UperNet + SupMAEBackbone" and beit["label"] == "UperNet + BeitBackbone"
    assert ours["flops_per_step"] == pytest.approx(beit["flops_per_step"], rel=0.01) and ours["flops_per_step"] > 0
    for arm in (ours, beit):
        assert arm["images_per_s"] > 0 and arm["memory"]["peak_bytes"] > 0
    assert point["comparisons"][0]["ratio"] > 0 and (point["batch_size"], point["image_size"]) == (2, 64)
    assert json.loads(output.read_text())[-1]["script"] == "segmentation_step.py"


@pytest.mark.slow
def test_a_short_soak_keeps_memory_flat():
    """600 steps through digits, two dataloader workers re-created every epoch and rotated checkpoints: resident
    memory after warm-up grows by less than 20 MiB (benchmarks/soak.py records thousands of steps; throughput is
    recorded there, never asserted)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import soak

    record = soak.main(["--steps", "600", "--window", "100"])
    summary = record["summary"]
    assert summary["steps"] == 600 and len(record["windows"]) == 6
    assert summary["rss_growth_mib_after_warmup"] < 20, record["windows"]
    assert summary["checkpoints_left"] == ["checkpoint-500", "checkpoint-600"]
