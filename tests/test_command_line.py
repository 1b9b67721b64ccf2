"""What a newcomer meets on the command line: --help with the defaults the scripts really use, flags that are honored
or refused (never silently ignored), mistakes reported in one paragraph, and the smaller messages of issue 12."""

import io
import json
import logging
import os
import re
import subprocess
import sys

import pytest
from helpers import tiny_config, write_image_folder

from supmae import SupMAEForImageClassification, SupMAEForPreTraining
from supmae.cli import LineSafeHandler
from supmae.tasks import classification
from supmae.training.arguments import apply_config_overrides


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import run_classification  # noqa: E402
import run_pretraining  # noqa: E402


QUIET = [
    "--report_to",
    "none",
    "--disable_tqdm",
    "true",
    "--use_cpu",
    "true",
    "--dataloader_num_workers",
    "0",
    "--per_device_train_batch_size",
    "4",
    "--per_device_eval_batch_size",
    "4",
]
TINY_MODEL = (
    "image_size=32,patch_size=8,hidden_size=32,num_hidden_layers=2,num_attention_heads=4,"
    "intermediate_size=64,decoder_hidden_size=16,decoder_num_attention_heads=2,decoder_intermediate_size=32,"
    "supervised_head_hidden_size=16"
)


def help_text(script, capsys) -> str:
    with pytest.raises(SystemExit):
        script.main(["--help"])
    return capsys.readouterr().out


