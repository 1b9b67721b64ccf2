#!/usr/bin/env python
# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
SupMAE pretraining with the Hugging Face Trainer (supmae.tasks.pretraining).

    python run_pretraining.py                       # the offline demo: a tiny SupMAE on scikit-learn's digits
    python run_pretraining.py --dataset_name ILSVRC/imagenet-1k --streaming true --max_steps 125000 ...
    torchrun --nproc_per_node 8 run_pretraining.py ...        # or: accelerate launch run_pretraining.py ...
    python run_pretraining.py args.json                        # all arguments from a JSON file

Every TrainingArguments option works (`python run_pretraining.py --help`); the defaults are the official recipe.
"""

import sys

from supmae.cli import run_script
from supmae.tasks import pretraining


# `python run_pretraining.py` with no arguments: a tiny SupMAE on the built-in digits, a few minutes on 2 CPU cores.
DEMO_ARGUMENTS = [
    "--dataset_name", "digits",
    "--output_dir", "outputs/digits-pretrained",
    "--config_overrides", "image_size=32,patch_size=4,hidden_size=96,num_hidden_layers=4,num_attention_heads=4,"
    "intermediate_size=384,decoder_hidden_size=64,decoder_num_attention_heads=4,decoder_intermediate_size=256,"
    "supervised_head_hidden_size=256",
    "--per_device_train_batch_size", "64",
    "--num_train_epochs", "40",
    "--base_learning_rate", "2e-3",
    "--eval_strategy", "epoch",
    "--logging_steps", "20",
    "--save_strategy", "epoch",
    "--save_total_limit", "1",
    "--seed", "0",
    "--dataloader_num_workers", "0",  # 8x8 images: decoding them in the training process is cheapest
]  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    return pretraining.main(sys.argv[1:] if argv is None else argv, demo=DEMO_ARGUMENTS)


if __name__ == "__main__":
    run_script(main)
