# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""What run_pretraining.py and run_classification.py share: the data arguments, the train/validation splits they
describe, logging set-up, and where to resume from."""

import argparse
import dataclasses
import difflib
import errno
import gc
import importlib.util
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import transformers
from transformers import HfArgumentParser, TrainingArguments

from .data import DIGITS, class_names, find_image_column, find_label_column, load_image_datasets
from .evaluation import write_json
from .training import checkpoint_problem, checkpoint_steps, last_complete_checkpoint, run_marks_checkpoints


logger = logging.getLogger(__name__)

# TensorBoard when it is installed; nothing otherwise.
DEFAULT_REPORT_TO = "tensorboard" if importlib.util.find_spec("tensorboard") else "none"


def default_dataloader_workers() -> int:
    """Dataloader worker processes per training process: the CPUs shared among the processes on this machine, at most
    8 (Trainer's default of 0 decodes images on the training process, which starves a GPU). Not persistent: each
    epoch's workers must see the dataset's new epoch for their crops (TransformedImageDataset.set_epoch)."""
    per_process = (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return min(8, per_process) if per_process > 1 else 0


QUICK_DEMO = "SUPMAE_QUICK"  # environment variable: the demos train only this many steps (a smoke run)


def demo_arguments(arguments: list[str]) -> list[str]:
    """A demo's arguments, cut to `SUPMAE_QUICK` steps when that variable is set (the README's tests use it)."""
    steps = os.environ.get(QUICK_DEMO)
    if not steps:
        return list(arguments)
    if not steps.isdigit() or int(steps) < 1:
        raise ValueError(f"{QUICK_DEMO}={steps!r}: set it to a number of training steps (e.g. 5), or unset it.")
    return [*arguments, "--max_steps", steps]


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


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option once (not its dashed alias) with a short metavar, and its help as `script_parser` wrote it."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.dest == "help":
            return super()._format_action_invocation(action)
        if action.nargs == 0:
            return action.option_strings[0]
        return f"{action.option_strings[0]} {self._format_args(action, _metavar(action))}"


def _metavar(action: argparse.Action) -> str:
    if action.choices:
        return "{" + ",".join(map(str, action.choices)) + "}"
    kind = getattr(action.type, "__name__", "value")
    return {"string_to_bool": "BOOL", "str": "TEXT"}.get(kind, kind.upper())


def script_parser(
    dataclass_types: tuple, prog: str, description: str, defaults: dict[str, str] | None = None, first=()
):
    """
    An `HfArgumentParser` for a run_*.py script whose `--help` reads top down: the script's description, its own
    options, then the TrainingArguments whose defaults it changes, then every other TrainingArguments option. Each
    option shows the default the script really uses: `defaults[name]` where the script decides it later (e.g. per
    `--mode`), else the parsed default. The options named in `first` lead the script's own.
    """
    parser = HfArgumentParser(
        dataclass_types,
        prog=prog,
        description=description,
        usage=f"python {prog} [options]   (or: python {prog} ARGS.json)",
        formatter_class=_HelpFormatter,
        allow_abbrev=False,  # the scripts tell given options from defaults by their full names
    )
    defaults = defaults or {}
    trainer_defaults = {
        f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        for f in dataclasses.fields(TrainingArguments)
    }
    options = parser._optionals  # argparse keeps each group's actions in a list; regroup them
    own = parser.add_argument_group(f"{prog} options")
    recipe = parser.add_argument_group("Trainer options whose defaults this script sets")
    trainer = parser.add_argument_group("Other Trainer options (Transformers' TrainingArguments)")
    group_of = {}  # by destination, so that a boolean's --no_x twin stays with it
    for action in list(options._group_actions):
        if action.dest == "help":
            continue
        options._group_actions.remove(action)
        if action.dest not in group_of:
            if action.dest not in trainer_defaults:
                group_of[action.dest] = own
            elif action.dest in defaults or _changed(action.default, trainer_defaults[action.dest]):
                group_of[action.dest] = recipe
            else:
                group_of[action.dest] = trainer
        group_of[action.dest]._group_actions.append(action)
        if isinstance(action, argparse._StoreFalseAction):  # the --no_x twin of a boolean option
            action.help = f"Same as --{action.dest} false."
        elif action.help is not argparse.SUPPRESS:
            shown = defaults.get(action.dest, _shown_default(action))
            help_text = (action.help or "").strip().replace("%", "%%")
            action.help = help_text + (f" (default: {shown})" if shown is not None else "")
    own._group_actions.sort(key=lambda action: action.dest not in first)  # stable: the rest keep their order
    return parser


def _changed(value, trainer_default) -> bool:
    empty = (None, "", [], {})
    return not (value == trainer_default or (value in empty and trainer_default in empty))


def _shown_default(action: argparse.Action) -> str | None:
    value = action.default
    if value is None or value == [] or value == {}:
        return None
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value.value if hasattr(value, "value") else value)


def given_names(argv: list[str]) -> set[str]:
    """The options named on a command line (`--max_steps 3` -> "max_steps"), as their dataclass fields."""
    return {argument[2:].split("=")[0].replace("-", "_") for argument in argv if argument.startswith("--")}


def parse_arguments(parser: HfArgumentParser, argv: list[str]) -> tuple[tuple, set[str]]:
    """Flags, or one JSON file holding them all, into the parser's dataclasses; also the names that were given."""
    if len(argv) == 1 and argv[0].endswith(".json"):
        with open(argv[0]) as file:
            given = set(json.load(file))
        return parser.parse_json_file(os.path.abspath(argv[0])), given
    given = given_names(argv)
    *parsed, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")  # with the usage line; exit status 2
    return tuple(parsed), given


