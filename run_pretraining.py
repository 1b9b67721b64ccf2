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

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Literal

import torch
import transformers

from supmae import SupMAEConfig, SupMAEForPreTraining
from supmae.arguments import (
    DataArguments,
    SupMAETrainingArguments,
    apply_config_overrides,
    check_labels,
    check_output_dir,
    command_of,
    configure_logging,
    configure_streaming,
    demo_arguments,
    finished_run,
    parse_arguments,
    prepare_data,
    record_finished_run,
    resume_checkpoint,
    run_script,
    script_parser,
)
from supmae.configuration_supmae import SUPMAE_PRESETS
from supmae.data import (
    DIGITS,
    BadImagePolicy,
    EvalTransform,
    ImageCollator,
    PretrainingTransform,
    TransformedImageDataset,
    count_skipped_images,
    eval_image_processor,
    transform_streaming_dataset,
)
from supmae.gpu_decode import (
    BatchDecoder,
    DeviceDecodeTransform,
    DeviceDecodingTrainer,
    EncodedImageCollator,
    check_device_decoding,
)
from supmae.model_card import pretraining_model_card
from supmae.training import (
    SKIPPED_IMAGES,
    SupMAETrainer,
    convert_to_sync_batch_norm,
    parameters_digest,
    peak_learning_rate,
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
    "--dataloader_num_workers", "0",  # 8x8 images: decoding them in the training process is cheapest
]  # fmt: skip


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue pretraining from this checkpoint (a local directory or Hub name)."}
    )
    config_name: str | None = field(
        default=None,
        metadata={"help": f"A preset ({', '.join(SUPMAE_PRESETS)}) or a config file/directory."},
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": 'Config fields to override, e.g. "hidden_size=64,num_hidden_layers=2".'}
    )
    mask_ratio: float | None = field(default=None, metadata={"help": "Fraction of patches removed."})
    norm_pix_loss: bool | None = field(default=None, metadata={"help": "Reconstruct per-patch normalized pixels."})


