# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Files a run writes whole or not at all: atomic text and JSON writes, JSON reports."""

import json
import os
import uuid
from pathlib import Path

import numpy as np
import torch


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