def run_script(main: Callable, argv: list[str] | None = None):
    """Run a script's `main` from the command line:
    - a mistake (a bad argument, path or value, an unreadable image with --bad_images error, a non-finite loss) ends
      with its one-paragraph message on stderr, without a traceback, and exit status 2 (1 for failures while
      training); `SUPMAE_TRACEBACK=1` shows the traceback instead;
    - a multi-process run then destroys its process group before the interpreter exits. Left to exit, gloo's worker
      threads could still be releasing the last collective's tensors while Python finalizes; the thread then dies
      inside a C++ destructor and the process aborts ("terminate called without an active exception"). Destroying
      the group joins those threads once nothing else holds it (main's DDP wrapper is gone by then)."""
    try:
        return main(argv)
    except (ValueError, OSError, RuntimeError) as error:
        expected = isinstance(error, (ValueError, OSError)) or type(error).__name__ == "NonFiniteLossError"
        if not expected or os.environ.get("SUPMAE_TRACEBACK"):
            raise
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        raise SystemExit(2 if isinstance(error, (ValueError, FileNotFoundError, FileExistsError)) else 1) from None
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gc.collect()  # the Trainer and its DDP wrapper may be left in reference cycles
            torch.distributed.destroy_process_group()


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


class LineSafeHandler(logging.StreamHandler):
    """A StreamHandler that, on a terminal, first returns to the start of the line and clears it: a message logged
    while a progress bar is drawn (from a dataloader worker, say) gets a line of its own instead of being glued to
    the bar, which redraws itself below it."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self.stream, "isatty", lambda: False)():
            self.stream.write("\r\x1b[K")
        super().emit(record)


def configure_logging(training_args, script_logger: logging.Logger) -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO,
        handlers=[LineSafeHandler(sys.stdout)],
    )
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    script_logger.setLevel(logging.INFO if training_args.should_log else logging.WARNING)


RUN_RECORD = "run_complete.json"  # written last by a run that finished: its command and results


def finished_run(output_dir: str, command) -> dict | None:
    """
    The record of a finished run of `command` in `output_dir` (`{"command", "results"}`), for the script to report
    again instead of training anew; None when the folder holds no finished run (a run killed before it wrote its
    record resumes from its last checkpoint). A finished run of another command, or a trained model without a
    record or a checkpoint, is never overwritten: FileExistsError.
    """
    path = os.path.join(output_dir, RUN_RECORD)
    if os.path.isfile(path):
        with open(path) as file:
            record = json.load(file)
        if record.get("command") == command:
            return record
        saved = record.get("command")
        saved = shlex.join(saved) if isinstance(saved, list) else json.dumps(saved)
        raise FileExistsError(
            f"{output_dir} holds a finished run of another command ({saved}); choose another --output_dir, or "
            "remove that folder to train again."
        )
    finished = all(os.path.isfile(os.path.join(output_dir, n)) for n in ("model.safetensors", "trainer_state.json"))
    if finished and last_complete_checkpoint(output_dir) is None:  # else a run killed before its record: resume
        raise FileExistsError(
            f"{output_dir} already holds a finished run (model.safetensors); choose another --output_dir or remove it."
        )
    return None


def record_finished_run(output_dir: str, command, results: dict) -> None:
    """Mark `output_dir` as a finished run of `command` with its `results`: the last file a run writes."""
    write_json(os.path.join(output_dir, RUN_RECORD), {"command": command, "results": results})


def command_of(argv: list[str]):
    """What identifies a run's command: its flags, or the content of its one JSON argument file."""
    if len(argv) == 1 and argv[0].endswith(".json"):
        with open(argv[0]) as file:
            return json.load(file)
    return list(argv)


