# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Semantic segmentation with UperNet on a SupMAE backbone, with mmsegmentation's MAE ADE20K recipe as defaults
and its evaluation protocol."""

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Literal

import transformers

from ..cli import ScriptParser, command_of, configure_logging, demo_or_given, given_names, parse_arguments
from ..data.images import SKIPPED_IMAGES, BadImagePolicy
from ..data.segmentation import (
    SegmentationDataset,
    SegmentationEvalTransform,
    SegmentationTrainTransform,
    find_mask_column,
    load_segmentation_datasets,
    segmentation_class_names,
)
from ..data.sources import DIGITS, find_image_column
from ..interop.upernet import (
    check_pyramid_depth,
    save_segmentation_model,
    segmentation_image_processor,
    segmentation_model,
)
from ..reports.model_card import segmentation_model_card
from ..reports.segmentation_figure import prediction_figure
from ..training.arguments import ModelArguments, SupMAETrainingArguments, build_config
from ..training.checkpoints import resume_checkpoint
from ..training.distributed import sync_batch_norm_if_requested
from ..training.files import write_report
from ..training.optim import check_layer_decay, effective_batch_size
from ..training.runs import (
    RunDirectory,
    check_output_dir,
    local_sources,
    previous_results,
    record_finished_run,
    run_recipe,
    write_model_card,
)
from ..training.segmentation import TEST_AUGMENTATION_RATIOS, SupMAESegmentationTrainer


logger = logging.getLogger(__name__)

RECIPE_BATCH = 16  # mmsegmentation's MAE ADE20K recipe: 8 GPUs x 2 crops


@dataclass
class SegmentationModelArguments(ModelArguments):
    random_init: bool = field(
        default=False,
        metadata={"help": "Use only the architecture of --model_name_or_path, with random weights (a baseline)."},
    )
    drop_path_rate: float = field(default=0.1, metadata={"help": "Stochastic depth of the backbone's last block."})
    decode_channels: int = field(default=768, metadata={"help": "Width of UperNet's decode head (mmseg MAE: 768)."})
    auxiliary_channels: int = field(default=256, metadata={"help": "Width of the auxiliary FCN head."})
    relative_position_bias: bool = field(
        default=True,
        metadata={
            "help": "BEiT's relative position bias in every block, zero at the start (mmseg MAE); false: without "
            "(an ablation)."
        },
    )
    layer_scale_init_value: float = field(
        default=1.0,
        metadata={
            "help": "Layer scale on both residual branches of every block, from this value (mmseg MAE: 1.0); 0: none."
        },
    )
    classifier_dropout: float = field(
        default=0.1, metadata={"help": "Dropout before the classifiers of both heads (mmseg: 0.1); 0: none."}
    )


@dataclass
class SegmentationDataArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": f"A Hub dataset or local dataset directory with an image and an annotation column, or "
            f"'{DIGITS}' (built in, no download)."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    dataset_revision: str | None = field(
        default=None, metadata={"help": "The dataset's revision (scene_parse_150: refs/convert/parquet)."}
    )
    dataset_data_dir: str | None = field(
        default=None, metadata={"help": "The dataset's folder to read (scene_parse_150's Parquet: scene_parsing)."}
    )
    train_dir: str | None = field(
        default=None,
        metadata={"help": "An ADEChallengeData2016 folder (images/ and annotations/, training and validation)."},
    )
    image_column_name: str | None = field(default=None, metadata={"help": "Image column (default: detected)."})
    mask_column_name: str | None = field(default=None, metadata={"help": "Annotation column (default: detected)."})
    reduce_zero_label: bool | None = field(
        default=None,
        metadata={
            "help": "Ignore label 0 and shift the others down by one (ADE20K's 'other'). Default: on for "
            "ADE20K (--train_dir, scene_parse_150), off otherwise."
        },
    )
    id2label: str | None = field(default=None, metadata={"help": 'A JSON file of class names, {"0": "wall", ...}.'})
    num_labels: int | None = field(default=None, metadata={"help": "Number of classes, when no names are known."})
    train_val_split: float = field(
        default=0.05, metadata={"help": "Fraction of train held out for validation when there is no validation split."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only this many training images."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only this many validation images."})
    scale: list[int] = field(
        default_factory=lambda: [2048, 512], metadata={"help": "Image scale (long side, short side) before rescaling."}
    )
    ratio_range: list[float] = field(
        default_factory=lambda: [0.5, 2.0], metadata={"help": "Random rescale of the scale in training."}
    )
    cat_max_ratio: float = field(
        default=0.75, metadata={"help": "A training crop's largest class covers less than this (10 tries)."}
    )
    photometric_distortion: bool = field(default=True, metadata={"help": "mmseg's brightness/contrast/HSV jitter."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache downloaded models and datasets."})
    bad_images: Literal["skip", "error"] = field(
        default="skip",
        metadata={
            "help": "An unreadable image or annotation: 'skip' logs it, lists it in OUTPUT_DIR/skipped_images.tsv "
            "and goes on; 'error' stops the run, naming it."
        },
    )


@dataclass
class SegmentationTrainingArguments(SupMAETrainingArguments):
    """TrainingArguments with mmsegmentation's MAE ADE20K recipe as defaults."""

    crop_size: int = field(default=512, metadata={"help": "Training crop and evaluation window (pixels)."})
    stride: int | None = field(
        default=None,
        metadata={
            "help": "Step of the evaluation's sliding window (pixels; default: 2/3 of --crop_size, 341 at 512)."
        },
    )
    test_augmentation: bool = field(
        default=False,
        metadata={
            "help": "mmseg's multi-scale + flip evaluation: sliding windows at 0.5, 0.75, ..., 1.75 x --scale and "
            "mirrored, the probabilities averaged at the original size."
        },
    )
    windows_per_batch: int = field(default=8, metadata={"help": "Evaluation windows run through the model at once."})
    layer_decay: float = field(default=0.65, metadata={"help": "Layer-wise lr decay (MAE / BEiT: 0.65)."})
    sync_batch_norm: bool = field(
        default=True, metadata={"help": "SyncBatchNorm in the neck and heads with several CUDA processes (mmseg)."}
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate of the heads (mmseg MAE)."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (none on biases and norms)."})
    max_steps: int = field(default=160_000, metadata={"help": "Training iterations (160k)."})
    warmup_steps: float = field(default=1500, metadata={"help": "Linear warmup iterations."})
    lr_scheduler_type: str = field(default="polynomial", metadata={"help": "Poly decay after the warmup."})
    lr_scheduler_kwargs: dict | str = field(
        default_factory=lambda: {"lr_end": 0.0, "power": 1.0}, metadata={"help": "Poly power 1, down to 0."}
    )
    per_device_train_batch_size: int = field(
        default=RECIPE_BATCH, metadata={"help": "Crops per process and step (mmseg: 16 in all, 2 on each of 8 GPUs)."}
    )
    eval_strategy: str = field(default="steps", metadata={"help": "Evaluate every --eval_steps (16k)."})
    eval_steps: float = field(default=16_000, metadata={"help": "Steps between evaluations."})
    save_steps: float = field(default=16_000, metadata={"help": "Steps between checkpoints."})
    logging_steps: float = field(default=50, metadata={"help": "Steps between training logs."})

    def __post_init__(self):
        check_unsharded(self.fsdp, self.deepspeed)  # before the back end is set up: the same refusal on any of them
        super().__post_init__()


