# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""What run_pretraining.py and run_classification.py share: the data arguments, the train/validation splits they
describe, logging set-up, and where to resume from."""

import importlib.util
import json
import logging
import os
import sys
from dataclasses import dataclass, field

import transformers
from transformers import HfArgumentParser

from .data import DIGITS, class_names, find_image_column, find_label_column, load_image_datasets
from .training import last_complete_checkpoint


logger = logging.getLogger(__name__)

# TensorBoard when it is installed; nothing otherwise.
DEFAULT_REPORT_TO = "tensorboard" if importlib.util.find_spec("tensorboard") else "none"


def default_dataloader_workers() -> int:
    """Dataloader worker processes per training process: the CPUs shared among the processes on this machine, at most
    8 (Trainer's default of 0 decodes images on the training process, which starves a GPU). Not persistent: each
    epoch's workers must see the dataset's new epoch for their crops (TransformedImageDataset.set_epoch)."""
    per_process = (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return min(8, per_process) if per_process > 1 else 0


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


def parse_arguments(dataclass_types: tuple, argv: list[str]) -> tuple[tuple, set[str]]:
    """Flags, or one JSON file holding them all, into `dataclass_types`; also the names that were given."""
    parser = HfArgumentParser(dataclass_types)
    if len(argv) == 1 and argv[0].endswith(".json"):
        with open(argv[0]) as file:
            given = set(json.load(file))
        return parser.parse_json_file(os.path.abspath(argv[0])), given
    given = {argument[2:].split("=")[0] for argument in argv if argument.startswith("--")}
    return parser.parse_args_into_dataclasses(args=argv), given


@dataclass
class PreparedData:
    splits: dict  # every split the source has (e.g. the digits' "test")
    train: object
    validation: object | None
    image_column: str
    label_column: str | None
    class_names: list[str] | None


def prepare_data(data_args: DataArguments, seed: int) -> PreparedData:
    """Load the splits, find the columns, hold out a validation split if there is none, cap the sizes."""
    splits = load_image_datasets(
        data_args.dataset_name,
        data_args.dataset_config_name,
        data_args.train_dir,
        data_args.validation_dir,
        streaming=data_args.streaming,
        cache_dir=data_args.cache_dir,
        trust_remote_code=data_args.trust_remote_code,
    )
    train = splits["train"]
    image_column = find_image_column(train, data_args.image_column_name)
    label_column = find_label_column(train, data_args.label_column_name)
    validation = splits.get("validation")
    if validation is None and not data_args.streaming and data_args.train_val_split > 0:
        held_out = train.train_test_split(data_args.train_val_split, seed=seed)
        train, validation = held_out["train"], held_out["test"]
    train = _cap(train, data_args.max_train_samples, data_args.streaming)
    validation = _cap(validation, data_args.max_eval_samples, data_args.streaming)
    return PreparedData(splits, train, validation, image_column, label_column, class_names(train, label_column))


def _cap(dataset, size: int | None, streaming: bool):
    if dataset is None or size is None:
        return dataset
    return dataset.take(size) if streaming else dataset.select(range(min(size, len(dataset))))


def configure_logging(training_args, script_logger: logging.Logger) -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO,
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    script_logger.setLevel(logging.INFO if training_args.should_log else logging.WARNING)


def resume_checkpoint(training_args) -> str | None:
    """The checkpoint to resume from (`--resume_from_checkpoint`, else the last complete one in the output
    directory); refuses to write over a finished run."""
    resume = training_args.resume_from_checkpoint
    if resume is None and os.path.isdir(training_args.output_dir):
        resume = last_complete_checkpoint(training_args.output_dir)
        if resume is None and os.path.isfile(os.path.join(training_args.output_dir, "model.safetensors")):
            raise FileExistsError(
                f"{training_args.output_dir} already holds a finished run (model.safetensors); choose another "
                "--output_dir or remove it."
            )
        if resume is not None:
            logger.warning(f"Resuming from the last checkpoint in the output directory: {resume}")
    return resume
