# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Files a run writes: whole or not at all (atomic text and JSON writes, JSON reports), and only inside its output
directory (a name that becomes part of a path is checked when the arguments are read, and the path again when it is
written)."""

import json
import os
import uuid
from pathlib import Path

import numpy as np
import torch


MAX_NAME_LENGTH = 100  # characters of a name that becomes a file or folder name (file systems allow 255 bytes)


def path_name_problem(name) -> str | None:
    """Why `name` cannot be one file or folder name inside an output directory, or None when it can: it must be a
    non-empty printable string of at most `MAX_NAME_LENGTH` characters, without a path separator ('/', or '\\' on
    Windows), and not '.' or '..'."""
    if not isinstance(name, str):
        return "it is not a string"
    if not name:
        return "it is empty"
    if "/" in name or "\\" in name:
        return "it holds a path separator"
    if name in (".", ".."):
        return f"{name!r} names a folder, not a file"
    if not name.isprintable():  # NUL, newlines, tabs, terminal escapes
        return "it holds a control character"
    if len(name) > MAX_NAME_LENGTH:
        return f"it is {len(name)} characters long, at most {MAX_NAME_LENGTH} are allowed"
    return None


def check_path_name(name, what: str) -> str:
    """`name`, when it can be one file or folder name inside an output directory (`path_name_problem`); else a
    ValueError that names `what` (the option or the file and field it came from), the value and the rule."""
    problem = path_name_problem(name)
    if problem is not None:
        raise ValueError(
            f"{what} {name!r} becomes a file or folder name in --output_dir, so it must be a single name: printable, "
            f"at most {MAX_NAME_LENGTH} characters, no '/' or '\\', not '.' or '..'; {problem}. Choose a name "
            "such as 'imagenet-r'."
        )
    return name


def path_inside(directory: str | os.PathLike, *parts: str) -> str:
    """`os.path.join(directory, *parts)`, checked to resolve (symbolic links followed, '..' applied) to a path inside
    `directory`: the last guard before a run writes a file whose name came from its arguments. A ValueError names
    the path and where it leads otherwise."""
    path = os.path.join(directory, *map(str, parts))
    root, resolved = os.path.realpath(directory), os.path.realpath(path)
    if resolved == root or os.path.commonpath([root, resolved]) != root:
        raise ValueError(
            f"Refusing to write {path}: it leads to {resolved}, outside the output directory {directory}. A name "
            "that becomes part of a path must be a single file name."
        )
    return path


def _to_builtin(value):
    """JSON-ready copy: numpy / torch scalars become Python numbers, arrays lists, paths strings."""
    if isinstance(value, dict):
        return {str(k): _to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_builtin(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray, torch.Tensor)):
        return _to_builtin(value.tolist()) if getattr(value, "ndim", 0) else value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_report(path: str | os.PathLike, name: str, metrics: dict, **info) -> dict:
    """
    Write one dataset's JSON report {"dataset": name, "metrics": metrics, **info} atomically (`write_json`).

    Returns:
        the report as written (plain Python values).
    """
    return write_json(path, {"dataset": name, "metrics": metrics, **info})


def write_json(path: str | os.PathLike, value) -> object:
    """
    Write `value` as JSON atomically (`write_text`).

    Returns:
        the value as written (plain Python values).
    """
    value = _to_builtin(value)
    write_text(path, json.dumps(value, indent=2) + "\n")
    return value


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` atomically: a temporary file in the same folder, synced, replaces `path` only once complete, so
    an interrupted run leaves the old file or none, never a half-written one. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "x") as f:  # created with the usual permissions (umask), unlike mkstemp's 0600
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