def option_help(text: str, option: str) -> str:
    """The help paragraph of `--option` in `--help`'s output, on one line."""
    match = re.search(rf"^  --{option}\b.*?(?=^  -|^\S|\Z)", text, re.M | re.S)
    assert match, f"--{option} is not in the help"
    return " ".join(match.group().split())


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_image_folder(root / "train", per_class=4)
    write_image_folder(root / "val", per_class=2)
    config = tiny_config(num_labels=2, id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
    SupMAEForPreTraining(config).save_pretrained(root / "pretrained")
    return root


# ----------------------------------------------------------------------------------------------------------- --help
def test_classification_help_shows_each_modes_real_defaults(capsys):
    text = help_text(run_classification, capsys)
    head = text.splitlines()[:20]
    assert head[0].startswith("usage: python run_classification.py [options]")
    assert any("Fine-tune, linearly probe or evaluate" in line for line in head)
    assert any(line.startswith("  --mode {finetune,linprobe,eval}") for line in head)
    expected = {
        "num_train_epochs": "(default: finetune: 100, linprobe: 90)",
        "weight_decay": "(default: finetune: 0.05, linprobe: 0.0)",
        "warmup_epochs": "(default: finetune: 5, linprobe: 10)",
        "base_learning_rate": "(default: finetune: 0.001, linprobe: 0.1)",
        "learning_rate": "(default: base_learning_rate x effective batch / 256)",
        "max_grad_norm": "(default: 0.0)",
        "mode": "(default: finetune)",
        "linprobe_optimizer": "(default: auto)",
        "adam_beta2": "(default: 0.999)",
    }
    for option, default in expected.items():
        assert option_help(text, option).endswith(default), option_help(text, option)
    # One default per option, and none that contradicts the script ("(default 0.75). (default: None)").
    assert "(default: None)" not in text and "(default: 3.0)" not in text
    for paragraph in re.split(r"\n(?=  -)", text):
        assert paragraph.count("default") <= 2, paragraph  # "base_learning_rate" may name it once
    # The script's own options, then the Trainer options it changes, then the others; all still there.
    order = [
        text.index(heading)
        for heading in (
            "run_classification.py options:",
            "Trainer options whose defaults this script sets:",
            "Other Trainer options",
        )
    ]
    assert order == sorted(order)
    assert text.index("--mode ") < text.index("--learning_rate ") < text.index("--logging_steps ")
    assert "--deepspeed" in text and "--gradient_accumulation_steps" in text


def test_pretraining_help_shows_the_recipe(capsys):
    text = help_text(run_pretraining, capsys)
    assert option_help(text, "mask_ratio").endswith("(default: the config's, 0.75)")
    assert option_help(text, "weight_decay").endswith("(default: 0.05)")
    assert option_help(text, "adam_beta2").endswith("(default: 0.95)")
    assert option_help(text, "warmup_steps").endswith("(default: 0.05)")
    assert option_help(text, "base_learning_rate").endswith("(default: 0.00015)")
    assert option_help(text, "on_nonfinite_loss").startswith("--on_nonfinite_loss {stop,skip}")
    # The same words as docs/RELIABILITY.md: skipping drops the whole optimizer step, not one micro-batch.
    assert "drops that optimizer step (all its accumulated micro-batches)" in option_help(text, "on_nonfinite_loss")
    docs = open(os.path.join(ROOT, "docs", "RELIABILITY.md")).read()
    assert "The whole optimizer step is skipped: the gradients of every micro-batch in its accumulation window" in docs


# -------------------------------------------------------------------------------------- flags honored or refused
@pytest.mark.slow
def test_an_explicit_learning_rate_is_the_one_trained_with(folders, tmp_path):
    """--learning_rate 0.05 trains at 0.05 (the scripts used to replace it by base_lr x batch / 256 = 2.3e-6). (The
    log shows the first parameter group's lr; layer decay 1 makes it the peak lr in fine-tuning too.)"""
    constant = [
        "--lr_scheduler_type",
        "constant",
        "--warmup_steps",
        "0",
        "--logging_steps",
        "1",
        "--max_steps",
        "2",
        "--save_strategy",
        "no",
    ]
    run_pretraining.main(
        [
            "--train_dir",
            str(folders / "train"),
            "--output_dir",
            str(tmp_path / "pre"),
            "--config_overrides",
            TINY_MODEL,
            "--learning_rate",
            "0.05",
            *constant,
            *QUIET,
        ]
    )
    run_classification.main(
        [
            "--model_name_or_path",
            str(folders / "pretrained"),
            "--train_dir",
            str(folders / "train"),
            "--output_dir",
            str(tmp_path / "ft"),
            "--learning_rate",
            "0.02",
            "--layer_decay",
            "1",
            *constant,
            *QUIET,
        ]
    )
    for folder, expected in (("pre", 0.05), ("ft", 0.02)):
        history = json.loads((tmp_path / folder / "trainer_state.json").read_text())["log_history"]
        rates = [entry["learning_rate"] for entry in history if "learning_rate" in entry]
        assert rates and all(rate == pytest.approx(expected) for rate in rates), (folder, rates)


def test_conflicting_or_ignored_flags_are_refused(folders, tmp_path):
    with pytest.raises(ValueError, match="--learning_rate and --base_learning_rate both set the learning rate"):
        run_pretraining.main(
            [
                "--train_dir",
                str(folders / "train"),
                "--output_dir",
                str(tmp_path / "a"),
                "--learning_rate",
                "0.1",
                "--base_learning_rate",
                "0.1",
            ]
        )
    parse = classification.parse
    with pytest.raises(ValueError, match="--learning_rate and --base_learning_rate both set the same thing"):
        parse(["--learning_rate", "0.1", "--base_learning_rate", "0.1", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="--warmup_steps and --warmup_epochs both set the same thing"):
        parse(["--warmup_steps", "3", "--warmup_epochs", "1", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="--optim sgd: run_classification.py builds MAE's optimizers itself"):
        parse(["--optim", "sgd", "--output_dir", str(tmp_path)])
    _, _, args = parse(["--warmup_steps", "3", "--output_dir", str(tmp_path)])
    assert args.warmup_steps == 3 and args.warmup_epochs is None  # honored, the recipe's epochs set aside
    values, _ = classification.training_schedule(args, effective_batch=8)
    assert "warmup_steps" not in values  # left as given


def test_abbreviated_options_are_refused_not_overwritten(tmp_path, capsys):
    """argparse would take --num_train for --num_train_epochs, and the recipe, which fills what was not given by its
    full name, would then overwrite it without a word."""
    with pytest.raises(SystemExit):
        classification.parse(["--num_train", "5", "--output_dir", str(tmp_path)])
    assert "unrecognized arguments: --num_train 5" in capsys.readouterr().err


def test_a_mistyped_config_field_names_the_closest_ones():
    config = tiny_config()
    with pytest.raises(ValueError, match=r"'hiden_size' is not a field of SupMAEConfig\. Did you mean hidden_size"):
        apply_config_overrides(config, "hiden_size=64")
    assert apply_config_overrides(config, "hidden_size=64,mask_ratio=0.5") == ["hidden_size", "mask_ratio"]
    assert (config.hidden_size, config.mask_ratio) == (64, 0.5)


# ---------------------------------------------------------------------------------------- one-paragraph mistakes
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


# ------------------------------------------------------------------------------------------------- smaller things


def test_an_evaluation_writes_no_runs_folder_in_the_working_directory(folders, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    model = SupMAEForImageClassification(tiny_config(num_labels=2, id2label={0: "cat", 1: "dog"}))
    model.save_pretrained(tmp_path / "clf")
    monkeypatch.chdir(tmp_path)
    run_classification.main(
        [
            "--mode",
            "eval",
            "--model_name_or_path",
            str(tmp_path / "clf"),
            "--output_dir",
            str(tmp_path / "eval"),
            "--eval_datasets",
            f"val={folders / 'val'}",
            *QUIET,
            "--report_to",
            "tensorboard",
        ]
    )
    assert not (tmp_path / "runs").exists()
    assert list((tmp_path / "eval" / "runs").iterdir())  # TensorBoard logged, in the output directory


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
