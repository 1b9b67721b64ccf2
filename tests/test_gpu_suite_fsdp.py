"""The GPU suite's FSDP part (`SUITE=fsdp bash benchmarks/run_gpu.sh`, issue 22) run on the CPU as its own smoke
test: the same train / kill / resume sequence through torchrun, without --fsdp (which CPUs refuse), recorded as such."""

import json
import os
import subprocess

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_the_fsdp_part_trains_saves_is_killed_and_resumes_on_a_cpu(tmp_path):
    out = tmp_path / "fsdp.json"
    smoke = {
        "SUPMAE_BENCH_SMOKE": "1",
        "SUITE": "fsdp",
        "TOTAL_BUDGET": "900",
        "FSDP_BUDGET": "880",
        "OMP_NUM_THREADS": "1",
    }
    environment = {**os.environ, **smoke, "TMPDIR": str(tmp_path), "PYTHONPATH": ROOT}
    command = ["bash", os.path.join(ROOT, "benchmarks", "run_gpu.sh"), str(out)]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "did not finish" not in done.stdout and "failed (exit status" not in done.stdout, done.stdout[-3000:]
    (record,) = json.loads(out.read_text())
    result = record["result"]
    assert result["problems"] == [] and result["fsdp"] is False and "refused on CPUs" in result["reason"]
    assert result["resumed_from"].endswith("checkpoint-2") and result["same_keys"]
    assert result["max_weight_difference"] == 0.0  # CPU, map-style data: the resumed run is bit-identical
    assert "FSDP check (" in done.stdout and "killed and resumed from checkpoint-2" in done.stdout
