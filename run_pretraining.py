#!/usr/bin/env python
# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
SupMAE pretraining with the Hugging Face Trainer.

    python run_pretraining.py                       # the offline demo: a tiny SupMAE on scikit-learn's digits
    python run_pretraining.py --dataset_name ILSVRC/imagenet-1k --streaming --max_steps 125000 ...
    torchrun --nproc_per_node 8 run_pretraining.py ...        # or: accelerate launch run_pretraining.py ...
    python run_pretraining.py args.json                        # all arguments from a JSON file

Every TrainingArguments option works (`python run_pretraining.py --help`). The defaults are the official SupMAE
recipe: lr = base_lr x effective batch / 256, AdamW (0.9, 0.95), weight decay 0.05 (none on biases and norms),
per-step warmup then cosine, RandomResizedCrop(0.2-1) + flip, mask ratio 0.75, normalized-pixel loss.
"""

import importlib.util
import json
import logging
import os
import sys
from dataclasses import dataclass, field

import torch
import transformers
from transformers import HfArgumentParser, TrainingArguments

from supmae import SupMAEConfig, SupMAEForPreTraining
from supmae.configuration_supmae import SUPMAE_PRESETS
from supmae.data import (
    DIGITS,
    EvalTransform,
    ImageCollator,
    PretrainingTransform,
    TransformedImageDataset,
    class_names,
    eval_image_processor,
    find_image_column,
    find_label_column,
    load_image_datasets,
    transform_streaming_dataset,
)
from supmae.model_card import pretraining_model_card
from supmae.training import (
    SupMAETrainer,
    convert_to_sync_batch_norm,
    last_complete_checkpoint,
    parameters_digest,
    scaled_learning_rate,
)
from supmae.visualization import reconstruction_figure


logger = logging.getLogger("run_pretraining")

# `python run_pretraining.py` with no arguments: a tiny SupMAE on the built-in digits, a few minutes on 2 CPU cores.
DEMO_ARGUMENTS = [
    "--dataset_name", DIGITS,
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
]  # fmt: skip


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue pretraining from this checkpoint (a local directory or Hub name)."}
    )
    config_name: str | None = field(
        default=None,
        metadata={
            "help": f"A preset ({', '.join(SUPMAE_PRESETS)}) or a config file/directory. Default: "
            "vit-base-patch16, the released SupMAE."
        },
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": 'Config fields to override, e.g. "hidden_size=64,num_hidden_layers=2".'}
    )
    mask_ratio: float | None = field(default=None, metadata={"help": "Fraction of patches removed (default 0.75)."})
    norm_pix_loss: bool | None = field(default=None, metadata={"help": "Reconstruct per-patch normalized pixels."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache downloaded models and datasets."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow Hub code for the model or dataset."})


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={"help": f"A Hub dataset, a local dataset directory, or '{DIGITS}' (built in, no download)."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    train_dir: str | None = field(default=None, metadata={"help": "An image folder for training (class subfolders)."})
    validation_dir: str | None = field(default=None, metadata={"help": "An image folder for validation."})
    image_column_name: str | None = field(default=None, metadata={"help": "Image column (default: detected)."})
    label_column_name: str | None = field(
        default=None, metadata={"help": "Label column (default: detected); 'none' trains without labels (MAE)."}
    )
    train_val_split: float = field(
        default=0.05, metadata={"help": "Fraction of train held out for validation when there is no validation split."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only this many training images."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only this many validation images."})
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset (requires --max_steps)."})
    shuffle_buffer_size: int = field(default=10_000, metadata={"help": "Shuffle buffer when streaming."})
    num_figure_images: int = field(default=8, metadata={"help": "Validation images in the reconstruction figure."})


@dataclass
class PretrainingArguments(TrainingArguments):
    """TrainingArguments with the official SupMAE recipe as defaults."""

    base_learning_rate: float = field(
        default=1.5e-4, metadata={"help": "Learning rate for an effective batch of 256; lr = base_lr x batch / 256."}
    )
    sync_batch_norm: bool = field(
        default=False, metadata={"help": "Share the supervised head's BatchNorm statistics across GPUs."}
    )
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (none on biases and norms)."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2 (MAE: 0.95)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Warmup then half-cycle cosine to 0."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warmup steps, or a fraction of all (20/400 epochs)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: the script selects columns."})
    dataloader_drop_last: bool = field(
        default=True, metadata={"help": "Drop the last incomplete batch (MAE does; a batch of one breaks BatchNorm)."}
    )
    report_to: None | str | list[str] = field(
        default="tensorboard" if importlib.util.find_spec("tensorboard") else "none",
        metadata={"help": "Where to report logs (default: TensorBoard when installed)."},
    )


def parse_arguments(argv: list[str]):
    parser = HfArgumentParser((ModelArguments, DataArguments, PretrainingArguments))
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


def build_config(model_args: ModelArguments) -> SupMAEConfig:
    if model_args.model_name_or_path:
        config = SupMAEConfig.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
    elif model_args.config_name in SUPMAE_PRESETS or model_args.config_name is None:
        config = SupMAEConfig.from_preset(model_args.config_name or "vit-base-patch16")
    elif os.path.exists(model_args.config_name):
        config = SupMAEConfig.from_pretrained(model_args.config_name)
    else:
        raise ValueError(
            f"--config_name {model_args.config_name!r} is neither a preset ({', '.join(SUPMAE_PRESETS)}) "
            "nor an existing config file or directory."
        )
    if model_args.config_overrides:
        config.update_from_string(model_args.config_overrides)
    for name in ("mask_ratio", "norm_pix_loss"):
        if getattr(model_args, name) is not None:
            setattr(config, name, getattr(model_args, name))
    return SupMAEConfig.from_dict(config.to_dict())  # validates the overridden values


def check_output_dir(training_args: PretrainingArguments) -> str | None:
    """The checkpoint to resume from; refuses to write over a finished run."""
    resume = training_args.resume_from_checkpoint
    if resume is None and os.path.isdir(training_args.output_dir):
        resume = last_complete_checkpoint(training_args.output_dir)
        if resume is None and os.path.isfile(os.path.join(training_args.output_dir, "model.safetensors")):
            raise FileExistsError(
                f"{training_args.output_dir} already holds a finished run (model.safetensors); choose another "
                "--output_dir or remove it."
            )
        if resume is not None:
            logger.info(f"Resuming from the last checkpoint in the output directory: {resume}")
    return resume


def main(argv: list[str] | None = None) -> dict[str, float]:
    argv = sys.argv[1:] if argv is None else argv
    demo = not argv
    model_args, data_args, training_args = parse_arguments(DEMO_ARGUMENTS if demo else argv)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO,
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    logger.setLevel(logging.INFO if training_args.should_log else logging.WARNING)
    if demo:
        logger.info("No arguments: the offline demo on scikit-learn's digits. Arguments: " + " ".join(DEMO_ARGUMENTS))
    if data_args.streaming and training_args.max_steps <= 0:
        raise ValueError("--streaming needs --max_steps: a streamed dataset has no length to count epochs in.")
    resume_from_checkpoint = check_output_dir(training_args)
    transformers.set_seed(training_args.seed)

    # Data
    splits = load_image_datasets(
        data_args.dataset_name,
        data_args.dataset_config_name,
        data_args.train_dir,
        data_args.validation_dir,
        streaming=data_args.streaming,
        cache_dir=model_args.cache_dir,
        trust_remote_code=model_args.trust_remote_code,
    )
    train_split = splits["train"]
    image_column = find_image_column(train_split, data_args.image_column_name)
    label_column = find_label_column(train_split, data_args.label_column_name)
    eval_split = splits.get("validation")
    if eval_split is None and not data_args.streaming and data_args.train_val_split > 0:
        held_out = train_split.train_test_split(data_args.train_val_split, seed=training_args.seed)
        train_split, eval_split = held_out["train"], held_out["test"]
    if data_args.max_train_samples is not None:
        train_split = (
            train_split.take(data_args.max_train_samples)
            if data_args.streaming
            else train_split.select(range(min(data_args.max_train_samples, len(train_split))))
        )
    if eval_split is not None and data_args.max_eval_samples is not None:
        eval_split = (
            eval_split.take(data_args.max_eval_samples)
            if data_args.streaming
            else eval_split.select(range(min(data_args.max_eval_samples, len(eval_split))))
        )
    names = class_names(train_split, label_column)

    # Model
    config = build_config(model_args)
    if names is not None and not model_args.model_name_or_path:
        config.num_labels = len(names)
        config.id2label = dict(enumerate(names))
        config.label2id = {name: i for i, name in enumerate(names)}
    if model_args.model_name_or_path:
        model = SupMAEForPreTraining.from_pretrained(
            model_args.model_name_or_path, config=config, cache_dir=model_args.cache_dir
        )
    else:
        model = SupMAEForPreTraining(config)
    if label_column is None:
        logger.info("No label column: training without labels, i.e. plain MAE (the supervised head is not trained).")
    elif training_args.gradient_accumulation_steps > 1:
        logger.warning(
            "Gradient accumulation is not a larger batch for the supervised head: its BatchNorm sees each "
            "micro-batch on its own."
        )
    if training_args.sync_batch_norm and training_args.world_size > 1:
        if not torch.cuda.is_available():
            raise ValueError("--sync_batch_norm needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only).")
        model = convert_to_sync_batch_norm(model)

    image_size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    image_processor = eval_image_processor(image_size)
    train_transform = PretrainingTransform(image_size)
    if data_args.streaming:
        train_split = train_split.shuffle(seed=training_args.seed, buffer_size=data_args.shuffle_buffer_size)
        train_dataset = transform_streaming_dataset(train_split, image_column, label_column, train_transform)
        eval_dataset = eval_split and transform_streaming_dataset(
            eval_split, image_column, label_column, EvalTransform(image_processor)
        )
    else:
        train_dataset = TransformedImageDataset(
            train_split, image_column, label_column, train_transform, seed=training_args.seed
        )
        eval_dataset = eval_split and TransformedImageDataset(
            eval_split, image_column, label_column, EvalTransform(image_processor)
        )
    if eval_dataset is None and training_args.eval_strategy != "no":
        logger.warning("No validation data: evaluation is turned off.")
        training_args.eval_strategy = "no"

    effective_batch = (
        training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * training_args.world_size
    )
    training_args.learning_rate = scaled_learning_rate(training_args.base_learning_rate, effective_batch)
    logger.info(
        f"Effective batch {effective_batch}: lr = {training_args.base_learning_rate:g} x "
        f"{effective_batch} / 256 = {training_args.learning_rate:g}"
    )

    trainer = SupMAETrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=ImageCollator(config.num_labels if label_column else None),
        processing_class=image_processor,
        eval_seed=training_args.seed,
    )
    train_result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    metrics = trainer.evaluate() if eval_dataset is not None else {}
    if metrics:
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    check_replicas_identical(trainer)

    if trainer.is_world_process_zero():
        figure = None
        source = eval_split if eval_split is not None else train_split
        images = [
            example[image_column] for _, example in zip(range(data_args.num_figure_images), source, strict=False)
        ]
        if images:
            figure = "reconstructions.png"
            model = trainer.accelerator.unwrap_model(trainer.model)
            reconstruction_figure(
                model,
                images,
                image_processor,
                seed=training_args.seed,
                path=os.path.join(training_args.output_dir, figure),
            )
        card = pretraining_model_card(
            config,
            dataset=data_args.dataset_name or data_args.train_dir,
            metrics={
                k.removeprefix("eval_"): v for k, v in metrics.items() if not k.endswith(("_runtime", "_per_second"))
            },
            training={
                "labels": label_column is not None,
                "effective batch": effective_batch,
                "learning rate": training_args.learning_rate,
                "steps": trainer.state.global_step,
                "epochs": round(trainer.state.epoch or 0, 2),
                "seed": training_args.seed,
            },
            figure=figure,
            base_model=model_args.model_name_or_path,
            command=["python", "run_pretraining.py", *(DEMO_ARGUMENTS if demo else argv)],
        )
        with open(os.path.join(training_args.output_dir, "README.md"), "w") as file:
            file.write(card)
        print(f"\nPretrained SupMAE written to {os.path.abspath(training_args.output_dir)}")
        if figure:
            print(f"Reconstruction figure: {os.path.abspath(os.path.join(training_args.output_dir, figure))}")
        if metrics:
            print(
                "Validation: " + json.dumps({k: round(v, 4) for k, v in metrics.items() if "loss" in k or "acc" in k})
            )
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return metrics


def check_replicas_identical(trainer: SupMAETrainer) -> None:
    """With several processes, every replica must hold the same weights at the end (a desync is a bug)."""
    if trainer.accelerator.num_processes == 1:
        return
    digests = trainer.accelerator.gather(parameters_digest(trainer.model).to(trainer.args.device).unsqueeze(0))
    if not torch.allclose(digests, digests[:1].expand_as(digests), rtol=1e-6, atol=0):
        raise RuntimeError(f"The {len(digests)} processes ended with different weights: {digests.tolist()}")
    logger.info(f"Parameters identical across the {len(digests)} processes.")


if __name__ == "__main__":
    main()
