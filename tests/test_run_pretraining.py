"""run_pretraining.py end to end on generated image folders: map-style and streaming, with and without labels, and
the errors users meet first. (Runs under torchrun and runs killed and resumed: tests/test_multiprocess.py.)"""

import json
import os
import re
import sys

import pytest
from huggingface_hub import ModelCard
from PIL import Image
from test_data import write_image_folder

from supmae import SupMAEConfig, SupMAEForPreTraining
from supmae.visualization import figure_size


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import run_pretraining  # noqa: E402


TINY = [
    "--config_overrides", "image_size=32,patch_size=8,hidden_size=32,num_hidden_layers=2,num_attention_heads=4,"
    "intermediate_size=64,decoder_hidden_size=16,decoder_num_attention_heads=2,decoder_intermediate_size=32,"
    "supervised_head_hidden_size=16",
    "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--report_to", "none",
    "--disable_tqdm", "true", "--use_cpu", "true", "--num_figure_images", "2", "--logging_steps", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_image_folder(root / "train", per_class=6)
    write_image_folder(root / "val", per_class=2)
    write_image_folder(root / "flat", per_class=6, flat=True)
    return root


def run(*arguments):
    return run_pretraining.main([*TINY, *map(str, arguments)])


@pytest.mark.slow
def test_map_style_with_labels_writes_a_complete_directory(folders, tmp_path):
    output = tmp_path / "out"
    metrics = run(
        "--train_dir",
        folders / "train",
        "--validation_dir",
        folders / "val",
        "--output_dir",
        output,
        "--max_steps",
        4,
        "--eval_strategy",
        "steps",
        "--eval_steps",
        2,
    )
    assert {
        "eval_loss",
        "eval_reconstruction_loss",
        "eval_classification_loss",
        "eval_classification_accuracy",
    } <= set(metrics)
    files = set(os.listdir(output))
    assert {
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "README.md",
        "reconstructions.png",
        "modeling_supmae.py",
        "configuration_supmae.py",
        "image_processing_supmae.py",
    } <= files
    config = SupMAEConfig.from_pretrained(output)
    assert config.num_labels == 2 and config.id2label == {0: "cat", 1: "dog"} and config.hidden_size == 32
    # The figure: 2 validation images, 32 px tiles scaled to 128.
    assert Image.open(output / "reconstructions.png").size == figure_size(2, 128, 128)
    card = ModelCard.load(output / "README.md")
    assert card.data.library_name == "transformers" and "supmae" in card.data.tags
    assert "classification_accuracy" in card.text and "run_pretraining.py" in card.text
    # Logged separately during training, and the lr follows the scaling rule (1.5e-4 x 4 / 256).
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    train_logs = [entry for entry in history if "loss" in entry]
    assert train_logs and all("classification_accuracy" in entry for entry in train_logs)
    assert max(entry["learning_rate"] for entry in train_logs) <= 1.5e-4 * 4 / 256 + 1e-12
    SupMAEForPreTraining.from_pretrained(output)  # loads without complaint


@pytest.mark.slow
def test_without_labels_it_is_mae(folders, tmp_path):
    metrics = run(
        "--train_dir", folders / "flat", "--output_dir", tmp_path / "out", "--max_steps", 3, "--train_val_split", 0.25
    )
    assert "eval_reconstruction_loss" in metrics and "eval_classification_loss" not in metrics


@pytest.mark.slow
@pytest.mark.parametrize("labels", [True, False])
def test_streaming(folders, tmp_path, labels):
    arguments = [
        "--train_dir",
        folders / "train",
        "--validation_dir",
        folders / "val",
        "--streaming",
        "true",
        "--max_steps",
        3,
        "--output_dir",
        tmp_path / "out",
    ]
    metrics = run(*arguments, *([] if labels else ["--label_column_name", "none"]))
    assert ("eval_classification_accuracy" in metrics) == labels
    assert os.path.isfile(tmp_path / "out" / "model.safetensors")


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        (["--streaming", "true"], ValueError, "--streaming needs --max_steps"),
        (
            ["--image_column_name", "photo"],
            ValueError,
            r"`image_column_name` 'photo' is not a column.*\['image', 'label'\]",
        ),
        (["--label_column_name", "y"], ValueError, r"`label_column_name` 'y' is not a column.*\['image', 'label'\]"),
        (
            ["--config_name", "vit-gigantic"],
            ValueError,
            "neither a preset .*vit-base-patch16.* nor an existing config",
        ),
        (["--mask_ratio", "1.5"], Exception, r"`mask_ratio` must be in \[0, 1\), got 1.5"),
        (
            ["--model_name_or_path", "some/checkpoint", "--config_name", "vit-base-patch16"],
            ValueError,
            "--model_name_or_path and --config_name both give the architecture: pass one",
        ),
    ],
)
def test_mistakes_fail_before_training(folders, tmp_path, arguments, error, message):
    with pytest.raises(error, match=message):
        run("--train_dir", folders / "train", "--output_dir", tmp_path / "out", *arguments)
    assert not os.path.exists(tmp_path / "out" / "model.safetensors")


@pytest.mark.parametrize("flag", ["--bad_images", "--on_nonfinite_loss"])
def test_an_unknown_choice_is_refused_with_the_allowed_ones(folders, tmp_path, flag, capsys):
    with pytest.raises(SystemExit):
        run("--train_dir", folders / "train", "--output_dir", tmp_path / "out", flag, "sometimes")
    assert re.search(
        f"argument {flag}(/[-a-z]+)?: invalid choice: 'sometimes' \\(choose from '", capsys.readouterr().err
    )


def test_labels_outside_the_model_fail_before_training(folders, tmp_path):
    config = SupMAEConfig()
    config.update_from_string(TINY[1])
    config.num_labels = 1
    SupMAEForPreTraining(config).save_pretrained(tmp_path / "one-class")
    message = r"The training data's column 'label' holds \d+ labels outside the model's 1 classes \(0..0\), e.g. 1"
    with pytest.raises(ValueError, match=message):
        run("--train_dir", folders / "train", "--output_dir", tmp_path / "out", "--model_name_or_path",
            tmp_path / "one-class")  # fmt: skip
    assert not os.path.exists(tmp_path / "out" / "model.safetensors")


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="The train folder '/nonexistent' does not exist"):
        run("--train_dir", "/nonexistent", "--output_dir", tmp_path / "out")


def test_a_finished_run_is_not_overwritten(folders, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "model.safetensors").write_bytes(b"finished weights")
    (output / "trainer_state.json").write_text("{}")  # written after the model: the run finished
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        run("--train_dir", folders / "train", "--output_dir", output)
    assert (output / "model.safetensors").read_bytes() == b"finished weights"


@pytest.mark.slow
def test_the_demo_arguments_run_on_the_built_in_digits(tmp_path):
    """`python run_pretraining.py` with no arguments uses DEMO_ARGUMENTS; run them for 3 steps into tmp_path."""
    quick = ["--output_dir", str(tmp_path / "demo"), "--max_steps", "3", "--eval_strategy", "no",
             "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true"]  # fmt: skip
    metrics = run_pretraining.main([*run_pretraining.DEMO_ARGUMENTS, *quick])
    config = SupMAEConfig.from_pretrained(tmp_path / "demo")
    assert config.num_labels == 10 and config.image_size == 32 and config.patch_size == 4
    assert "eval_classification_accuracy" in metrics  # the final evaluation on the digits' validation split
    assert os.path.isfile(tmp_path / "demo" / "reconstructions.png")
