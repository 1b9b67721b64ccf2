# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""The command line every entry point shares: arguments in (flags or one JSON file, a `--help` that reads top
down), one-paragraph errors out, logging, and the demos' smoke-run switch."""

import argparse
import dataclasses
import gc
import json
import logging
import os
import re
import sys
from collections.abc import Callable

import torch
import transformers
from huggingface_hub.errors import StrictDataclassError
from transformers import HfArgumentParser, TrainingArguments


QUICK_DEMO = "SUPMAE_QUICK"  # environment variable: the demos train only this many steps (a smoke run)


def demo_or_given(argv: list[str], demo: list[str] | None) -> tuple[list[str], bool]:
    """The arguments to run and whether they are the demo's: `demo` when `argv` is empty or starts with `--demo`
    (the flags after it override the demo's), cut to `SUPMAE_QUICK` steps (`with_quick_steps`); else `argv`."""
    if demo is None or (argv and argv[0] != "--demo"):
        return list(argv), False
    return with_quick_steps([*demo, *argv[1:]]), True


def with_quick_steps(arguments: list[str]) -> list[str]:
    """A demo's arguments, cut to N training steps when `SUPMAE_QUICK=N` is set (a smoke run: the README's tests
    use it)."""
    steps = os.environ.get(QUICK_DEMO)
    if not steps:
        return list(arguments)
    if not steps.isdigit() or int(steps) < 1:
        raise ValueError(f"{QUICK_DEMO}={steps!r}: set it to a number of training steps (e.g. 5), or unset it.")
    return [*arguments, "--max_steps", steps]


class ScriptParser(HfArgumentParser):
    """
    An `HfArgumentParser` for a run_*.py script whose `--help` reads top down: the script's description, its own
    options (those named in `first` leading), then the TrainingArguments whose defaults it changes, then every other
    TrainingArguments option. Each option shows the default the script really uses: `defaults[name]` where the
    script decides it later (e.g. per `--mode`), else the parsed default.

    HfArgumentParser adds each dataclass field with `add_argument`; this parser takes those calls, appends the
    default to the help and, once every field is known, adds them to its three argument groups in that order.
    """

    def __init__(self, dataclass_types, prog: str, description: str, defaults: dict | None = None, first=()):
        self._shown_defaults, self._first, self._pending = dict(defaults or {}), tuple(first), []
        super().__init__(
            dataclass_types,
            prog=prog,
            description=description,
            usage=f"python {prog} [options]   (or: python {prog} ARGS.json)",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,  # the scripts tell given options from defaults by their full names
        )
        self._add_pending_to_groups(prog)

    def add_argument(self, *names, **kwargs):
        if self._pending is None or kwargs.get("dest") == "help" or "-h" in names:
            return super().add_argument(*names, **kwargs)
        dest = kwargs.get("dest") or names[0].lstrip("-").replace("-", "_")
        if kwargs.get("action") == "store_false":  # the --no_x twin of a boolean option
            kwargs["help"] = f"Same as --{dest} false."
        elif kwargs.get("help") is not argparse.SUPPRESS:
            shown = self._shown_defaults.get(dest, _shown_default(kwargs.get("default")))
            text = (kwargs.get("help") or "").strip().replace("%", "%%")
            kwargs["help"] = text + (f" (default: {shown})" if shown is not None else "")
        self._pending.append((dest, names, kwargs))
        return None

    def _add_pending_to_groups(self, prog: str) -> None:
        pending, self._pending = self._pending, None
        own = self.add_argument_group(f"{prog} options")
        recipe = self.add_argument_group("Trainer options whose defaults this script sets")
        trainer = self.add_argument_group("Other Trainer options (Transformers' TrainingArguments)")
        group_of = {}  # by destination, so that a boolean's --no_x twin stays with it
        for dest, _, kwargs in pending:
            if dest not in group_of:
                if dest not in TRAINER_DEFAULTS:
                    group_of[dest] = own
                elif dest in self._shown_defaults or _changed(kwargs.get("default"), TRAINER_DEFAULTS[dest]):
                    group_of[dest] = recipe
                else:
                    group_of[dest] = trainer
        pending.sort(key=lambda item: group_of[item[0]] is own and item[0] not in self._first)  # stable
        for dest, names, kwargs in pending:
            group_of[dest].add_argument(*names, **kwargs)


TRAINER_DEFAULTS = {
    f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    for f in dataclasses.fields(TrainingArguments)
}


def _changed(value, trainer_default) -> bool:
    empty = (None, "", [], {})
    return not (value == trainer_default or (value in empty and trainer_default in empty))