def deepspeed_zero_stage(deepspeed) -> int | None:
    """The ZeRO stage of a --deepspeed config (a dict, a JSON file or a JSON string); None when it names none or
    cannot be read (the Trainer then reports the config's problem itself)."""
    config = deepspeed
    if isinstance(config, str):
        try:
            if os.path.isfile(config):
                with open(config) as file:
                    config = json.load(file)
            else:
                config = json.loads(config)
        except (OSError, ValueError):
            return None
    stage = config.get("zero_optimization", {}).get("stage") if isinstance(config, dict) else None
    return stage if isinstance(stage, int) else None


def check_unsharded(fsdp, deepspeed) -> None:
    """Refuse sharded parameters (--fsdp, --deepspeed with ZeRO stage 3): the evaluation runs the unwrapped model."""
    if fsdp:
        sharding = "--fsdp"
    elif deepspeed and deepspeed_zero_stage(deepspeed) == 3:
        sharding = "--deepspeed with ZeRO stage 3"
    else:
        return
    raise ValueError(
        f"run_segmentation.py cannot train with {sharding}: its evaluation (sliding windows, each process on its "
        "share of the validation images, one confusion matrix summed over the processes) runs the unwrapped model, "
        "whose parameters would be shards, so each process would evaluate its shard of the weights, not the model. "
        "Train with DDP (torchrun without --fsdp; --deepspeed with ZeRO stage 1 or 2 keeps whole parameters too): "
        "the model is replicated on every process."
    )


