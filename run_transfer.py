#!/usr/bin/env python
# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
Few-shot transfer of a pretrained SupMAE over a suite of datasets, with ELEVATER's protocol (supmae/transfer.py):

    python run_transfer.py --suite suites/elevater.yaml --model_name_or_path PRETRAINED --mode linprobe \\
        --shots 5,20,50 --seeds 0,1,2 --output_dir runs/elevater-linprobe --per_device_train_batch_size 64

Writes a JSON record per (dataset, shots, seed) as soon as it exists (rerun the same command to resume a killed
suite), then summary.json, summary.md (mean +- std over seeds, the average over datasets) and scores.png. Every
run_classification.py training option works too (`--help`).
"""

import sys

from supmae.arguments import configure_logging, given_names, run_script
from supmae.classification import parse_classification_arguments
from supmae.transfer import TransferArguments, check_transfer_arguments, load_suite, logger, run_suite


DESCRIPTION = """Few-shot transfer of a pretrained SupMAE over a suite of datasets, with ELEVATER's protocol: K images
per class drawn by each seed, 20% of them held out to pick the learning rate and weight decay from the suite's grid,
then training on all K with the choice and scoring the test split with each dataset's metric. Every
run_classification.py option works too, but those the grid owns."""


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    transfer_args, model_args, data_args, args = parse_classification_arguments(
        argv, "run_transfer.py", DESCRIPTION, before=(TransferArguments,), first=("suite", "shots", "seeds")
    )
    configure_logging(args, logger)
    shots, seeds = check_transfer_arguments(transfer_args, model_args, data_args, args, given_names(argv))
    suite = load_suite(transfer_args.suite)
    summary = run_suite(suite, model_args, args, shots, seeds, data_args.cache_dir, data_args.bad_images)
    print(f"Written to {args.output_dir}: results/, summary.json, summary.md, scores.png")
    return summary


if __name__ == "__main__":
    run_script(main)
