"""A run's parallelism is what its command says (issue 22): launched as several processes, the Trainer must see them
all; --fsdp and --deepspeed are refused where the back end cannot honour them (a CPU), never replaced by DDP; and the
README's FSDP flags are the form Transformers takes without a deprecation warning."""

import importlib.util
import json
import logging
import os
import subprocess
import sys

import pytest
from transformers import HfArgumentParser, TrainingArguments

from supmae.tasks import classification, pretraining, segmentation, transfer


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FSDP_CONFIG = os.path.join(ROOT, "examples", "fsdp_config.json")


@pytest.mark.slow
def test_torchrun_without_a_process_group_is_refused_before_anything_is_written(tmp_path):
    """torchrun on a machine without GPUs, without --use_cpu true: Transformers sets up no process group."""
    output = tmp_path / "out"
    script = os.path.join(ROOT, "run_pretraining.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script]
    command += f"--dataset_name digits --output_dir {output} --max_steps 1 --report_to none".split()
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, result.stderr[-3000:]  # one paragraph from each process
    assert all("launched as one of 2 (WORLD_SIZE=2)" in line and "--use_cpu true" in line for line in errors)
    # torchrun's own report of the failed children is a traceback of its own code; none comes from ours.
    assert "supmae" not in "".join(line for line in result.stderr.splitlines() if line.strip().startswith("File "))
    assert not output.exists()


@pytest.mark.parametrize("task", [pretraining, classification, segmentation])
def test_every_task_checks_its_launch(task, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"launched as one of 2 \(WORLD_SIZE=2\), but the Trainer set up no process"):
        task.main(["--output_dir", str(tmp_path / "out"), "--model_name_or_path", "m"])
    assert not (tmp_path / "out").exists()


def test_transfer_checks_its_launch(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"launched as one of 2"):
        transfer.main(["--output_dir", str(tmp_path / "out"), "--suite", "s.yaml", "--model_name_or_path", "m"])


@pytest.mark.parametrize(
    "flags",
    [["--fsdp", "--fsdp_config", FSDP_CONFIG], ["--deepspeed", '{"train_micro_batch_size_per_gpu": 2}']],
    ids=["fsdp", "deepspeed"],
)
def test_fsdp_and_deepspeed_are_refused_on_a_cpu(tmp_path, flags):
    if flags[0] == "--deepspeed" and importlib.util.find_spec("deepspeed") is None:
        message = "--deepspeed needs the deepspeed package"
    else:
        message = rf"{flags[0]} runs on GPUs only .* the Trainer would quietly train with plain DDP instead"
    with pytest.raises(ValueError, match=message):
        pretraining.parse(["--output_dir", str(tmp_path), "--use_cpu", "true", *flags])


def test_the_readme_fsdp_flags_parse_without_a_deprecation(caplog):
    """`--fsdp` (no value) with a config file: the form Transformers 5.24 takes quietly (a string such as
    "full_shard auto_wrap" logs a deprecation; `--fsdp true` is refused). FSDP2, SupMAELayer as the wrap unit."""
    with open(FSDP_CONFIG) as file:
        config = json.load(file)
    assert config["version"] == 2 and config["transformer_layer_cls_to_wrap"] == ["SupMAELayer"]
    parser = HfArgumentParser(TrainingArguments)
    with caplog.at_level(logging.WARNING):
        (args,) = parser.parse_args_into_dataclasses(["--output_dir", "x", "--fsdp", "--fsdp_config", FSDP_CONFIG])
    assert args.fsdp is True and args.fsdp_config["transformer_layer_cls_to_wrap"] == ["SupMAELayer"]
    assert not [record for record in caplog.records if "deprecated" in record.getMessage()]
    with caplog.at_level(logging.WARNING):
        parser.parse_args_into_dataclasses(["--output_dir", "x", "--fsdp", "full_shard auto_wrap"])
    assert any("deprecated" in record.getMessage() for record in caplog.records)  # the check can see one
    readme = open(os.path.join(ROOT, "README.md")).read() + open(os.path.join(ROOT, "docs", "PRETRAINING.md")).read()
    assert "--fsdp --fsdp_config examples/fsdp_config.json" in readme


def test_the_json_arguments_file_takes_a_bare_fsdp_flag(tmp_path):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"output_dir": str(tmp_path), "fsdp": True, "fsdp_config": FSDP_CONFIG}))
    with pytest.raises(ValueError, match=r"--fsdp runs on GPUs only"):  # parsed as `--fsdp`, then refused here
        pretraining.parse([str(path)])
