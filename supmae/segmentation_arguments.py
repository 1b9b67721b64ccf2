# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""The command line of run_segmentation.py: its arguments, with mmsegmentation's MAE ADE20K recipe as defaults, and
their checks (made before any data is read)."""

import os
from dataclasses import dataclass, field
from typing import Literal

from .arguments import SupMAETrainingArguments, apply_config_overrides, parse_arguments, script_parser
from .configuration_supmae import SUPMAE_PRESETS, SupMAEConfig
from .data import DIGITS


RECIPE_BATCH = 16  # mmsegmentation's MAE ADE20K recipe: 8 GPUs x 2 crops


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A SupMAE checkpoint whose encoder starts the backbone (pretraining, fine-tuned classifier, "
            "converted official MAE / SupMAE; a Hub name or a local directory), or a saved segmentation directory."
        },
    )
    config_name: str | None = field(
        default=None,
        metadata={
            "help": f"Train from scratch with this architecture: a preset ({', '.join(SUPMAE_PRESETS)}) or a "
            "config file or directory."
        },  # fmt: skip
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": 'Encoder fields to override, e.g. "num_hidden_layers=6" (from scratch).'}
    )
    random_init: bool = field(
        default=False,
        metadata={"help": "Use only the architecture of --model_name_or_path, with random weights (a baseline)."},
    )
    drop_path_rate: float = field(default=0.1, metadata={"help": "Stochastic depth of the backbone's last block."})
    decode_channels: int = field(default=768, metadata={"help": "Width of UperNet's decode head (mmseg MAE: 768)."})
    auxiliary_channels: int = field(default=256, metadata={"help": "Width of the auxiliary FCN head."})


@dataclass
class SegmentationDataArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": f"A Hub dataset or local dataset directory with an image and an annotation column, or "
            f"'{DIGITS}' (built in, no download)."
        },  # fmt: skip
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
        metadata={
            "help": "An ADEChallengeData2016 folder (images/ and annotations/, training and validation)."
        },  # fmt: skip
    )
    image_column_name: str | None = field(default=None, metadata={"help": "Image column (default: detected)."})
    mask_column_name: str | None = field(default=None, metadata={"help": "Annotation column (default: detected)."})
    reduce_zero_label: bool | None = field(
        default=None,
        metadata={
            "help": "Ignore label 0 and shift the others down by one (ADE20K's 'other'). Default: on for "
            "ADE20K (--train_dir, scene_parse_150), off otherwise."
        },  # fmt: skip
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
    stride: int = field(default=341, metadata={"help": "Step of the evaluation's sliding window (pixels)."})
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


DESCRIPTION = """Semantic segmentation with UperNet on a SupMAE backbone, with mmsegmentation's MAE ADE20K recipe as
defaults and its evaluation (sliding windows, one confusion matrix over the set). With no arguments: the offline demo
(digits pasted on canvases), starting from outputs/digits-pretrained when `python run_pretraining.py` wrote it."""


def parse_segmentation_arguments(argv: list[str]):
    parser = script_parser((ModelArguments, SegmentationDataArguments, SegmentationTrainingArguments),
                           "run_segmentation.py", DESCRIPTION, first=("model_name_or_path",))  # fmt: skip
    (model_args, data_args, args), _ = parse_arguments(parser, argv)
    if model_args.model_name_or_path and model_args.config_name:
        raise ValueError("--model_name_or_path and --config_name both give the architecture: pass one.")
    if not (model_args.model_name_or_path or model_args.config_name or model_args.config_overrides):
        raise ValueError("Give --model_name_or_path (a SupMAE checkpoint) or, to train from scratch, --config_name.")
    if len(data_args.scale) != 2 or len(data_args.ratio_range) != 2:
        raise ValueError(f"--scale and --ratio_range take two numbers each, got {data_args.scale} and "
                         f"{data_args.ratio_range}.")  # fmt: skip
    if not 0 < args.stride <= args.crop_size:
        raise ValueError(f"--stride {args.stride} must be between 1 and --crop_size ({args.crop_size}): windows "
                         "further apart than a crop leave pixels that no window sees.")  # fmt: skip
    if args.windows_per_batch < 1:
        raise ValueError(f"--windows_per_batch must be at least 1, got {args.windows_per_batch}.")
    return model_args, data_args, args


def encoder_config(model_args: ModelArguments) -> SupMAEConfig | None:
    """The architecture to train from scratch (None when it comes from --model_name_or_path)."""
    if model_args.model_name_or_path:
        return None
    name = model_args.config_name or "vit-base-patch16"
    if name in SUPMAE_PRESETS:
        config = SupMAEConfig.from_preset(name)
    elif os.path.exists(name):
        config = SupMAEConfig.from_pretrained(name)
    else:
        raise ValueError(f"--config_name {name!r} is neither a preset ({', '.join(SUPMAE_PRESETS)}) nor a config.")
    if model_args.config_overrides:
        apply_config_overrides(config, model_args.config_overrides)
    return SupMAEConfig.from_dict(config.to_dict())  # validates the overridden values
