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

from transformers import HfArgumentParser

from supmae.arguments import DataArguments, configure_logging
from supmae.classification import ClassificationArguments, ModelArguments, parse_classification_arguments
from supmae.transfer import TransferArguments, check_transfer_arguments, load_suite, logger, run_suite


def parse(argv: list[str]):
    if {"-h", "--help"} & set(argv):
        HfArgumentParser((TransferArguments, ModelArguments, DataArguments, ClassificationArguments)).print_help()
        sys.exit(0)
    transfer_args, rest = HfArgumentParser(TransferArguments).parse_args_into_dataclasses(
        argv, return_remaining_strings=True
    )
    return (transfer_args, *parse_classification_arguments(rest))


def main(argv: list[str] | None = None) -> dict:
    transfer_args, model_args, data_args, args = parse(sys.argv[1:] if argv is None else argv)
    configure_logging(args, logger)
    shots, seeds = check_transfer_arguments(transfer_args, model_args, data_args, args)
    suite = load_suite(transfer_args.suite)
    summary = run_suite(suite, model_args, args, shots, seeds, data_args.cache_dir, data_args.bad_images)
    print(f"Written to {args.output_dir}: results/, summary.json, summary.md, scores.png")
    return summary


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as error:  # a mistake in the command or the suite: one paragraph
        sys.exit(f"run_transfer.py: {error}")
