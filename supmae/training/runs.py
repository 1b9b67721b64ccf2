# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""A run's output directory: claimed before anything is written (one run at a time, never a model or a run that
this run did not start, never its own source), its recipe recorded so that only the same recipe resumes it, marked
finished last, and reported again (not retrained) when the same command runs again."""

import dataclasses
import enum
import errno
import json
import logging
import os
import shlex
import shutil
import tempfile

import torch
from transformers import TrainingArguments

from .checkpoints import checkpoint_steps, last_complete_checkpoint
from .files import write_json, write_text
from .lock import LOCK_FILE, OutputDirLock


logger = logging.getLogger(__name__)


RUN_RECORD = "run_complete.json"  # written last by a run that finished: its command and results
RUN_STARTED = "run_started.json"  # written first, before training: the script, its command and its recipe


def finished_run(output_dir: str, command) -> dict | None:
    """
    The record of a finished run of `command` in `output_dir` (`{"command", "results"}`), for the script to report
    again instead of training anew; None when the folder holds no finished run (a run killed before it wrote its
    record resumes from its last checkpoint). A finished run of another command, or a trained model without a
    record or a checkpoint, is never overwritten: FileExistsError.
    """
    path = os.path.join(output_dir, RUN_RECORD)
    if os.path.isfile(path):
        try:
            with open(path) as file:
                record = json.load(file)
        except (OSError, ValueError) as error:
            record = error
        if not isinstance(record, dict) or "command" not in record or not isinstance(record.get("results"), dict):
            raise FileExistsError(
                f"{path} is damaged ({record if isinstance(record, Exception) else 'not a run record'}): the folder "
                "holds a finished run whose record cannot be read. Choose another --output_dir, or remove the folder "
                "(or only that file, to resume from its last checkpoint)."
            )
        if record.get("command") == command:
            return record
        saved = record.get("command")
        saved = shlex.join(saved) if isinstance(saved, list) else json.dumps(saved)
        raise FileExistsError(
            f"{output_dir} holds a finished run of another command ({saved}); choose another --output_dir, or "
            "remove that folder to train again."
        )
    finished = all(os.path.isfile(os.path.join(output_dir, n)) for n in ("model.safetensors", "trainer_state.json"))
    started = os.path.isfile(os.path.join(output_dir, RUN_STARTED))  # then its own run, killed before its record
    if finished and not started and last_complete_checkpoint(output_dir) is None:  # else resumed (or run again)
        raise FileExistsError(
            f"{output_dir} already holds a finished run (model.safetensors); choose another --output_dir or remove it."
        )
    return None


def previous_results(output_dir: str, command) -> dict | None:
    """The results of a finished run of `command` in `output_dir`, which the task reports again instead of training
    anew (a warning says so); None when there is none (see `finished_run`)."""
    previous = finished_run(output_dir, command)
    if previous is None:
        return None
    logger.warning(
        f"{output_dir} already holds a finished run of this command: reporting its results instead of training "
        "again (remove it, or choose another --output_dir, to train anew)."
    )
    return previous["results"]


def write_model_card(output_dir: str, card: str) -> None:
    """The run's model card, `OUTPUT_DIR/README.md` (written whole or not at all)."""
    write_text(os.path.join(output_dir, "README.md"), card)


def record_finished_run(output_dir: str, command, results: dict) -> None:
    """Mark `output_dir` as a finished run of `command` with its `results`: the last file a run writes."""
    write_json(os.path.join(output_dir, RUN_RECORD), {"command": command, "results": results})


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
        what = (
            f"{copies} checkpoints (--save_total_limit {limit}, plus the one being written)"
            if limit
            else ("a checkpoint")
        )
    free = shutil.disk_usage(directory).free
    if free < size * copies:
        raise OSError(
            errno.ENOSPC,
            f"--output_dir {directory} has {free / 2**20:.1f} MiB free; {what} of this model {'take' if copies > 1 else 'takes'} about "
            f"{size * copies / 2**20:.1f} MiB. Free some space or choose another directory.",
        )


# ------------------------------------------------------------------------------------------------------- the recipe

