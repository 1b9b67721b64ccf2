#!/usr/bin/env python
# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
FSDP on one GPU through the README's command: run_pretraining.py under torchrun with `--fsdp --fsdp_config
examples/fsdp_config.json` (FSDP2, SupMAELayer as the wrap unit, sharded checkpoints). World size 1 still exercises
the wrapping, the sharded checkpoint and the resume:

1. an uninterrupted run of `--max_steps` steps, a checkpoint every `--save_steps`;
2. the same command into another folder, killed (SIGKILL-like `os._exit`) once its second checkpoint is complete;
3. that command again: it must resume from the second checkpoint and finish;
4. the record: whether the Trainer wrapped the model in FSDP, the checkpoint's files, the step resumed from, and the
   largest difference between the two runs' final weights.

    python benchmarks/fsdp_check.py --device cuda --output results.json
    python benchmarks/fsdp_check.py --device cpu --tiny --output results.json   # smoke test: plain DDP, no --fsdp

On a CPU `--fsdp` is refused (accelerate runs FSDP on accelerators only), so the smoke test runs the same sequence
without it and records `"fsdp": false` with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from common import TINY, append_json, machine_info
from safetensors.torch import load_file


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILLED = 9


def child(argv: list[str]) -> None:
    """Under torchrun: run_pretraining's task, recording whether FSDP wrapped the model and, with `--kill_after N`,
    dying once checkpoint N is complete."""
    from supmae.cli import run_script
    from supmae.tasks import pretraining
    from supmae.training import trainer as trainer_module

    kill_after, record, argv = int(argv[0]), argv[1], argv[2:]
    original_mark = trainer_module.mark_checkpoint_complete

    def mark(checkpoint, step):
        original_mark(checkpoint, step)
        if kill_after and step >= kill_after:
            os._exit(KILLED)

    original_train = pretraining.SupMAETrainer.train

    def train(self, *args, **kwargs):
        with open(record, "w") as file:
            json.dump({"fsdp_enabled": bool(self.is_fsdp_enabled), "model": type(self.model_wrapped).__name__}, file)
        return original_train(self, *args, **kwargs)

    trainer_module.mark_checkpoint_complete = mark
    pretraining.SupMAETrainer.train = train
    run_script(pretraining.main, argv)


def launch(args, output_dir: str, kill_after: int, record: str) -> subprocess.CompletedProcess:
    config = TINY if args.tiny else {"image_size": 224, "patch_size": 16, "num_labels": 10}
    overrides = ",".join(f"{k}={v}" for k, v in config.items() if k != "num_labels")
    script_args = ["--dataset_name", "digits", "--output_dir", output_dir, "--config_overrides", overrides]
    script_args += f"--per_device_train_batch_size {args.batch_size} --max_steps {args.max_steps} --seed 0".split()
    script_args += f"--save_steps {args.save_steps} --eval_strategy no --report_to none --num_figure_images 0".split()
    script_args += ["--dataloader_num_workers", "2"]
    if args.device == "cuda":
        script_args += [
            "--bf16",
            "true",
            "--fsdp",
            "--fsdp_config",
            os.path.join(ROOT, "examples", "fsdp_config.json"),
        ]
    else:
        script_args += ["--use_cpu", "true"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    command += [os.path.abspath(__file__), "--child", str(kill_after), record, *script_args]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="A tiny model (smoke tests); default ViT-B/16 224 px.")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_steps", type=int, default=12)
    parser.add_argument("--save_steps", type=int, default=4)
    parser.add_argument("--work_dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "supmae-fsdp-check"))
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    whole, killed = (os.path.join(args.work_dir, name) for name in ("whole", "killed"))
    records = {name: os.path.join(args.work_dir, f"{name}.json") for name in ("whole", "killed", "resumed")}
    start = time.time()
    runs = {
        "whole": launch(args, whole, 0, records["whole"]),
        "killed": launch(args, killed, 2 * args.save_steps, records["killed"]),
        "resumed": launch(args, killed, 0, records["resumed"]),
    }
    result = {"returncodes": {name: run.returncode for name, run in runs.items()}}
    # torchrun exits 1 when its child does; the child's own status (KILLED) is in torchrun's report.
    killed_as_planned = runs["killed"].returncode != 0 and f"exitcode  : {KILLED}" in runs["killed"].stderr
    problems = [name for name in ("whole", "resumed") if runs[name].returncode != 0]
    problems += [] if killed_as_planned else ["killed"]
    if not problems:
        wrapped = json.load(open(records["whole"]))
        checkpoint = os.path.join(whole, f"checkpoint-{args.save_steps}")
        output = runs["resumed"].stdout.splitlines() + runs["resumed"].stderr.splitlines()
        resumed_from = [line for line in output if "Resuming from" in line]
        a, b = (
            load_file(os.path.join(whole, "model.safetensors")),
            load_file(os.path.join(killed, "model.safetensors")),
        )
        result.update(
            fsdp=args.device == "cuda",
            reason=None if args.device == "cuda" else "no GPU: --fsdp is refused on CPUs, plain DDP ran instead",
            fsdp_enabled=wrapped["fsdp_enabled"],
            wrapped_model=wrapped["model"],
            checkpoint_files=sorted(os.listdir(checkpoint)),
            resumed_from=resumed_from[-1].split("Resuming from", 1)[1].strip(": ") if resumed_from else None,
            max_weight_difference=max(float((a[k].float() - b[k].float()).abs().max()) for k in a),
            same_keys=a.keys() == b.keys(),
        )
        problems += [] if result["resumed_from"] else ["the rerun did not resume"]
    result["problems"] = problems
    result["seconds"] = round(time.time() - start, 1)
    record = {"benchmark": "fsdp_check", "machine": machine_info(args.device), "args": vars(args), "result": result}
    append_json(args.output, record)
    print(json.dumps(result, indent=1))
    for name in problems:
        if name in runs:
            print(f"--- {name} (exit {runs[name].returncode}):\n{runs[name].stderr[-3000:]}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
