#!/usr/bin/env python
# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
Image classification with a pretrained SupMAE: fine-tuning, linear probing and evaluation, on the Hugging Face Trainer.

    python run_classification.py        # the demo: fine-tune outputs/digits-pretrained on the digits (run_pretraining.py first)
    python run_classification.py --mode finetune --model_name_or_path PRETRAINED --dataset_name ILSVRC/imagenet-1k ...
    python run_classification.py --mode linprobe --model_name_or_path PRETRAINED --cache_features true ...
    python run_classification.py --mode eval --model_name_or_path FINETUNED \\
        --eval_datasets "imagenet-r=axiong/imagenet-r,split=test,subset=imagenet-r,labels_in_subset=true"

Each mode's defaults are MAE's recipe for it (SUPMAE_SPEC.md); any flag you pass wins. Every TrainingArguments option
works too (`--help`).
"""

import os
import sys

import transformers

from supmae.arguments import command_of, configure_logging, demo_arguments, prepare_data, run_script
from supmae.classification import (
    check_classification_arguments,
    logger,
    parse_classification_arguments,
    run,
    run_few_shot,
)
from supmae.data import DIGITS


PRETRAINED_DEMO = "outputs/digits-pretrained"
# `python run_classification.py` with no arguments: fine-tune the pretraining demo's checkpoint on the digits.
DEMO_ARGUMENTS = [
    "--model_name_or_path", PRETRAINED_DEMO,
    "--dataset_name", DIGITS,
    "--output_dir", "outputs/digits-finetuned",
    "--eval_datasets", f"test={DIGITS},split=test",
    "--per_device_train_batch_size", "64",
    "--num_train_epochs", "30",
    "--base_learning_rate", "4e-3",
    "--layer_decay", "0.75",
    # MAE's ImageNet augmentation (RandAugment m9, mixup, cutmix, erasing) destroys 8x8 digits: lighter here.
    "--auto_augment", "none", "--mixup", "0", "--cutmix", "0", "--reprob", "0", "--min_crop_scale", "0.5",
    "--eval_strategy", "epoch",
    "--save_strategy", "no",
    "--logging_steps", "20",
    "--seed", "0",
    "--dataloader_num_workers", "0",  # 8x8 images: decoding them in the training process is cheapest
]  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    demo = not argv
    if demo and not os.path.isdir(PRETRAINED_DEMO):
        raise FileNotFoundError(
            f"The demo fine-tunes {PRETRAINED_DEMO}: run `python run_pretraining.py` first (`make demo` runs both)."
        )
    argv = demo_arguments(DEMO_ARGUMENTS) if demo else argv
    model_args, data_args, args = parse_classification_arguments(argv)
    configure_logging(args, logger)
    check_classification_arguments(model_args, data_args, args)
    transformers.set_seed(args.seed)
    has_data = data_args.dataset_name is not None or data_args.train_dir is not None
    data = prepare_data(data_args, args.seed) if has_data or args.mode != "eval" else None
    if args.mode != "eval" and data.label_column is None:
        raise ValueError(f"No label column in the training data (columns: {data.train.column_names}).")

    command = command_of(argv)
    if args.few_shot is None:
        reports = run(model_args, data_args, args, data, command=command)
    else:
        reports = run_few_shot(model_args, data_args, args, data, command=command)
    for name, metrics in reports.items():
        top1 = metrics["top1"]["mean"] if isinstance(metrics["top1"], dict) else metrics["top1"]
        spread = f" +- {metrics['top1']['std']:.4f}" if isinstance(metrics["top1"], dict) else ""
        print(f"{name}: top-1 {top1:.4f}{spread}")
    print(f"Written to {os.path.abspath(args.output_dir)}")
    return reports


if __name__ == "__main__":
    run_script(main)
