#!/usr/bin/env python
# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
Few-shot transfer of a pretrained SupMAE over a suite of datasets, with ELEVATER's protocol
(supmae.tasks.transfer):

    python run_transfer.py --suite suites/elevater.yaml --model_name_or_path PRETRAINED --mode linprobe \\
        --shots 5,20,50 --seeds 0,1,2 --output_dir runs/elevater-linprobe --per_device_train_batch_size 64

Writes a JSON record per (dataset, shots, seed) as soon as it exists (rerun the same command to resume a killed
suite), then summary.json, summary.md (mean +- std over seeds, the average over datasets) and scores.png. Every
run_classification.py training option works too (`--help`).
"""

import sys

from supmae.cli import run_script
from supmae.tasks import transfer


def main(argv: list[str] | None = None) -> dict:
    return transfer.main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    run_script(main)