def resume_checkpoint(training_args) -> str | None:
    """The checkpoint to resume from: `--resume_from_checkpoint` (checked), else the last complete one in the output
    directory. Incomplete checkpoints newer than the one resumed from (left by a killed run) are renamed
    `incomplete-checkpoint-N[.k]`, out of the way of the steps about to be saved again. (Call `finished_run` first: a
    finished run is reported, not resumed.)"""
    output_dir, resume = training_args.output_dir, training_args.resume_from_checkpoint
    if resume is not None:
        problem = checkpoint_problem(resume) if os.path.isdir(resume) else "it is not a directory"
        if problem:
            raise ValueError(f"Cannot resume from --resume_from_checkpoint {resume}: {problem}.")
    elif os.path.isdir(output_dir):
        resume = last_complete_checkpoint(output_dir)
        if resume is not None:
            logger.warning(f"Resuming from the last complete checkpoint in the output directory: {resume}")
    if os.path.isdir(output_dir) and training_args.process_index == 0:
        resumed_step = 0
        if resume is not None:
            with open(os.path.join(resume, "trainer_state.json")) as file:
                resumed_step = json.load(file).get("global_step", 0)
        require_mark = run_marks_checkpoints(output_dir)
        for step, path in checkpoint_steps(output_dir).items():
            problem = checkpoint_problem(path, require_mark) if step > resumed_step else None
            if problem:
                target = os.path.join(output_dir, f"incomplete-{os.path.basename(path)}")
                suffix = 1
                while os.path.exists(target + (f".{suffix}" if suffix > 1 else "")):
                    suffix += 1
                target += f".{suffix}" if suffix > 1 else ""
                logger.warning(f"Renaming the incomplete {path} to {os.path.basename(target)}: {problem}.")
                os.replace(path, target)
    return resume


def configure_streaming(training_args, stream) -> None:
    """How a streamed training set reaches the processes. accelerate's default for streams is that process 0 reads and
    decodes every image and sends each process its batches. With at least as many shards as processes, each process
    reads and decodes its own shards instead (accelerate splits a `datasets` stream by shard when it does not
    dispatch); with fewer, process 0 keeps decoding for all, and the log says so."""
    processes, shards = training_args.world_size, getattr(stream, "n_shards", 1)
    if processes > 1 and shards < processes:
        logger.warning(
            f"The stream has {shards} shard(s) for {processes} processes: process 0 reads and decodes every image and "
            f"sends the others their batches. Stream a dataset of at least {processes} Parquet shards (python -m "
            "supmae.prepare_dataset writes them) for each process to decode its own."
        )
        return
    training_args.accelerator_config.dispatch_batches = False


def check_output_dir(training_args, model=None) -> None:
    """Before any training: `--output_dir` can be written and, given the `model` to train, its disk has room for the
    checkpoints kept at a time (the weights, and AdamW's two moments of every trainable parameter unless
    --save_only_model; save_total_limit + 1 of them, else one) or, without checkpoints, for the model."""
    directory = training_args.output_dir
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as error:
        raise OSError(
            error.errno,
            f"--output_dir {directory} is not writable ({error.strerror or error}); checkpoints and the trained model "
            "are written there. Choose another directory.",
        ) from error
    if model is None:
        return
    size = sum(t.numel() * 4 for t in [*model.parameters(), *model.buffers()])
    copies, what = 1, "the trained model"
    if training_args.save_strategy != "no":
        if not training_args.save_only_model:
            size += sum(2 * p.numel() * 4 for p in model.parameters() if p.requires_grad)
        # The newest checkpoint is written before the oldest is rotated away: save_total_limit + 1 at a time.
        limit = training_args.save_total_limit
        copies = limit + 1 if limit else 1
        what = f"{copies} checkpoints (--save_total_limit {limit}, plus the one being written)" if limit else (
            "a checkpoint")  # fmt: skip
    free = shutil.disk_usage(directory).free
    if free < size * copies:
        raise OSError(
            errno.ENOSPC,
            f"--output_dir {directory} has {free / 2**20:.1f} MiB free; {what} of this model {'take' if copies > 1 else 'takes'} about "
            f"{size * copies / 2**20:.1f} MiB. Free some space or choose another directory.",
        )


def check_labels(dataset, label_column: str | None, num_labels: int, split: str = "training") -> None:
    """Before training: every label of a map-style dataset is a class of the model (or -100, unlabeled). Streamed
    datasets are checked batch by batch instead (ImageCollator)."""
    if label_column is None or not hasattr(dataset, "__len__") or len(dataset) == 0:
        return
    labels = np.asarray(dataset.select_columns([label_column]).with_format("numpy")[label_column])
    labels = labels[labels != -100]
    bad = labels[(labels < 0) | (labels >= num_labels)]
    if len(bad):
        raise ValueError(
            f"The {split} data's column {label_column!r} holds {len(bad)} labels outside the model's {num_labels} "
            f"classes (0..{num_labels - 1}), e.g. {bad[0]}; set num_labels (--config_overrides num_labels=N) or pick "
            "the label column with --label_column_name."
        )