# The options that change neither the trained weights nor a number the run reports, by why they don't. Every other
# field of a script's argument dataclasses is part of its recipe (`run_recipe`). Measured on a 6-step pretraining run:
# --logging_steps 1, --save_strategy steps --save_steps 2 and --dataloader_num_workers 1 leave the weights
# bit-identical; an evaluation during training changes them (each evaluation's DataLoader draws a seed from the global
# generator, which drop path and the masking noise draw from next), so --eval_strategy, --eval_steps and the
# evaluation data are recipe fields; --per_device_eval_batch_size changed nothing (the same images, batched otherwise)
# and may change on a resume, after an evaluation ran out of memory, say.
NOT_RECIPE = {
    "where the run's files go and which are kept": (
        "output_dir resume_from_checkpoint save_strategy save_steps save_total_limit save_only_model "
        "save_on_each_node enable_jit_checkpoint cache_dir"
    ),
    "how progress is logged": (
        "logging_strategy logging_steps logging_first_step log_on_each_node logging_nan_inf_filter "
        "include_num_input_tokens_seen log_level log_level_replica disable_tqdm report_to run_name project "
        "trackio_space_id trackio_bucket_id trackio_static_space_id skip_memory_metrics debug"
    ),
    "what is pushed to the Hub, and what its card declares": (
        "push_to_hub hub_token hub_private_repo hub_model_id hub_strategy hub_always_push hub_revision license"
    ),
    "where and in what pieces the same computation runs": (
        "dataloader_num_workers dataloader_pin_memory dataloader_prefetch_factor dataloader_multiprocessing_context "
        "ddp_backend ddp_timeout local_rank per_device_eval_batch_size eval_accumulation_steps windows_per_batch"
    ),
    "what a run that gets through its start does the same either way": (
        "trust_remote_code bad_images"  # Hub code allowed; an unreadable image skipped, or the run stops
    ),
    "read by none of the scripts": "do_train do_eval do_predict",
    "what goes into a picture, not a number": "num_figure_images",
}
NOT_RECIPE_FIELDS = frozenset(name for names in NOT_RECIPE.values() for name in names.split())

# Options that name a local file or folder: recorded as absolute paths, so that `data` and `/abs/data` (or the same
# relative path from another working directory) are told apart by where they lead, not by how they are written.
PATH_FIELDS = (
    "model_name_or_path",
    "config_name",
    "dataset_name",
    "train_dir",
    "validation_dir",
    "deepspeed",
    "id2label",
)

NUM_PROCESSES = "number of processes"  # a recipe entry that is no option: it sets the effective batch with the others


def run_recipe(*arguments) -> dict:
    """
    The recipe of a run: every field of its argument dataclasses `arguments` that can change the trained weights or
    a number the run reports (all but `NOT_RECIPE`), by field name, as JSON values, local paths made absolute; and,
    with TrainingArguments among them, the number of processes (with the batch per process it makes the effective
    batch, and so the learning rate and the number of steps per epoch).
    """
    recipe = {}
    for group in arguments:
        if isinstance(group, TrainingArguments):
            values = group.to_dict()  # enums as their values, nested configs as dicts, tokens hidden
        else:
            values = {f.name: getattr(group, f.name) for f in dataclasses.fields(group)}
        for name, value in values.items():
            if name in NOT_RECIPE_FIELDS or name.startswith("_"):
                continue
            if name in PATH_FIELDS and isinstance(value, str) and os.path.exists(value):
                value = os.path.realpath(value)
            recipe[name] = _json_value(value)
        if isinstance(group, TrainingArguments):
            recipe[NUM_PROCESSES] = group.world_size
    return recipe


