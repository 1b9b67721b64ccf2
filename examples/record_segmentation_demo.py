#!/usr/bin/env python
# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
The segmentation demo's scores, recorded: docs/records/segmentation-demo.json, the record behind the table of
docs/SEGMENTATION.md (tests/test_docs.py compares the two).

    python run_pretraining.py                        # the pretraining demo: outputs/digits-pretrained, first
    python examples/record_segmentation_demo.py [--output docs/records/segmentation-demo.json]

Runs `run_segmentation.py --demo` from the pretraining demo's checkpoint, the same with random weights
(`--random_init true`), and, with `--ablation`, both with the recipe's head dropout (which the demo turns off) and the
pretrained run without the backbone's relative position bias and layer scale (both, then each alone); each in a fresh
directory under --work_dir. Also scores predicting the background everywhere.
The record holds each run's validation mIoU, mAcc, aAcc and wall time, with the command, date, machine (and its load
average, since the machine may be shared) and versions.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import time

import numpy as np
import torch
import transformers


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import run_segmentation  # noqa: E402
from supmae.data.segmentation import DIGITS_SEGMENTATION_CLASSES, digits_segmentation_datasets  # noqa: E402
from supmae.metrics import segmentation_metrics  # noqa: E402


QUIET = ["--disable_tqdm", "true", "--report_to", "none"]
RUNS = {
    "pretrained": [],
    "random_init": ["--random_init", "true"],
}
# The demo turns the heads' dropout off; with it (the recipe's 0.1), from the checkpoint and from random weights. Then
# the demo without the backbone's relative position bias and layer scale: both, then each alone.
ABLATION = {
    "pretrained_with_head_dropout": ["--classifier_dropout", "0.1"],
    "random_init_with_head_dropout": ["--random_init", "true", "--classifier_dropout", "0.1"],
    "pretrained_plain_backbone": ["--relative_position_bias", "false", "--layer_scale_init_value", "0"],
    "pretrained_without_relative_position_bias": ["--relative_position_bias", "false"],
    "pretrained_without_layer_scale": ["--layer_scale_init_value", "0"],
}
SCORES = ("mean_iou", "mean_accuracy", "overall_accuracy")


def machine() -> dict:
    with open("/proc/cpuinfo") as cpuinfo:
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    return {
        "cpu": cpu or platform.processor(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_before": os.getloadavg()[0],
    }


def background_everywhere() -> dict:
    """The scores of predicting class 0 (the background) for every pixel of the demo's validation canvases."""
    references = [np.asarray(example["annotation"]) for example in digits_segmentation_datasets()["validation"]]
    predictions = [np.zeros_like(reference) for reference in references]
    metrics = segmentation_metrics(predictions, references, num_labels=len(DIGITS_SEGMENTATION_CLASSES))
    return {key: metrics[key] for key in SCORES}


def demo_run(name: str, flags: list[str], work_dir: str) -> dict:
    output_dir = os.path.join(work_dir, name)
    shutil.rmtree(output_dir, ignore_errors=True)  # a finished run would be reported, not run again
    argv = ["--demo", *flags, "--output_dir", output_dir, *QUIET]
    start = time.perf_counter()
    metrics = run_segmentation.main(argv)
    wall = time.perf_counter() - start
    return {
        "command": "python run_segmentation.py " + " ".join(argv),
        **{key: metrics[f"eval_{key}"] for key in SCORES},
        "per_category_iou": metrics["eval_per_category_iou"],
        "wall_s": round(wall, 1),
        "load_average_1min_after": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=os.path.join(ROOT, "docs", "records", "segmentation-demo.json"))
    parser.add_argument("--work_dir", default="outputs/record-segmentation-demo", help="Where the runs go.")
    parser.add_argument(
        "--ablation", action="store_true", help="Also the runs with head dropout, without bias or layer scale."
    )
    parser.add_argument("--note", default="", help="Said in the record (e.g. what else ran on the machine).")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(run_segmentation.PRETRAINED_DEMO, "model.safetensors")):
        raise SystemExit(f"error: no {run_segmentation.PRETRAINED_DEMO}: run `python run_pretraining.py` first.")
    with open(os.path.join(run_segmentation.PRETRAINED_DEMO, "run_complete.json")) as file:
        pretraining = json.load(file)["command"]
    record = {
        "command": "python examples/record_segmentation_demo.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "note": args.note,
        "pretrained_checkpoint": {"path": run_segmentation.PRETRAINED_DEMO, "command": pretraining},
        "runs": {},
    }
    for name, flags in {**RUNS, **(ABLATION if args.ablation else {})}.items():
        record["runs"][name] = demo_run(name, flags, args.work_dir)
    record["runs"]["background_everywhere"] = background_everywhere()
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as file:
        json.dump(record, file, indent=2)
        file.write("\n")
    for name, run in record["runs"].items():
        print(f"{name}: " + ", ".join(f"{key} {run[key]:.3f}" for key in SCORES))
    print(f"Written to {args.output}")
    return record


if __name__ == "__main__":
    main()
