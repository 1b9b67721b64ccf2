"""Start-up mistakes a user's input can cause, each a one-paragraph `error:` (exit status 2) that names the flag, file
or field, with nothing written; and the smaller silent ones of the hostile-user audit (issue 19, items 9 and 10)."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from helpers import config_overrides, tiny_config, write_shapes_folder

from supmae import SupMAEForImageClassification, SupMAEForPreTraining
from supmae.cli import run_script, user_message
from supmae.data.images import BadImageError
from supmae.tasks import classification, pretraining, segmentation


TINY_OVERRIDES = config_overrides()
COMMON = ["--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true", "--dataloader_num_workers", "0"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes_folder(tmp_path_factory.mktemp("shapes"), per_class=4)


def fails_in_one_paragraph(main, argv, capsys) -> str:
    """`main(argv)` as the scripts run it: the exit status (2) and the one `error:` line it prints."""
    with pytest.raises(SystemExit) as exit_info:
        run_script(main, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def pretraining_arguments(shapes, output, *extra) -> list[str]:
    flags = f"--train_dir {shapes} --output_dir {output} --per_device_train_batch_size 4 --max_steps 1".split()
    return [*flags, "--config_overrides", TINY_OVERRIDES, *COMMON, *map(str, extra)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mask_ratio", "1.5"], r"Invalid configuration: `mask_ratio` must be in \[0, 1\), got 1.5."),
        (["--config_overrides", TINY_OVERRIDES + ",mask_ratio=-0.1"], r"`mask_ratio` must be in \[0, 1\), got -0.1"),
        (["--config_overrides", TINY_OVERRIDES + ",num_attention_heads=5"], r"must be divisible by `num_attention_h"),
        (["--gradient_accumulation_steps", "0"], r"--gradient_accumulation_steps must be a positive integer, got 0"),
        (["--per_device_train_batch_size", "0"], r"--per_device_train_batch_size must be a positive integer, got 0"),
        (["--num_train_epochs", "0", "--max_steps", "-1"], r"--num_train_epochs 0 trains nothing"),
    ],
)
def test_config_and_trainer_mistakes_are_one_paragraph_and_write_nothing(shapes, tmp_path, capsys, extra, message):
    line = fails_in_one_paragraph(pretraining.main, pretraining_arguments(shapes, tmp_path / "out", *extra), capsys)
    assert re.search(message, line), line
    assert not (tmp_path / "out").exists()


def test_a_config_file_of_the_wrong_type_is_named(shapes, tmp_path, capsys):
    config = tiny_config().to_dict()
    config["hidden_size"] = "64"
    (tmp_path / "config.json").write_text(json.dumps(config))
    argv = pretraining_arguments(shapes, tmp_path / "out")
    argv[argv.index("--config_overrides") : argv.index("--config_overrides") + 2] = ["--config_name", str(tmp_path)]
    line = fails_in_one_paragraph(pretraining.main, argv, capsys)
    assert "hidden_size" in line and "expected int, got str" in line, line


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('["--max_steps", "3"]', "holds a JSON list; it must hold an object of options"),
        ('{"output_dir": "o", "max_steps": "three"}', "argument --max_steps/--max-steps: invalid int value: 'three'"),
        ("{not json", "Cannot read the arguments file"),
    ],
)
def test_a_bad_arguments_file_is_named(tmp_path, capsys, content, message):
    path = tmp_path / "args.json"
    path.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        run_script(pretraining.main, [str(path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_arguments_file_means_what_its_flags_mean(tmp_path):
    path = tmp_path / "args.json"
    options = {"output_dir": "o", "max_steps": 3, "bf16": False, "label_column_name": None, "lr_scheduler_kwargs": {}}
    path.write_text(json.dumps({**options, "eval_datasets": [], "learning_rate": 0.5}))
    model_args, data_args, args, given = pretraining.parse([str(path)])
    assert (args.max_steps, args.bf16, args.learning_rate, data_args.label_column_name) == (3, False, 0.5, None)
    assert given == {"output_dir", "max_steps", "bf16", "lr_scheduler_kwargs", "learning_rate"}


def test_a_damaged_run_record_is_named(shapes, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run_complete.json").write_text('{"command": [')
    line = fails_in_one_paragraph(pretraining.main, pretraining_arguments(shapes, out), capsys)
    assert "run_complete.json is damaged" in line


def test_segmentation_scale_and_layer_decay_are_checked(tmp_path, capsys):
    base = f"--dataset_name digits --output_dir {tmp_path / 'out'} --crop_size 32 --stride 16".split()
    base += ["--config_overrides", TINY_OVERRIDES]
    line = fails_in_one_paragraph(segmentation.main, [*base, "--scale", "0", "0"], capsys)
    assert "--scale takes two positive sizes" in line
    line = fails_in_one_paragraph(segmentation.main, [*base, "--layer_decay", "-0.5"], capsys)
    assert "--layer_decay must be in (0, 1]" in line


def test_a_negative_layer_decay_is_refused_in_fine_tuning(tmp_path):
    with pytest.raises(ValueError, match=r"--layer_decay must be in \(0, 1\]"):
        classification.parse(["--output_dir", str(tmp_path), "--layer_decay", "-0.65"])


def test_deepspeed_without_the_package_is_named(tmp_path, capsys):
    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    (tmp_path / "ds.json").write_text("{}")
    argv = ["--output_dir", str(tmp_path / "out"), "--deepspeed", str(tmp_path / "ds.json")]
    line = fails_in_one_paragraph(pretraining.main, argv, capsys)
    assert "--deepspeed needs the deepspeed package" in line


class _Unreadable(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        raise BadImageError("Cannot read image a/b.jpg: truncated. (--bad_images skip skips such files.)")


def test_an_error_from_a_dataloader_worker_is_its_own_sentence():
    """PyTorch re-raises a worker's error with the worker's whole traceback in its message."""
    with pytest.raises(BadImageError) as raised:
        next(iter(torch.utils.data.DataLoader(_Unreadable(), num_workers=1)))
    assert "Original Traceback" in str(raised.value)
    assert user_message(raised.value) == "Cannot read image a/b.jpg: truncated. (--bad_images skip skips such files.)"


def test_a_message_is_cut_to_a_paragraph():
    assert len(user_message(ValueError("x" * 10**6))) <= 2000


def test_weights_without_a_config_are_named(tmp_path):
    SupMAEForPreTraining(tiny_config()).save_pretrained(tmp_path / "d")
    os.remove(tmp_path / "d" / "config.json")
    with pytest.raises(OSError, match="holds weights but no config.json") as raised:
        SupMAEForImageClassification.from_pretrained(str(tmp_path / "d"), num_labels=3)
    assert "ignore_mismatched_sizes" not in str(raised.value)


def test_continued_pretraining_on_other_classes_takes_the_datas_classes(shapes, tmp_path):
    checkpoint = tiny_config(num_labels=2, id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
    SupMAEForPreTraining(checkpoint).save_pretrained(tmp_path / "pretrained")
    argv = f"--train_dir {shapes} --output_dir {tmp_path / 'out'} --model_name_or_path {tmp_path / 'pretrained'}"
    argv = [*argv.split(), *COMMON, *"--per_device_train_batch_size 4 --max_steps 1 --eval_strategy no".split()]
    pretraining.main([*argv, "--num_figure_images", "0"])
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["id2label"] == {"0": "circle", "1": "square", "2": "triangle"}


def test_a_damaged_optimizer_state_is_named_without_torchs_advice(shapes, tmp_path):
    out = tmp_path / "out"
    argv = pretraining_arguments(shapes, out, "--save_steps", "1", "--eval_strategy", "no", "--num_figure_images", "0")
    pretraining.main(argv)
    checkpoint = out / "checkpoint-1"
    (checkpoint / "optimizer.pt").write_bytes(b"\x80\x02garbage" + b"\0" * 100)
    for name in ("run_complete.json", "model.safetensors"):
        os.remove(out / name)
    os.remove(checkpoint / "checkpoint_complete.json")  # judged by trainer_state.json, as plain Trainer's are
    env = {**os.environ, "PYTHONPATH": ROOT}
    script = os.path.join(ROOT, "run_pretraining.py")
    result = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Cannot resume from") and "optimizer" in last and "weights_only" not in last, last
