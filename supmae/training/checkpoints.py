# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""The checkpoint protocol: a checkpoint is marked complete only once its files are on disk; resuming takes the
newest complete one, checks that every tensor loaded, and moves incomplete ones aside."""

import errno
import json
import logging
import os

import safetensors
import torch
from torch import nn


logger = logging.getLogger(__name__)


CHECKPOINT_COMPLETE = "checkpoint_complete.json"  # written last, after every file of a checkpoint is on disk


def mark_checkpoint_complete(checkpoint: str, step: int) -> None:
    """Sync every file of `checkpoint` to disk, then write `checkpoint_complete.json` (their sizes) atomically."""
    sizes = {}
    for root, _, names in os.walk(checkpoint):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as file:
                _fsync(file.fileno())
            sizes[os.path.relpath(path, checkpoint)] = os.path.getsize(path)
    partial = os.path.join(checkpoint, CHECKPOINT_COMPLETE + ".partial")
    with open(partial, "w") as file:
        json.dump({"step": step, "files": sizes}, file, indent=1)
        file.flush()
        _fsync(file.fileno())
    os.replace(partial, os.path.join(checkpoint, CHECKPOINT_COMPLETE))
    directory = os.open(checkpoint, os.O_RDONLY)
    try:
        _fsync(directory)
    finally:
        os.close(directory)


def _fsync(descriptor: int) -> None:
    """`os.fsync`, except on file systems that cannot (some network and FUSE mounts refuse it for directories or
    read-only descriptors): there the data is as durable as that file system makes it."""
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EROFS):
            raise


def checkpoint_problem(checkpoint: str, require_mark: bool = False) -> str | None:
    """Why `checkpoint` cannot be resumed from (None when it can): a missing or unreadable trainer_state.json, a
    missing (with `require_mark`) or unreadable `checkpoint_complete.json`, or files whose sizes differ from those it
    recorded. A checkpoint written by plain Trainer has no such record and is judged by its trainer_state.json, which
    Trainer writes last."""
    try:
        with open(os.path.join(checkpoint, "trainer_state.json")) as file:
            json.load(file)
    except FileNotFoundError:
        return "its save did not finish (no trainer_state.json)"
    except (OSError, ValueError) as error:
        return f"its trainer_state.json is unreadable ({error})"
    record = os.path.join(checkpoint, CHECKPOINT_COMPLETE)
    if not os.path.isfile(record):
        return f"it was never marked complete (no {CHECKPOINT_COMPLETE})" if require_mark else None
    try:
        with open(record) as file:
            sizes = dict(json.load(file)["files"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"its {CHECKPOINT_COMPLETE} is unreadable ({type(error).__name__}: {error})"
    for name, size in sizes.items():
        path = os.path.join(checkpoint, name)
        actual = os.path.getsize(path) if os.path.isfile(path) else None
        if actual != size:
            return f"{name} has {actual if actual is not None else 'no'} bytes, {size} when it was saved"
    return None


def verify_loaded_checkpoint(model: nn.Module, weights_file: str) -> None:
    """Raise unless the model holds exactly the tensors of `weights_file` (same names, same values)."""
    with safetensors.safe_open(weights_file, framework="pt") as checkpoint:
        saved = set(checkpoint.keys())
        state = model.state_dict()
        missing, unexpected = sorted(set(state) - saved), sorted(saved - set(state))
        if missing or unexpected:
            raise RuntimeError(
                f"Resuming from {weights_file}: the checkpoint and the model disagree. Not in the checkpoint: "
                f"{missing[:10]}; not in the model: {unexpected[:10]}."
            )
        different = [k for k in saved if not torch.equal(checkpoint.get_tensor(k), state[k].detach().cpu())]
        if different:
            raise RuntimeError(
                f"Resuming from {weights_file}: these tensors were not loaded: {sorted(different)[:10]}."
            )


def checkpoint_steps(output_dir: str) -> dict[int, str]:
    """The `checkpoint-N` folders of `output_dir`, by N."""
    found = {}
    for name in os.listdir(output_dir) if os.path.isdir(output_dir) else []:
        prefix, _, step = name.partition("-")
        if prefix == "checkpoint" and step.isdigit() and os.path.isdir(os.path.join(output_dir, name)):
            found[int(step)] = os.path.join(output_dir, name)
    return found


def run_marks_checkpoints(output_dir: str) -> bool:
    """Whether this output directory's checkpoints were written by SupMAE's trainers (one carries the mark): then a
    checkpoint without the mark is one whose save was cut short."""
    return any(
        os.path.isfile(os.path.join(path, CHECKPOINT_COMPLETE)) for path in checkpoint_steps(output_dir).values()
    )


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The `checkpoint-N` folder with the largest N that can be resumed from (`checkpoint_problem`); folders left
    incomplete by a killed run are skipped with a warning that says why."""
    require_mark = run_marks_checkpoints(output_dir)
    for _, checkpoint in sorted(checkpoint_steps(output_dir).items(), reverse=True):
        problem = checkpoint_problem(checkpoint, require_mark)
        if problem is None:
            return checkpoint
        logger.warning(f"Skipping {checkpoint}: {problem}.")
    return None


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