DESCRIPTION = """Semantic segmentation with UperNet on a SupMAE backbone, with mmsegmentation's MAE ADE20K recipe as
defaults and its evaluation (sliding windows, one confusion matrix over the set). With no arguments: the offline demo
(digits pasted on canvases), starting from outputs/digits-pretrained when `python run_pretraining.py` wrote it."""


def parse(
    argv: list[str],
) -> tuple[SegmentationModelArguments, SegmentationDataArguments, SegmentationTrainingArguments]:
    """The command line (or its one JSON file), checked before any data is read."""
    parser = ScriptParser(
        (SegmentationModelArguments, SegmentationDataArguments, SegmentationTrainingArguments),
        "run_segmentation.py",
        DESCRIPTION,
        first=("model_name_or_path",),
    )
    (model_args, data_args, args), _ = parse_arguments(parser, argv)
    if model_args.model_name_or_path and model_args.config_name:
        raise ValueError("--model_name_or_path and --config_name both give the architecture: pass one.")
    if not (model_args.model_name_or_path or model_args.config_name or model_args.config_overrides):
        raise ValueError("Give --model_name_or_path (a SupMAE checkpoint) or, to train from scratch, --config_name.")
    if len(data_args.scale) != 2 or len(data_args.ratio_range) != 2:
        raise ValueError(
            f"--scale and --ratio_range take two numbers each, got {data_args.scale} and {data_args.ratio_range}."
        )
    if min(data_args.scale) < 1 or min(data_args.ratio_range) <= 0:
        raise ValueError(
            f"--scale takes two positive sizes in pixels (long side, short side) and --ratio_range two positive factors; "
            f"got {data_args.scale} and {data_args.ratio_range}."
        )
    check_layer_decay(args.layer_decay)
    if args.stride is None:
        args.stride = default_stride(args.crop_size)
    if not 0 < args.stride <= args.crop_size:
        raise ValueError(
            f"--stride {args.stride} must be between 1 and --crop_size ({args.crop_size}): windows "
            "further apart than a crop leave pixels that no window sees."
        )
    if args.windows_per_batch < 1:
        raise ValueError(f"--windows_per_batch must be at least 1, got {args.windows_per_batch}.")
    return model_args, data_args, args