def _shown_default(value) -> str | None:
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
    """Flags, or one JSON file holding them all, into the parser's dataclasses; also the names that were given. A JSON
    file's options go through the same parser as flags, so their values are checked the same way."""
    if len(argv) == 1 and argv[0].endswith(".json"):
        argv = arguments_from_json(argv[0])
    given = given_names(argv)
    *parsed, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")  # with the usage line; exit status 2
    return tuple(parsed), given


def arguments_from_json(path: str) -> list[str]:
    """The command line a JSON arguments file stands for: `{"max_steps": 3, "eval_datasets": ["a=b"], "bf16": true}`
    is `--max_steps 3 --eval_datasets a=b --bf16 true`; `null` and `[]` leave an option at its default."""
    try:
        with open(path) as file:
            options = json.load(file)
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read the arguments file {path}: {error}.") from None
    if not isinstance(options, dict):
        raise ValueError(
            f"The arguments file {path} holds a JSON {type(options).__name__}; it must hold an object of options, "
            'e.g. {"output_dir": "runs/mine", "max_steps": 1000}.'
        )
    argv = []
    for name, value in options.items():
        if value is None or value == []:
            continue
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, (list, dict)) for v in values) and not isinstance(value, dict):
            raise ValueError(f"The arguments file {path}: option {name!r} holds nested lists; give a list of values.")
        argv.append(f"--{name}")
        if value is True:  # a bare flag: a boolean's `--x` and `--fsdp` (which refuses "true") both mean true
            continue
        argv += [json.dumps(value)] if isinstance(value, dict) else [_flag_value(v) for v in values]
    return argv


def _flag_value(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def command_of(argv: list[str]):
    """What identifies a run's command: its flags, or the content of its one JSON argument file."""
    if len(argv) == 1 and argv[0].endswith(".json"):
        with open(argv[0]) as file:
            return json.load(file)
    return list(argv)


class TrainingStopped(RuntimeError):
    """A run that stopped for a reason its message explains (a non-finite loss, say): `run_script` prints the message
    without a traceback and exits with status 1."""


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
    except (ValueError, OSError, TrainingStopped, StrictDataclassError) as error:
        if os.environ.get("SUPMAE_TRACEBACK"):
            raise
        print(f"error: {user_message(error)}", file=sys.stderr)
        usage = (ValueError, FileNotFoundError, FileExistsError, StrictDataclassError)
        raise SystemExit(2 if isinstance(error, usage) else 1) from None
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gc.collect()  # the Trainer and its DDP wrapper may be left in reference cycles
            torch.distributed.destroy_process_group()


MAX_MESSAGE_LENGTH = 2000  # characters of an error message printed; the rest is cut (a value can be huge)


def user_message(error: BaseException) -> str:
    """The one paragraph `run_script` prints for `error`:
    - a configuration that huggingface_hub's strict dataclasses refused: the validator's own message (the field and
      what it allows), not the wrapper's;
    - an error raised in a dataloader worker, which PyTorch re-raises with the worker's traceback in its message: the
      error's own last line;
    - on one line, at most `MAX_MESSAGE_LENGTH` characters."""
    if isinstance(error, StrictDataclassError) and error.__cause__ is not None:
        message = f"Invalid configuration: {error.__cause__}"
    else:
        message = str(error)
    if "Original Traceback (most recent call last)" in message:  # torch.utils.data's ExceptionWrapper
        last = [line for line in message.strip().splitlines() if line.strip()][-1]
        message = re.sub(r"^[A-Za-z_][\w.]*: ", "", last)  # "supmae.data.images.BadImageError: Cannot read ..."
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE_LENGTH else message[: MAX_MESSAGE_LENGTH - 30] + " ... (message cut)"


class LineSafeHandler(logging.StreamHandler):
    """A StreamHandler that, on a terminal, first returns to the start of the line and clears it: a message logged
    while a progress bar is drawn (from a dataloader worker, say) gets a line of its own instead of being glued to
    the bar, which redraws itself below it."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self.stream, "isatty", lambda: False)():
            self.stream.write("\r\x1b[K")
        super().emit(record)


def configure_logging(training_args) -> None:
    """Log lines with their time, level and logger on stdout; the package's at INFO in the main process (WARNING in
    the others), Transformers' at the level the Trainer arguments ask for."""
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO,
        handlers=[LineSafeHandler(sys.stdout)],
    )
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    logging.getLogger("supmae").setLevel(logging.INFO if training_args.should_log else logging.WARNING)
