"""supmae.cli, the command line every entry point shares: a mistake is a one-paragraph `error:` (the scripts and
`python -m supmae.convert`), options are never abbreviated, and a log line starts on a line of its own."""

import io
import logging
import os
import subprocess
import sys

import pytest
from helpers import ROOT

from supmae.cli import LineSafeHandler
from supmae.tasks import classification


def test_abbreviated_options_are_refused_not_overwritten(tmp_path, capsys):
    """argparse would take --num_train for --num_train_epochs, and the recipe, which fills what was not given by its
    full name, would then overwrite it without a word."""
    with pytest.raises(SystemExit):
        classification.parse(["--num_train", "5", "--output_dir", str(tmp_path)])
    assert "unrecognized arguments: --num_train 5" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command, message",
    [
        (
            ["run_pretraining.py", "--config_name", "vit-tiny", "--output_dir", "x"],
            "error: --config_name 'vit-tiny' is neither a preset",
        ),
        (
            [
                "run_pretraining.py",
                "--dataset_name",
                "digits",
                "--config_overrides",
                "hiden_size=8",
                "--output_dir",
                "x",
            ],
            "error: --config_overrides: 'hiden_size' is not a field of SupMAEConfig. Did you mean hidden_size",
        ),
        (
            ["run_classification.py", "--mode", "linprobe", "--mixup", "0.8", "--output_dir", "x"],
            "error: --mixup: used only by --mode finetune, not --mode linprobe; remove it.",
        ),
        (["run_classification.py", "--mode", "probe"], "error: argument --mode: invalid choice: 'probe'"),
        (["-m", "supmae.visualization", "--model", "/nonexistent", "--images", "a.png"], "error: "),
    ],
)
def test_command_line_mistakes_are_one_paragraph(command, message, tmp_path):
    script = os.path.join(ROOT, command[0]) if command[0].endswith(".py") else command[0]
    result = subprocess.run(
        [sys.executable, script, *command[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and message in result.stderr, result.stderr
    assert not os.path.exists(tmp_path / "x" / "model.safetensors")


def test_converting_into_a_folder_with_a_model_is_a_one_line_error(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.safetensors").write_bytes(b"kept")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "supmae.convert",
            "--checkpoint",
            str(tmp_path / "missing.pth"),
            "--output_dir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'out'} already holds a model; choose another --output_dir or remove it."
    ]
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == b"kept"


def test_log_lines_start_on_a_line_of_their_own_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal("")
    stream.write(" 40%|████      | 4/10")  # a progress bar, not ended by a newline
    handler = LineSafeHandler(stream)
    handler.emit(logging.LogRecord("supmae.data", logging.WARNING, __file__, 1, "Skipping x", None, None))
    assert stream.getvalue() == " 40%|████      | 4/10\r\x1b[KSkipping x\n"
    plain = io.StringIO()
    LineSafeHandler(plain).emit(logging.LogRecord("x", logging.WARNING, __file__, 1, "Skipping x", None, None))
    assert plain.getvalue() == "Skipping x\n"  # a file or a pipe gets no control characters
