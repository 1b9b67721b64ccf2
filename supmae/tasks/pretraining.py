# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
SupMAE pretraining on the Trainer (run_pretraining.py). The defaults are the official recipe: lr = base_lr x effective
batch / 256, AdamW (0.9, 0.95), weight decay 0.05 (none on biases and norms), per-step warmup then cosine,
RandomResizedCrop(0.2-1) + flip, mask ratio 0.75, normalized-pixel loss. Without labels it is plain MAE.
"""

import itertools
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Literal

import transformers

from ..cli import ScriptParser, command_of, configure_logging, demo_or_given, parse_arguments
from ..data.collators import ImageCollator
from ..data.datasets import TransformedImageDataset, transform_streaming_dataset
from ..data.gpu_decode import BatchDecoder, DeviceDecodeTransform, EncodedImageCollator, check_device_decoding
from ..data.images import SKIPPED_IMAGES, BadImageError, BadImagePolicy, count_skipped_images, undecoded
from ..data.sources import PreparedData, check_labels, prepare_data
from ..data.transforms import EvalTransform, PretrainingTransform, eval_image_processor
from ..modeling_supmae import SupMAEForPreTraining
from ..reports.model_card import pretraining_model_card
from ..reports.reconstruction_figure import reconstruction_figure
from ..training.arguments import DataArguments, ModelArguments, SupMAETrainingArguments, build_config
from ..training.checkpoints import resume_checkpoint
from ..training.distributed import check_replicas_identical, configure_streaming, sync_batch_norm_if_requested
from ..training.optim import effective_batch_size, peak_learning_rate
from ..training.pretraining import DeviceDecodingTrainer, SupMAETrainer
from ..training.runs import (
    RunDirectory,
    check_output_dir,
    local_sources,
    previous_results,
    record_finished_run,
    run_recipe,
    write_model_card,
)


logger = logging.getLogger(__name__)


@dataclass
class PretrainingModelArguments(ModelArguments):
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


def parse(argv: list[str]) -> tuple[PretrainingModelArguments, DataArguments, PretrainingArguments, set[str]]:
    """The command line (or its one JSON file) into the three argument dataclasses, and the names that were given."""
    parser = ScriptParser(
        (PretrainingModelArguments, DataArguments, PretrainingArguments),
        "run_pretraining.py",
        DESCRIPTION,
        SHOWN_DEFAULTS,
    )
    (model_args, data_args, training_args), given = parse_arguments(parser, argv)
    return model_args, data_args, training_args, given


def main(argv: list[str], demo: list[str] | None = None) -> dict[str, float]:
    """run_pretraining.py: pretrain with `argv`, or with the `demo` arguments (`demo_or_given`). Returns the
    validation metrics (those of the finished run when the same command already ran in its output directory)."""
    argv, run_demo = demo_or_given(argv, demo)
    model_args, data_args, args, given = parse(argv)
    configure_logging(args)
    if run_demo:
        logger.info("No arguments: the offline demo on scikit-learn's digits. Arguments: " + " ".join(argv))
    if data_args.streaming and args.max_steps <= 0:
        raise ValueError("--streaming needs --max_steps: a streamed dataset has no length to count epochs in.")
    if {"learning_rate", "base_learning_rate"} <= given:
        raise ValueError("--learning_rate and --base_learning_rate both set the learning rate; pass one of them.")
    if args.decode_device == "cuda":
        check_device_decoding(args.device, data_args.streaming)
    config = build_config(model_args, mask_ratio=model_args.mask_ratio, norm_pix_loss=model_args.norm_pix_loss)
    command = command_of(argv)
    recipe = run_recipe(model_args, data_args, args)
    with RunDirectory(args, "run_pretraining.py", command, recipe, local_sources(model_args, data_args)):
        previous = previous_results(args.output_dir, command)
        if previous is not None:
            report(args.output_dir, **previous)
            return previous["metrics"]
        resume = resume_checkpoint(args)
        transformers.set_seed(args.seed)
        # Files that cannot even be listed (a name that is not UTF-8) are skipped and listed as they load.
        data = prepare_data(data_args, args.seed, BadImagePolicy(data_args.bad_images, skipped_images_file(args)))
        model = pretraining_model(model_args, config, data, args)
        check_output_dir(args, model)
        for split, dataset in (("training", data.train), ("validation", data.validation)):
            check_labels(dataset, data.label_column, model.config.num_labels, split)

        trainer = pretraining_trainer(model, data, data_args, args, given)
        result = trainer.train(resume_from_checkpoint=resume)
        result.metrics["skipped_images"] = count_skipped_images(os.path.join(args.output_dir, SKIPPED_IMAGES))
        trainer.save_model()
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
        metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
        if metrics:
            trainer.log_metrics("eval", metrics)
            trainer.save_metrics("eval", metrics)
        check_replicas_identical(trainer)
        if trainer.is_world_process_zero():
            results = finish(trainer, data, model_args, data_args, metrics, argv, result.metrics["skipped_images"])
            record_finished_run(args.output_dir, command, results)
            report(args.output_dir, **results)
        if args.push_to_hub:
            trainer.push_to_hub()
        return metrics


def skipped_images_file(args) -> str:
    """Where the run lists the images it skipped: OUTPUT_DIR/skipped_images.tsv."""
    return os.path.join(args.output_dir, SKIPPED_IMAGES)


def pretraining_model(model_args, config, data: PreparedData, args) -> SupMAEForPreTraining:
    """The model to pretrain: `config`'s architecture (a new model) or the checkpoint's, with the data's classes. A
    checkpoint continued on other classes gets a new supervised classifier (other count) or its classes renamed."""
    names = data.class_names
    checkpoint_names = [config.id2label[i] for i in range(config.num_labels)] if config.id2label else None
    new_classes = names is not None and names != checkpoint_names
    if new_classes:
        if model_args.model_name_or_path:
            what = (
                "a new supervised classifier is trained"
                if len(names) != config.num_labels
                else ("its supervised classifier goes on, with the data's class names")
            )
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            logger.warning(
                f"{model_args.model_name_or_path} was pretrained on {config.num_labels} other classes; the data has "
                f"{len(names)} ({shown}): {what}."
            )
        config.num_labels = len(names)
        config.id2label = dict(enumerate(names))
        config.label2id = {name: i for i, name in enumerate(names)}
    if model_args.model_name_or_path:
        mismatched = new_classes and len(names) != len(checkpoint_names or [])
        model = SupMAEForPreTraining.from_pretrained(
            model_args.model_name_or_path, config=config, ignore_mismatched_sizes=mismatched
        )
    else:
        model = SupMAEForPreTraining(config)
    if data.label_column is None:
        logger.info("No label column: training without labels, i.e. plain MAE (the supervised head is not trained).")
    elif args.gradient_accumulation_steps > 1:
        logger.warning(
            "Gradient accumulation is not a larger batch for the supervised head: its BatchNorm sees each "
            "micro-batch on its own."
        )
    return sync_batch_norm_if_requested(model, args, explicit=True)


def pretraining_trainer(model, data: PreparedData, data_args, args, given: set[str]) -> SupMAETrainer:
    """The Trainer with the recipe's datasets, transforms, collator and peak learning rate; `decode_device cuda`
    leaves the decoding of the training images to the GPU."""
    image_size = model.config.image_height_width
    image_processor = eval_image_processor(image_size)
    train_transform, eval_transform = PretrainingTransform(image_size), EvalTransform(image_processor)
    bad_images = BadImagePolicy(data_args.bad_images, skipped_images_file(args))
    columns = (data.image_column, data.label_column)
    if data_args.streaming:
        configure_streaming(args, data.train)
        stream = data.train.shuffle(seed=args.seed, buffer_size=data_args.shuffle_buffer_size)
        train_dataset = transform_streaming_dataset(stream, *columns, train_transform, bad_images)
        eval_dataset = data.validation and transform_streaming_dataset(
            data.validation, *columns, eval_transform, bad_images
        )
    else:
        train_dataset = TransformedImageDataset(data.train, *columns, train_transform, args.seed, bad_images)
        eval_dataset = data.validation and TransformedImageDataset(  # no substitutes: no image is scored twice
            data.validation, *columns, eval_transform, bad_images=bad_images, substitute=False
        )
    if eval_dataset is None and args.eval_strategy != "no":
        logger.warning("No validation data: evaluation is turned off.")
        args.eval_strategy = "no"

    explicit = args.learning_rate if "learning_rate" in given else None
    args.learning_rate, line = peak_learning_rate(explicit, args.base_learning_rate, effective_batch_size(args))
    logger.info(line)

    num_labels = model.config.num_labels if data.label_column else None
    trainer_class, collator, extra = SupMAETrainer, ImageCollator(num_labels), {}
    if args.decode_device == "cuda":  # workers read files and draw crops; the GPU decodes (data/gpu_decode.py)
        train_dataset.transform = DeviceDecodeTransform(train_transform)
        extra["batch_decoder"] = BatchDecoder.for_transform(train_transform, args.device, bad_images)
        trainer_class, collator = DeviceDecodingTrainer, EncodedImageCollator(image_size, num_labels)
    return trainer_class(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=image_processor,
        eval_seed=args.seed,
        **extra,
    )


def finish(trainer, data: PreparedData, model_args, data_args, metrics: dict, argv, skipped_images: int) -> dict:
    """The main process's last writes: the reconstruction figure and the model card. Returns the run's results."""
    args, model = trainer.args, trainer.accelerator.unwrap_model(trainer.model)
    source = undecoded(data.validation if data.validation is not None else data.train, data.image_column)
    # Undecoded: each is decoded under --bad_images (skip: left out of the figure, and said so).
    images = [example[data.image_column] for example in itertools.islice(source, args.num_figure_images)]
    figure = "reconstructions.png" if images else None
    bad_images = BadImagePolicy(data_args.bad_images, skipped_images_file(args))
    try:
        if figure:
            path = os.path.join(args.output_dir, figure)
            reconstruction_figure(
                model, images, trainer.processing_class, seed=args.seed, path=path, bad_images=bad_images
            )
    except BadImageError as error:
        if bad_images.action == "error":
            raise
        logger.warning(f"No reconstruction figure: {error}")
        figure = None
    card = pretraining_model_card(
        model.config,
        dataset=data_args.dataset_name or data_args.train_dir,
        metrics={
            k.removeprefix("eval_"): v for k, v in metrics.items() if not k.endswith(("_runtime", "_per_second"))
        },
        training={
            "labels": data.label_column is not None,
            "effective batch": effective_batch_size(args),
            "learning rate": args.learning_rate,
            "steps": trainer.state.global_step,
            "epochs": round(trainer.state.epoch or 0, 2),
            "seed": args.seed,
        },
        figure=figure,
        base_model=model_args.model_name_or_path,
        command=["python", "run_pretraining.py", *argv],
        license=args.license,
    )
    write_model_card(args.output_dir, card)
    return {"metrics": metrics, "figure": figure, "skipped_images": skipped_images}


def report(output_dir: str, metrics: dict, figure: str | None, skipped_images: int) -> None:
    """What a finished run prints: where everything went, and the validation losses and accuracy."""
    print(f"\nPretrained SupMAE written to {os.path.abspath(output_dir)}")
    if figure:
        print(f"Reconstruction figure: {os.path.abspath(os.path.join(output_dir, figure))}")
    if skipped_images:
        print(f"Skipped {skipped_images} unreadable images, listed in {os.path.join(output_dir, SKIPPED_IMAGES)}")
    if metrics:
        print("Validation: " + json.dumps({k: round(v, 4) for k, v in metrics.items() if "loss" in k or "acc" in k}))
