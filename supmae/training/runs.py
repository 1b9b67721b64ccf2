# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""A run's output directory: checked before training, marked finished last, and reported again (not retrained) when
the same command runs again."""

import errno
import json
import logging
import os
import shlex
import shutil
import tempfile

from .checkpoints import last_complete_checkpoint
from .files import write_json, write_text


logger = logging.getLogger(__name__)


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
    if finished and last_complete_checkpoint(output_dir) is None:  # else a run killed before its record: resume
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