def _json_value(value):
    if isinstance(value, enum.Enum):
        return _json_value(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _json_value(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def recipe_differences(recorded: dict, recipe: dict) -> list[str]:
    """The entries whose values differ between a recorded recipe and this one, each `--name OLD -> NEW`. Entries that
    only one of them has (a field of another version of the package) are not compared."""
    differences = []
    for name, value in recipe.items():
        if name in recorded and _canonical(recorded[name]) != _canonical(value):
            label = name if " " in name else f"--{name}"
            differences.append(f"{label} {_shown(recorded[name])} -> {_shown(value)}")
    return differences


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True)


def _shown(value) -> str:
    if value is None:
        return "(unset)"
    return value if isinstance(value, str) and value else json.dumps(value)


def _shown_differences(differences: list[str], at_most: int = 8) -> str:
    shown = "; ".join(differences[:at_most])
    return shown + (f"; and {len(differences) - at_most} more" if len(differences) > at_most else "")


def _shown_command(command, at_most: int = 300) -> str:
    text = shlex.join(map(str, command)) if isinstance(command, list) else json.dumps(command)
    return text if len(text) <= at_most else text[: at_most - 4] + " ..."


# ------------------------------------------------------------------------------------------ claiming the directory

# What shows a model (in any format, with its config, card or processor) or a Trainer's run in a directory.
MODEL_FILES = frozenset(
    {
        "config.json",
        "preprocessor_config.json",
        "README.md",
        "trainer_state.json",
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
        "adapter_config.json",
        RUN_RECORD,
    }
)
MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf")


def model_files(output_dir: str) -> list[str]:
    """What in `output_dir` shows a model or a training run: weights in any format, `config.json`, a model card
    (`README.md`), an image processor's config, a Trainer's state, `checkpoint-N` folders."""
    if not os.path.isdir(output_dir):
        return []
    found = [f"{os.path.basename(path)}/" for _, path in sorted(checkpoint_steps(output_dir).items())]
    for name in sorted(os.listdir(output_dir)):
        if os.path.isfile(os.path.join(output_dir, name)) and (name in MODEL_FILES or name.endswith(MODEL_SUFFIXES)):
            found.append(name)
    return found


def started_run(run_dir: str) -> dict | None:
    """The record `run_started.json` of the run in `run_dir` (`{"script", "command", "recipe"}`), None when it has
    none; a damaged one is a FileExistsError naming it."""
    path = os.path.join(run_dir, RUN_STARTED)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as file:
            record = json.load(file)
    except (OSError, ValueError) as error:
        record = error
    if not isinstance(record, dict) or not isinstance(record.get("script"), str):
        raise FileExistsError(
            f"{path} is damaged ({record if isinstance(record, Exception) else 'not a run record'}): the folder holds "
            "a run whose settings cannot be read. Choose another --output_dir, or remove the folder."
        )
    return record


def _relation(path: str, other: str) -> str | None:
    """How the resolved `path` stands to the resolved `other`: "is", "lies inside", "holds", or None (apart)."""
    if path == other:
        return "is"
    if os.path.commonpath([path, other]) == other:
        return "lies inside"
    if os.path.commonpath([path, other]) == path:
        return "holds"
    return None


def check_apart_from_sources(output_dir: str, sources: dict[str, str | None]) -> None:
    """Refuse an `output_dir` that is, lies inside or holds one of the local files or folders the run reads
    (`sources`: option -> value; Hub names and unset options are skipped): the run would write its model, reports
    and checkpoints over what it reads, or rotate its checkpoints away."""
    resolved = os.path.realpath(output_dir)
    for option, source in sources.items():
        if not isinstance(source, str) or not source or not os.path.exists(source):
            continue
        relation = _relation(resolved, os.path.realpath(source))
        if relation is not None:
            raise ValueError(
                f"--output_dir {output_dir} {relation} {option} {source}: the run would write its model, reports "
                f"and checkpoints over what it reads. Choose an --output_dir apart from {source}."
            )


def local_sources(*arguments) -> dict[str, str | None]:
    """The options among `arguments` (argument dataclasses) that name what a run reads, by flag: the model, the
    config and the data."""
    names = ("model_name_or_path", "config_name", "dataset_name", "train_dir", "validation_dir")
    return {f"--{name}": getattr(group, name) for group in arguments for name in names if hasattr(group, name)}


class RunDirectory:
    """
    A run's claim on its --output_dir for the length of a `with` block. On entering:
    - the directory is apart from what the run reads (`check_apart_from_sources`);
    - its lock is taken (`OutputDirLock`): one run at a time;
    - a finished run of the same command is left for the script to report again (`previous_results`); of another
      command it is refused (`finished_run`);
    - otherwise the directory holds nothing that this run did not start: neither a model nor a run without a
      `run_started.json` (`model_files`), nor a run of another script, nor an unfinished run of another recipe
      (`recipe_differences`);
    - an explicit --resume_from_checkpoint belongs to a run of the same recipe, when its run recorded one;
    - `run_started.json` records the script, its command and its recipe (None: the script compares results one by
      one, as run_transfer.py does).
    The main process does this; the others wait for its verdict and raise its error, if there is one. On leaving, also
    after an error, the lock is released; a run that failed before it wrote anything takes its record back, so that a
    corrected command starts afresh.
    """

    def __init__(self, args, script: str, command, recipe: dict | None, sources: dict[str, str | None]):
        self.args, self.script, self.command, self.recipe, self.sources = args, script, command, recipe, sources
        self.output_dir = args.output_dir
        self.lock, self.recorded = None, False

    def __enter__(self) -> "RunDirectory":
        failure = None
        if self.args.process_index == 0:
            try:
                check_apart_from_sources(self.output_dir, self.sources)
                self.lock = OutputDirLock(self.output_dir).acquire()
                self.recorded = self._check_and_record()
            except Exception as error:  # every process learns of it, none is left waiting
                failure = error
                if self.lock is not None:
                    self.lock.release()
        failure = _main_process_verdict(self.args, failure)
        if failure is not None:
            raise failure
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if self.lock is None:
            return
        try:
            path = os.path.join(self.output_dir, RUN_STARTED)
            if kind is not None and self.recorded and set(os.listdir(self.output_dir)) <= {RUN_STARTED, LOCK_FILE}:
                os.unlink(path)
        finally:
            self.lock.release()

    def _check_and_record(self) -> bool:
        """The checks of the class docstring; returns whether it wrote `run_started.json`."""
        output_dir = self.output_dir
        if finished_run(output_dir, self.command) is not None:
            return False
        started = started_run(output_dir)
        if started is None:
            found = model_files(output_dir)
            if found:
                shown = ", ".join(found[:6]) + (", ..." if len(found) > 6 else "")
                raise FileExistsError(
                    f"--output_dir {output_dir} holds a model or a run that this script did not start there "
                    f"({shown}; no {RUN_STARTED}): this run would overwrite it. Choose another --output_dir (to "
                    "continue from a checkpoint in it, pass --resume_from_checkpoint with the new --output_dir)."
                )
        else:
            self._check_same_run(started, output_dir)
        resume = getattr(self.args, "resume_from_checkpoint", None)
        if resume and os.path.isdir(resume):
            self._check_resumed_checkpoint(resume)
        if started is None:
            write_json(
                os.path.join(output_dir, RUN_STARTED),
                {"script": self.script, "command": self.command, "recipe": self.recipe},
            )
            return True
        return False

    def _check_same_run(self, started: dict, output_dir: str) -> None:
        command = _shown_command(started.get("command"))
        if started["script"] != self.script:
            raise FileExistsError(
                f"--output_dir {output_dir} holds a run of {started['script']} ({command}), not of {self.script}. "
                "Choose another --output_dir."
            )
        differences = recipe_differences(started.get("recipe") or {}, self.recipe or {})
        if differences:
            raise FileExistsError(
                f"--output_dir {output_dir} holds an unfinished run started with other settings "
                f"({RUN_STARTED}): {_shown_differences(differences)}. Resuming it with these would train one model "
                f"with two recipes. Rerun its own command to resume it ({command}), or choose another --output_dir "
                "to start anew."
            )

    def _check_resumed_checkpoint(self, checkpoint: str) -> None:
        run_dir = os.path.dirname(os.path.realpath(checkpoint))
        if run_dir == os.path.realpath(self.output_dir):
            return  # its run is this one, compared above
        started = started_run(run_dir)
        if started is None:
            return  # a checkpoint whose run recorded nothing (plain Trainer's, or copied out of its run)
        differences = recipe_differences(started.get("recipe") or {}, self.recipe or {})
        if started["script"] != self.script:
            differences = [f"the script {started['script']} -> {self.script}"]
        if differences:
            raise ValueError(
                f"--resume_from_checkpoint {checkpoint} belongs to a run started with other settings "
                f"({os.path.join(run_dir, RUN_STARTED)}): {_shown_differences(differences)}. Resume it with that "
                f"run's settings, or start a new run from its weights with --model_name_or_path {checkpoint}."
            )


def _main_process_verdict(args, failure: BaseException | None) -> BaseException | None:
    """The main process's `failure` (None: none), handed to every process of a multi-process run."""
    if args.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        shared = [failure]
        torch.distributed.broadcast_object_list(shared, src=0)
        return shared[0]
    return failure
