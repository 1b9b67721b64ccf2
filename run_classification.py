#!/usr/bin/env python
# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
Image classification with a pretrained SupMAE: fine-tuning, linear probing and evaluation, on the Hugging Face Trainer
(supmae.tasks.classification).

    python run_classification.py        # the demo: fine-tune outputs/digits-pretrained (run_pretraining.py first)
    python run_classification.py --mode finetune --model_name_or_path PRETRAINED --dataset_name ILSVRC/imagenet-1k ...
    python run_classification.py --mode linprobe --model_name_or_path PRETRAINED --cache_features true ...
    python run_classification.py --mode eval --model_name_or_path FINETUNED \\
        --eval_datasets "imagenet-r=axiong/imagenet-r,split=test,subset=imagenet-r,labels_in_subset=true"

Each mode's defaults are MAE's recipe for it; any flag you pass wins. Every TrainingArguments option works (`--help`).
"""

import os
import sys

from supmae.cli import run_script
from supmae.tasks import classification


PRETRAINED_DEMO = "outputs/digits-pretrained"
# `python run_classification.py` with no arguments: fine-tune the pretraining demo's checkpoint on the digits.
DEMO_ARGUMENTS = [
    "--model_name_or_path", PRETRAINED_DEMO,
    "--dataset_name", "digits",
    "--output_dir", "outputs/digits-finetuned",
    "--eval_datasets", "test=digits,split=test",
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
    if not argv and not os.path.isdir(PRETRAINED_DEMO):
        raise FileNotFoundError(f"The demo fine-tunes {PRETRAINED_DEMO}: run `python run_pretraining.py` first.")
    return classification.main(argv, demo=DEMO_ARGUMENTS)


if __name__ == "__main__":
    run_script(main)
