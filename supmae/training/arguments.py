# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""The arguments every training task shares: the data source, and TrainingArguments with the recipes' defaults."""

import difflib
import importlib.util
import os
import re
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import TrainingArguments

from ..configuration_supmae import SUPMAE_PRESETS, SupMAEConfig
from ..data.sources import DIGITS
from .distributed import check_launch


# TensorBoard when it is installed; nothing otherwise.
DEFAULT_REPORT_TO = "tensorboard" if importlib.util.find_spec("tensorboard") else "none"


def default_dataloader_workers() -> int:
    """Dataloader worker processes per training process: the CPUs shared among the processes on this machine, at most
    8 (Trainer's default of 0 decodes images on the training process, which starves a GPU). Not persistent: each
    epoch's workers must see the dataset's new epoch for their crops (TransformedImageDataset.set_epoch)."""
    per_process = (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return min(8, per_process) if per_process > 1 else 0


@dataclass
class ModelArguments:
    """Where the model comes from: a checkpoint, or an architecture (a preset or a config file) with fields changed."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A SupMAE checkpoint to start from: a local directory or a Hub name."}
    )
    config_name: str | None = field(
        default=None,
        metadata={
            "help": f"Start from random weights with this architecture: a preset ({', '.join(SUPMAE_PRESETS)}) "
            "or a config file or directory."
        },
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": 'Config fields to change, e.g. "hidden_size=384,num_hidden_layers=6".'}
    )


def build_config(model_args: ModelArguments, **fields) -> SupMAEConfig:
    """
    The architecture to train: the config of `--model_name_or_path`, else `--config_name` (a preset or a config file;
    the released ViT-B/16 by default), with `--config_overrides` and the `fields` that are not None applied, then
    validated (a wrong field fails here, before any data is read).
    """
    if model_args.model_name_or_path and model_args.config_name:
        raise ValueError(
            "--model_name_or_path and --config_name both give the architecture: pass one (change fields of a "
            "checkpoint's config with --config_overrides)."
        )
    name = model_args.config_name or "vit-base-patch16"
    if model_args.model_name_or_path:
        config = SupMAEConfig.from_pretrained(model_args.model_name_or_path)
    elif name in SUPMAE_PRESETS:
        config = SupMAEConfig.from_preset(name)
    elif os.path.exists(name):
        config = SupMAEConfig.from_pretrained(name)
    else:
        raise ValueError(
            f"--config_name {name!r} is neither a preset ({', '.join(SUPMAE_PRESETS)}) nor an existing config file "
            "or directory."
        )
    if model_args.config_overrides:
        apply_config_overrides(config, model_args.config_overrides)
    for key, value in fields.items():
        if value is not None:
            setattr(config, key, value)
    return SupMAEConfig.from_dict(config.to_dict())


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
        default=None, metadata={"help": "Label column (default: detected); 'none' for no labels."}
    )
    train_val_split: float = field(
        default=0.05, metadata={"help": "Fraction of train held out for validation when there is no validation split."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only this many training images."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only this many validation images."})
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset (requires --max_steps)."})
    shuffle_buffer_size: int = field(default=10_000, metadata={"help": "Shuffle buffer when streaming."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache downloaded models and datasets."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow Hub code for the model or dataset."})
    bad_images: Literal["skip", "error"] = field(
        default="skip",
        metadata={
            "help": "An unreadable image (corrupt, truncated, empty, not an image, a decompression bomb): 'skip' "
            "logs it, lists it in OUTPUT_DIR/skipped_images.tsv and goes on; 'error' stops the run, naming it."
        },
    )


@dataclass
class SupMAETrainingArguments(TrainingArguments):
    """TrainingArguments with both scripts' defaults, and what to do when the loss stops being finite."""

    max_grad_norm: float = field(
        default=0.0, metadata={"help": "Clip gradients to this norm; 0 clips nothing (MAE and SupMAE do not clip)."}
    )
    on_nonfinite_loss: Literal["stop", "skip"] = field(
        default="stop",
        metadata={
            "help": "A NaN or infinite loss: 'stop' ends the run before that step's update, naming the step (the "
            "last checkpoint stays as it was); 'skip' drops that optimizer step (all its accumulated micro-batches) "
            "and goes on."
        },
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: the script selects columns."})
    optim: str = field(default="adamw_torch_fused", metadata={"help": "AdamW with its fused kernel."})
    dataloader_num_workers: int = field(
        default_factory=default_dataloader_workers,
        metadata={"help": "Worker processes decoding images: this machine's CPUs per training process, at most 8."},
    )
    dataloader_pin_memory: bool = field(
        default_factory=torch.cuda.is_available, metadata={"help": "Pin batches in memory (true with a GPU)."}
    )
    dataloader_drop_last: bool = field(
        default=True,
        metadata={"help": "Drop the last incomplete training batch (MAE does; one image breaks BatchNorm)."},
    )
    report_to: None | str | list[str] = field(
        default=DEFAULT_REPORT_TO, metadata={"help": "Where to report logs: TensorBoard when it is installed."}
    )
    license: str | None = field(
        default=None,
        metadata={
            "help": "The licence the model card declares for the trained weights (a Hub licence identifier, e.g. "
            "apache-2.0, mit, cc-by-4.0), where the starting weights declare none: a run from scratch (default "
            "apache-2.0, the project's) or from a checkpoint without a card. Weights started from a checkpoint whose "
            "card declares a licence keep it (the official SupMAE weights' cc-by-nc-4.0)."
        },
    )

    def __post_init__(self):
        # Values Trainer would take and fail on later (a ZeroDivisionError, torch's message after the output folder
        # was made, an ImportError traceback), or train nothing with: refused while the arguments are read.
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be a positive integer, got {getattr(self, name)}.")
        if self.max_steps <= 0 and not self.num_train_epochs > 0:
            raise ValueError(
                f"--num_train_epochs {self.num_train_epochs:g} trains nothing: give a positive number of epochs, or "
                "--max_steps."
            )
        if self.license is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", self.license):
            raise ValueError(
                f"--license {self.license!r} is not a Hub licence identifier: lowercase letters, digits, '.', '+' and "
                "'-', e.g. apache-2.0, mit, cc-by-4.0 (the Hub's list: https://huggingface.co/docs/hub/repositories-licenses)."
            )
        if self.deepspeed and importlib.util.find_spec("deepspeed") is None:
            raise ValueError("--deepspeed needs the deepspeed package: pip install deepspeed.")
        super().__post_init__()
        check_launch(self)


def apply_config_overrides(config, overrides: str) -> list[str]:
    """Apply `--config_overrides` ("field=value,field=value") to `config`; returns the fields set. A field the config
    does not have is an error that names the closest valid ones."""
    keys = [item.split("=")[0].strip() for item in overrides.split(",") if item.strip()]
    known = set(config.to_dict())
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise ValueError(
                f"--config_overrides: {key!r} is not a field of {type(config).__name__}.{hint} Its fields are: "
                f"{', '.join(sorted(k for k in known if not k.startswith('_')))}."
            )
    config.update_from_string(overrides)
    return keys
