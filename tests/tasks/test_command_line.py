"""What a newcomer meets on the tasks' command lines: --help with the defaults the scripts really use, flags that are
honored or refused (never silently ignored), and an evaluation that writes only into its output directory.
(Mistakes reported in one paragraph: tests/test_cli.py.)"""

import json
import os
import re

import pytest
from helpers import QUIET, ROOT, config_overrides, flags, tiny_config, write_image_folder

from supmae import SupMAEForImageClassification, SupMAEForPreTraining
from supmae.tasks import classification, pretraining


QUIET_RUN = [*QUIET, *flags(dataloader_num_workers=0, per_device_train_batch_size=4, per_device_eval_batch_size=4)]


def help_text(task, capsys) -> str:
    """What `--help` prints for a task (the script's `--help`: the script passes its arguments on)."""
    with pytest.raises(SystemExit):
        task.main(["--help"])
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
    text = help_text(classification, capsys)
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
    text = help_text(pretraining, capsys)
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
    constant = flags(lr_scheduler_type="constant", warmup_steps=0, logging_steps=1, max_steps=2, save_strategy="no")
    pretrain = flags(train_dir=folders / "train", output_dir=tmp_path / "pre", config_overrides=config_overrides())
    pretraining.main([*pretrain, *flags(learning_rate=0.05), *constant, *QUIET_RUN])
    finetune = flags(
        model_name_or_path=folders / "pretrained", train_dir=folders / "train", output_dir=tmp_path / "ft"
    )
    classification.main([*finetune, *flags(learning_rate=0.02, layer_decay=1), *constant, *QUIET_RUN])
    for folder, expected in (("pre", 0.05), ("ft", 0.02)):
        history = json.loads((tmp_path / folder / "trainer_state.json").read_text())["log_history"]
        rates = [entry["learning_rate"] for entry in history if "learning_rate" in entry]
        assert rates and all(rate == pytest.approx(expected) for rate in rates), (folder, rates)


def test_conflicting_or_ignored_flags_are_refused(folders, tmp_path):
    with pytest.raises(ValueError, match="--learning_rate and --base_learning_rate both set the learning rate"):
        pretraining.main(
            flags(train_dir=folders / "train", output_dir=tmp_path / "a", learning_rate=0.1, base_learning_rate=0.1)
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


# ------------------------------------------------------------------------------------------------- smaller things


def test_an_evaluation_writes_no_runs_folder_in_the_working_directory(folders, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    model = SupMAEForImageClassification(tiny_config(num_labels=2, id2label={0: "cat", 1: "dog"}))
    model.save_pretrained(tmp_path / "clf")
    monkeypatch.chdir(tmp_path)
    evaluation = flags(mode="eval", model_name_or_path=tmp_path / "clf", output_dir=tmp_path / "eval")
    classification.main(
        [*evaluation, *flags(eval_datasets=f"val={folders / 'val'}"), *QUIET_RUN, "--report_to", "tensorboard"]
    )
    assert not (tmp_path / "runs").exists()
    assert list((tmp_path / "eval" / "runs").iterdir())  # TensorBoard logged, in the output directory