@dataclass
class PretrainingArguments(SupMAETrainingArguments):
    """TrainingArguments with the official SupMAE recipe as defaults."""

    base_learning_rate: float = field(
        default=1.5e-4, metadata={"help": "Learning rate for an effective batch of 256; lr = base_lr x batch / 256."}
    )
    sync_batch_norm: bool = field(
        default=False, metadata={"help": "Share the supervised head's BatchNorm statistics across GPUs."}
    )
    num_figure_images: int = field(default=8, metadata={"help": "Validation images in the reconstruction figure."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (none on biases and norms)."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2 (MAE: 0.95)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Warmup then half-cycle cosine to 0."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warmup steps, or a fraction of all (20/400 epochs)."})
    decode_device: Literal["cpu", "cuda"] = field(
        default="cpu",
        metadata={
            "help": "Where training images are decoded: 'cpu', in the dataloader workers; or 'cuda': the workers read "
            "the files and draw the crops, and the training process decodes each batch on its GPU (nvJPEG) and "
            "crops, resizes, flips and normalizes there (map-style datasets; the same crops as 'cpu')."
        },
    )


DESCRIPTION = """Pretrain SupMAE (or, without labels, MAE) on the Hugging Face Trainer. The defaults are the official
SupMAE recipe. With no arguments: the offline demo, a tiny SupMAE on scikit-learn's digits."""
SHOWN_DEFAULTS = {
    "config_name": "vit-base-patch16, the released SupMAE",
    "mask_ratio": "the config's, 0.75",
    "norm_pix_loss": "the config's, true",
    "learning_rate": "base_learning_rate x effective batch / 256",
}


def build_config(model_args: ModelArguments) -> SupMAEConfig:
    if model_args.model_name_or_path and model_args.config_name:
        raise ValueError(
            "--model_name_or_path and --config_name both give the architecture: pass one (change fields of a "
            "checkpoint's config with --config_overrides)."
        )
    if model_args.model_name_or_path:
        config = SupMAEConfig.from_pretrained(model_args.model_name_or_path)
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
        apply_config_overrides(config, model_args.config_overrides)
    for name in ("mask_ratio", "norm_pix_loss"):
        if getattr(model_args, name) is not None:
            setattr(config, name, getattr(model_args, name))
    return SupMAEConfig.from_dict(config.to_dict())  # validates the overridden values


def main(argv: list[str] | None = None) -> dict[str, float]:
    argv = sys.argv[1:] if argv is None else argv
    demo = not argv
    argv = demo_arguments(DEMO_ARGUMENTS) if demo else argv
    parser = script_parser((ModelArguments, DataArguments, PretrainingArguments), "run_pretraining.py",
                           DESCRIPTION, SHOWN_DEFAULTS)  # fmt: skip
    (model_args, data_args, training_args), given = parse_arguments(parser, argv)
    configure_logging(training_args, logger)
    if demo:
        logger.info("No arguments: the offline demo on scikit-learn's digits. Arguments: " + " ".join(argv))
    if data_args.streaming and training_args.max_steps <= 0:
        raise ValueError("--streaming needs --max_steps: a streamed dataset has no length to count epochs in.")
    if {"learning_rate", "base_learning_rate"} <= given:
        raise ValueError("--learning_rate and --base_learning_rate both set the learning rate; pass one of them.")
    if training_args.decode_device == "cuda":
        check_device_decoding(training_args.device, data_args.streaming)
    config = build_config(model_args)  # a wrong preset or field fails here, before any data is read
    command = command_of(argv)
    previous = finished_run(training_args.output_dir, command)
    if previous is not None:
        logger.warning(f"{training_args.output_dir} already holds a finished run of this command: reporting its "
                       "results instead of training again (remove it, or choose another --output_dir, to train "
                       "anew).")  # fmt: skip
        report(training_args.output_dir, **previous["results"])
        return previous["results"]["metrics"]
    resume_from_checkpoint = resume_checkpoint(training_args)
    transformers.set_seed(training_args.seed)
    data = prepare_data(data_args, training_args.seed)
    train_split, eval_split = data.train, data.validation
    image_column, label_column, names = data.image_column, data.label_column, data.class_names

    # Model
    if names is not None and not model_args.model_name_or_path:
        config.num_labels = len(names)
        config.id2label = dict(enumerate(names))
        config.label2id = {name: i for i, name in enumerate(names)}
    if model_args.model_name_or_path:
        model = SupMAEForPreTraining.from_pretrained(model_args.model_name_or_path, config=config)
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

    check_output_dir(training_args, model)
    for split, dataset in (("training", train_split), ("validation", eval_split)):
        check_labels(dataset, label_column, config.num_labels, split)

    image_size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    image_processor = eval_image_processor(image_size)
    train_transform, eval_transform = PretrainingTransform(image_size), EvalTransform(image_processor)
    skipped_images = os.path.join(training_args.output_dir, SKIPPED_IMAGES)
    bad_images = BadImagePolicy(data_args.bad_images, skipped_images)
    if data_args.streaming:
        configure_streaming(training_args, train_split)
        train_split = train_split.shuffle(seed=training_args.seed, buffer_size=data_args.shuffle_buffer_size)
        train_dataset = transform_streaming_dataset(
            train_split, image_column, label_column, train_transform, bad_images
        )
        eval_dataset = eval_split and transform_streaming_dataset(
            eval_split, image_column, label_column, eval_transform, bad_images
        )
    else:
        train_dataset = TransformedImageDataset(
            train_split, image_column, label_column, train_transform, training_args.seed, bad_images
        )
        eval_dataset = eval_split and TransformedImageDataset(
            eval_split, image_column, label_column, eval_transform, bad_images=bad_images
        )
    if eval_dataset is None and training_args.eval_strategy != "no":
        logger.warning("No validation data: evaluation is turned off.")
        training_args.eval_strategy = "no"

    effective_batch = (
        training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * training_args.world_size
    )
    explicit = training_args.learning_rate if "learning_rate" in given else None
    training_args.learning_rate, line = peak_learning_rate(explicit, training_args.base_learning_rate, effective_batch)
    logger.info(line)

    trainer_class, collator, extra = SupMAETrainer, ImageCollator(config.num_labels if label_column else None), {}
    if training_args.decode_device == "cuda":  # workers read files and draw crops; the GPU decodes (gpu_decode.py)
        train_dataset.transform = DeviceDecodeTransform(train_transform)
        extra["batch_decoder"] = BatchDecoder.for_transform(train_transform, training_args.device, bad_images)
        trainer_class, collator = DeviceDecodingTrainer, EncodedImageCollator(image_size, collator.num_labels)
    trainer = trainer_class(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=image_processor,
        eval_seed=training_args.seed,
        **extra,
    )
    train_result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    train_result.metrics["skipped_images"] = count_skipped_images(skipped_images)
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
            example[image_column] for _, example in zip(range(training_args.num_figure_images), source, strict=False)
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
            command=["python", "run_pretraining.py", *argv],
        )
        with open(os.path.join(training_args.output_dir, "README.md"), "w") as file:
            file.write(card)
        results = {"metrics": metrics, "figure": figure, "skipped_images": train_result.metrics["skipped_images"]}
        record_finished_run(training_args.output_dir, command, results)
        report(training_args.output_dir, **results)
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return metrics


def report(output_dir: str, metrics: dict, figure: str | None, skipped_images: int) -> None:
    """What a finished run prints: where everything went, and the validation losses and accuracy."""
    print(f"\nPretrained SupMAE written to {os.path.abspath(output_dir)}")
    if figure:
        print(f"Reconstruction figure: {os.path.abspath(os.path.join(output_dir, figure))}")
    if skipped_images:
        print(f"Skipped {skipped_images} unreadable images, listed in {os.path.join(output_dir, SKIPPED_IMAGES)}")
    if metrics:
        print("Validation: " + json.dumps({k: round(v, 4) for k, v in metrics.items() if "loss" in k or "acc" in k}))


def check_replicas_identical(trainer: SupMAETrainer) -> None:
    """With several processes, every replica must hold the same weights at the end (a desync is a bug)."""
    if trainer.accelerator.num_processes == 1:
        return
    digests = trainer.accelerator.gather(parameters_digest(trainer.model).to(trainer.args.device).unsqueeze(0))
    if not torch.equal(digests, digests[:1].expand_as(digests)):  # the same weights sum to the same bits
        raise RuntimeError(f"The {len(digests)} processes ended with different weights: {digests.tolist()}")
    logger.info(f"Parameters identical across the {len(digests)} processes.")


if __name__ == "__main__":
    run_script(main)