def default_stride(crop_size: int) -> int:
    """mmsegmentation's sliding-window step for a crop: two thirds of it (341 for its 512 px crops), at least 1."""
    return max(crop_size * 2 // 3, 1)


@dataclasses.dataclass
class SegmentationData:
    """The run's splits (datasets' rows, before any transform), their columns and classes."""

    train: object
    validation: object | None
    image_column: str
    mask_column: str
    id2label: dict[int, str]
    reduce_labels: bool


def prepare_data(data_args, args) -> SegmentationData:
    """The training split and the validation split (given, or `--train_val_split` of the training one), cut to
    `--max_train_samples` / `--max_eval_samples`, with their image and mask columns and the class names."""
    splits = load_segmentation_datasets(
        data_args.dataset_name,
        data_args.dataset_config_name,
        data_args.train_dir,
        data_args.dataset_revision,
        data_args.cache_dir,
        data_args.dataset_data_dir,
    )
    train, validation = splits["train"], splits.get("validation")
    if validation is None and data_args.train_val_split > 0:
        held_out = train.train_test_split(data_args.train_val_split, seed=args.seed)
        train, validation = held_out["train"], held_out["test"]
    train = train.select(range(min(data_args.max_train_samples or len(train), len(train))))
    if validation is not None and data_args.max_eval_samples:
        validation = validation.select(range(min(data_args.max_eval_samples, len(validation))))
    image_column = find_image_column(train, data_args.image_column_name)
    mask_column = find_mask_column(train, data_args.mask_column_name, image_column)
    id2label, reduce_labels = segmentation_class_names(
        data_args.dataset_name,
        data_args.train_dir,
        data_args.id2label,
        data_args.num_labels,
        data_args.reduce_zero_label,
        data_args.cache_dir,
    )
    return SegmentationData(train, validation, image_column, mask_column, id2label, reduce_labels)


def build_model(model_args, data_args, args, config, id2label: dict[int, str]):
    """UperNet on the SupMAE backbone (`segmentation_model`: the recipe's backbone and heads, the checkpoint's
    encoder), and the one-sentence report of what was loaded."""
    return segmentation_model(
        model_args.model_name_or_path,
        id2label,
        args.crop_size,
        config=config,
        random_init=model_args.random_init,
        drop_path_rate=model_args.drop_path_rate,
        decode_channels=model_args.decode_channels,
        auxiliary_channels=model_args.auxiliary_channels,
        relative_position_bias=model_args.relative_position_bias,
        layer_scale_init_value=model_args.layer_scale_init_value,
        classifier_dropout=model_args.classifier_dropout,
        cache_dir=data_args.cache_dir,
    )


def build_datasets(data: SegmentationData, data_args, args, ratios=None) -> dict[str, SegmentationDataset]:
    """ "train" (mmsegmentation's training pipeline) and, when there is a validation split, "validation" (the
    evaluation transform, at `ratios` of the test scale for `--test_augmentation`). An unreadable pair is replaced in
    training and left out in evaluation (which scores each readable image once)."""
    common = {
        "reduce_labels": data.reduce_labels,
        "seed": args.seed,
        "bad_images": BadImagePolicy(data_args.bad_images, os.path.join(args.output_dir, SKIPPED_IMAGES)),
        "num_labels": len(data.id2label),
    }
    train_transform = SegmentationTrainTransform(
        (args.crop_size, args.crop_size),
        tuple(data_args.scale),
        tuple(data_args.ratio_range),
        data_args.cat_max_ratio,
        data_args.photometric_distortion,
    )
    datasets = {
        "train": SegmentationDataset(
            data.train, data.image_column, data.mask_column, train_transform, substitute=True, **common
        )
    }
    if data.validation is not None:
        eval_transform = SegmentationEvalTransform(tuple(data_args.scale), ratios=ratios)
        datasets["validation"] = SegmentationDataset(
            data.validation, data.image_column, data.mask_column, eval_transform, substitute=False, **common
        )
    return datasets


def main(argv: list[str], demo: list[str] | None = None) -> dict:
    """run_segmentation.py: train and evaluate UperNet with `argv`, or with the `demo` arguments (`demo_or_given`);
    the demo also draws its predictions. Returns the validation metrics."""
    argv, run_demo = demo_or_given(argv, demo)
    model_args, data_args, args = parse(argv)
    configure_logging(args)
    if run_demo and not model_args.model_name_or_path:
        logger.warning("No pretrained demo checkpoint (run `python run_pretraining.py` first): training from scratch.")
    batch = effective_batch_size(args)
    if batch != RECIPE_BATCH and not run_demo:
        logger.warning(
            f"Effective batch {batch} (the recipe's is {RECIPE_BATCH}: 2 crops on each of 8 GPUs), at the "
            f"recipe's learning rate {args.learning_rate:g} unless --learning_rate says otherwise."
        )
    # From scratch, the architecture; a wrong preset or field fails here, before any data is read.
    config = None if model_args.model_name_or_path else build_config(model_args)
    if config is not None:
        check_pyramid_depth(config.num_hidden_layers)
    command = command_of(argv)
    recipe = run_recipe(model_args, data_args, args)
    with RunDirectory(args, "run_segmentation.py", command, recipe, local_sources(model_args, data_args)):
        previous = previous_results(args.output_dir, command)
        if previous is not None:
            report_results(args.output_dir, **previous)
            return previous["metrics"]
        transformers.set_seed(args.seed)
        data = prepare_data(data_args, args)
        resume = resume_checkpoint(args)
        model, report = build_model(model_args, data_args, args, config, data.id2label)
        check_output_dir(args, model)
        model = sync_batch_norm_if_requested(model, args, explicit="sync_batch_norm" in given_names(argv))
        image_processor = segmentation_image_processor(args.crop_size, data.reduce_labels)
        ratios = TEST_AUGMENTATION_RATIOS if args.test_augmentation else None
        datasets = build_datasets(data, data_args, args, ratios)
        if "validation" not in datasets:
            args.eval_strategy = "no"
        trainer = SupMAESegmentationTrainer(
            model=model,
            args=args,
            train_dataset=datasets["train"],
            eval_dataset=datasets.get("validation"),
            processing_class=image_processor,
            layer_decay=args.layer_decay,
            crop_size=args.crop_size,
            stride=args.stride,
            windows_per_batch=args.windows_per_batch,
            flip=args.test_augmentation,
        )
        trainer.train(resume_from_checkpoint=resume)
        metrics = trainer.evaluate() if "validation" in datasets else {}
        if trainer.is_world_process_zero():
            figure = finish(trainer, data, datasets, model_args, data_args, args, metrics, report, run_demo)
            record_finished_run(args.output_dir, command, {"metrics": metrics, "figure": figure})
            report_results(args.output_dir, metrics, figure)
        return metrics


def finish(trainer, data, datasets, model_args, data_args, args, metrics, report, run_demo) -> str | None:
    """The main process's writing at the end of a run: the model and its processor, the trainer state, the
    validation report, the model card and (the demo) the figure of predictions, whose path it returns."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    save_segmentation_model(model, args.output_dir, trainer.processing_class)
    trainer.save_state()
    write_report(
        os.path.join(args.output_dir, "eval_validation.json"),
        "validation",
        metrics,
        model=model_args.model_name_or_path,
        classes=[data.id2label[i] for i in range(len(data.id2label))],
        weights=report,
    )
    card = segmentation_model_card(
        model.config,
        dataset=data_args.dataset_name or data_args.train_dir,
        metrics=metrics,
        report=report,
        training={
            "iterations": args.max_steps,
            "batch per process": args.per_device_train_batch_size,
            "learning rate": args.learning_rate,
            "layer decay": args.layer_decay,
            "crop": args.crop_size,
            "evaluation stride": args.stride,
            "seed": args.seed,
        },
        base_model=None if model_args.random_init else model_args.model_name_or_path,
        license=args.license,
    )
    write_model_card(args.output_dir, card)
    if not run_demo:
        return None
    figure = os.path.join(args.output_dir, "predictions.png")
    # The figure shows single-scale predictions, with or without --test_augmentation.
    shown = build_datasets(data, data_args, args)["validation"] if args.test_augmentation else datasets["validation"]
    prediction_figure(model, shown, args.crop_size, args.stride, args.device).save(figure)
    return figure


def report_results(output_dir: str, metrics: dict, figure: str | None) -> None:
    """What a finished run prints: the figure, the validation mIoU, mAcc and aAcc, and where everything went."""
    if figure:
        print(f"Figure (image | ground truth | prediction): {figure}")
    if metrics:
        print(
            "validation: "
            + json.dumps(
                {
                    k.removeprefix("eval_"): round(v, 4)
                    for k, v in metrics.items()
                    if k in ("eval_mean_iou", "eval_mean_accuracy", "eval_overall_accuracy")
                }
            )
        )
    print(f"Written to {os.path.abspath(output_dir)}")
