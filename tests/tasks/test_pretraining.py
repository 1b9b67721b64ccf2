"""supmae.tasks.pretraining (what run_pretraining.py runs) end to end on generated image folders: map-style and
streaming, with and without labels, the demo's arguments, GPU decoding's wiring, and the errors users meet first.
(Runs under torchrun and runs killed and resumed: tests/training/test_multiprocess.py; faults:
tests/tasks/test_reliability.py.)"""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from helpers import (
    QUIET,
    ROOT,
    demo_arguments,
    flags,
    pretrain,
    pretraining_arguments,
    script_env,
    tiny_config,
    write_image_folder,
)
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file

from supmae import SupMAEConfig, SupMAEForPreTraining
from supmae.data.gpu_decode import BatchDecoder
from supmae.reports.reconstruction_figure import figure_size
from supmae.tasks import pretraining
from supmae.training.pretraining import DeviceDecodingTrainer, SupMAETrainer


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_image_folder(root / "train", per_class=6)
    write_image_folder(root / "val", per_class=2)
    write_image_folder(root / "flat", per_class=6, flat=True)
    return root


@pytest.mark.slow
def test_map_style_with_labels_writes_a_complete_directory(folders, tmp_path):
    output = tmp_path / "out"
    metrics = pretrain(
        train_dir=folders / "train",
        validation_dir=folders / "val",
        output_dir=output,
        max_steps=4,
        eval_strategy="steps",
        eval_steps=2,
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
    peak = 1.5e-4 * 4 / 256  # warmup 5% of 4 steps = 1 step, then half-cycle cosine: update s uses f(s - 1)
    logged = [(entry["step"], entry["learning_rate"]) for entry in train_logs]
    assert logged == [(2, pytest.approx(peak)), (4, pytest.approx(peak / 4))]
    SupMAEForPreTraining.from_pretrained(output)  # loads without complaint


@pytest.mark.slow
def test_without_labels_it_is_mae(folders, tmp_path):
    metrics = pretrain(train_dir=folders / "flat", output_dir=tmp_path / "out", max_steps=3, train_val_split=0.25)
    assert "eval_reconstruction_loss" in metrics and "eval_classification_loss" not in metrics


@pytest.mark.slow
@pytest.mark.parametrize("labels", [True, False])
def test_streaming(folders, tmp_path, labels):
    data = dict(train_dir=folders / "train", validation_dir=folders / "val", streaming=True)
    metrics = pretrain(
        **data, max_steps=3, output_dir=tmp_path / "out", **({} if labels else {"label_column_name": "none"})
    )
    assert ("eval_classification_accuracy" in metrics) == labels
    assert os.path.isfile(tmp_path / "out" / "model.safetensors")


def test_a_stream_drops_its_last_incomplete_batch(folders, tmp_path):
    """9 streamed images at batch 4: each pass ends with a batch of one, which the supervised head's BatchNorm
    refuses in training. Trainer gives only map-style data drop_last; the script gives it to streams too."""
    pretrain(
        train_dir=folders / "train",
        streaming=True,
        max_train_samples=9,
        max_steps=6,
        output_dir=tmp_path / "out",
        eval_strategy="no",
        dataloader_num_workers=0,
    )
    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert history["global_step"] == 6 and history["epoch"] >= 2  # 2 batches per pass: 3 passes


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
        pretrain(*arguments, train_dir=folders / "train", output_dir=tmp_path / "out")
    assert not os.path.exists(tmp_path / "out" / "model.safetensors")


@pytest.mark.parametrize("flag", ["--bad_images", "--on_nonfinite_loss"])
def test_an_unknown_choice_is_refused_with_the_allowed_ones(folders, tmp_path, flag, capsys):
    with pytest.raises(SystemExit):
        pretrain(flag, "sometimes", train_dir=folders / "train", output_dir=tmp_path / "out")
    assert re.search(
        f"argument {flag}(/[-a-z]+)?: invalid choice: 'sometimes' \\(choose from '", capsys.readouterr().err
    )


def test_labels_outside_the_model_fail_before_training(folders, tmp_path):
    """Labels without class names (a plain integer column) that the checkpoint's classes do not cover. (Named classes
    other than the checkpoint's give the model the data's classes: tests/tasks/test_mistakes.py.)"""
    import datasets

    SupMAEForPreTraining(tiny_config(num_labels=1)).save_pretrained(tmp_path / "one-class")
    images = [Image.new("RGB", (32, 32), (40 * i, 0, 0)) for i in range(4)]
    data = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 0, 1]}).cast_column("image", datasets.Image())
    (tmp_path / "data").mkdir()
    data.to_parquet(str(tmp_path / "data" / "train.parquet"))
    message = r"The training data's column 'label' holds \d+ labels outside the model's 1 classes \(0..0\), e.g. 1"
    with pytest.raises(ValueError, match=message):
        pretrain(
            dataset_name=tmp_path / "data",
            output_dir=tmp_path / "out",
            model_name_or_path=tmp_path / "one-class",
            train_val_split=0,
        )
    assert not os.path.exists(tmp_path / "out" / "model.safetensors")


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="The train folder '/nonexistent' does not exist"):
        pretrain(train_dir="/nonexistent", output_dir=tmp_path / "out")


def test_a_finished_run_is_not_overwritten(folders, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "model.safetensors").write_bytes(b"finished weights")
    (output / "trainer_state.json").write_text("{}")  # written after the model: the run finished
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        pretrain(train_dir=folders / "train", output_dir=output)
    assert (output / "model.safetensors").read_bytes() == b"finished weights"


@pytest.mark.slow
def test_rerunning_finished_commands_reports_them_again(folders, tmp_path):
    """`make demo` twice: each script finds its finished run of the same command, exits 0 and prints the recorded
    results; nothing in the output directories is rewritten (issue 12: the second pretraining "resumed", trained 0
    steps and rewrote the folder with train_loss 0.0, then fine-tuning stopped with FileExistsError)."""
    data = dict(train_dir=folders / "train", validation_dir=folders / "val", dataloader_num_workers=0)
    pretrain_command = [
        sys.executable,
        os.path.join(ROOT, "run_pretraining.py"),
        *pretraining_arguments(**data, output_dir=tmp_path / "pre", max_steps=3, save_steps=1, save_total_limit=1),
    ]
    finetune_command = [
        sys.executable,
        os.path.join(ROOT, "run_classification.py"),
        *flags(per_device_train_batch_size=4, per_device_eval_batch_size=4),
        *QUIET,
        *flags(model_name_or_path=tmp_path / "pre", **data, output_dir=tmp_path / "ft", max_steps=2),
    ]
    env = script_env()
    first = [
        subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        for command in (pretrain_command, finetune_command)
    ]
    assert [result.returncode for result in first] == [0, 0], first[0].stderr[-2000:] + first[1].stderr[-2000:]
    snapshot = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert {path.name for path in snapshot} >= {"run_complete.json", "model.safetensors", "eval_validation.json"}
    second = [
        subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        for command in (pretrain_command, finetune_command)
    ]
    assert [result.returncode for result in second] == [0, 0], second[0].stderr[-2000:] + second[1].stderr[-2000:]
    for result in second:
        assert "already holds a finished run of this command" in result.stdout + result.stderr
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == snapshot
    validation = re.search(r"Validation: .*", first[0].stdout).group()
    assert validation in second[0].stdout  # the same results, printed again
    assert re.search(r"validation: top-1 \S+", first[1].stdout).group() in second[1].stdout


def test_a_run_resumed_from_its_last_checkpoint_trains_no_further(folders, tmp_path):
    """Killed after its last checkpoint but before its final save, a run resumes and stops there: Trainer alone
    would take a step past max_steps (checkpoint-4 of 3)."""
    arguments = dict(
        train_dir=folders / "train",
        output_dir=tmp_path / "out",
        max_steps=3,
        save_steps=1,
        save_total_limit=1,
        eval_strategy="no",
    )
    pretrain(**arguments)
    for name in ("run_complete.json", "model.safetensors", "trainer_state.json"):  # as if killed before these
        (tmp_path / "out" / name).unlink()
    saved = load_file(tmp_path / "out" / "checkpoint-3" / "model.safetensors")
    pretrain(**arguments)
    assert sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*")) == ["checkpoint-3"]
    assert json.loads((tmp_path / "out" / "trainer_state.json").read_text())["global_step"] == 3
    resumed = load_file(tmp_path / "out" / "model.safetensors")
    assert all(torch.equal(resumed[name], saved[name]) for name in saved)


def test_a_finished_run_of_another_command_is_not_overwritten(folders, tmp_path):
    pretrain(
        train_dir=folders / "train", output_dir=tmp_path / "out", max_steps=1, eval_strategy="no", save_strategy="no"
    )
    weights = (tmp_path / "out" / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match=r"holds a finished run of another command \(.*--max_steps 1"):
        pretrain(train_dir=folders / "train", output_dir=tmp_path / "out", max_steps=2)
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == weights


@pytest.mark.slow
def test_the_demo_arguments_run_on_the_built_in_digits(tmp_path):
    """`python run_pretraining.py` with no arguments uses DEMO_ARGUMENTS; run them for 3 steps into tmp_path."""
    quick = flags(
        output_dir=tmp_path / "demo",
        max_steps=3,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    metrics = pretraining.main([*demo_arguments("run_pretraining.py"), *quick])
    config = SupMAEConfig.from_pretrained(tmp_path / "demo")
    assert config.num_labels == 10 and config.image_size == 32 and config.patch_size == 4
    assert "eval_classification_accuracy" in metrics  # the final evaluation on the digits' validation split
    assert os.path.isfile(tmp_path / "demo" / "reconstructions.png")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--decode_device cuda decodes images on the training process's GPU, but it trains on cpu"),
        (["--streaming", "--max_steps", "2"], "works with map-style datasets .* not with --streaming"),
    ],
)
def test_decode_device_cuda_mistakes_fail_before_training(tmp_path, extra, message):
    write_image_folder(tmp_path / "train")
    with pytest.raises(ValueError, match=message):
        pretrain(*extra, train_dir=tmp_path / "train", output_dir=tmp_path / "out", decode_device="cuda")
    assert not os.path.exists(tmp_path / "out" / "model.safetensors")


def test_run_pretraining_wires_gpu_decoding(tmp_path, monkeypatch):
    """`--decode_device cuda` through the task, with the decoder put on the CPU (this machine has no GPU): the
    workers send encoded batches, the trainer decodes them ahead, evaluation batches come decoded by the workers."""
    made = {}
    original = BatchDecoder.for_transform

    def on_the_cpu(transform, device, bad_images=None, **kwargs):
        made["decoder"] = decoder = original(transform, "cpu", bad_images, **kwargs)
        pixels = decoder.pixels
        decoder.pixels = lambda batch: made.setdefault("encoded", []).append(len(batch.positions)) or pixels(batch)
        return decoder

    monkeypatch.setattr(pretraining, "check_device_decoding", lambda device, streaming: None)
    monkeypatch.setattr(BatchDecoder, "for_transform", staticmethod(on_the_cpu))
    seen = []
    monkeypatch.setattr(
        DeviceDecodingTrainer,
        "compute_loss",
        lambda self, model, inputs, *a, **k: (
            seen.append(type(inputs["pixel_values"])) or SupMAETrainer.compute_loss(self, model, inputs, *a, **k)
        ),
    )
    write_image_folder(tmp_path / "train", per_class=6)
    write_image_folder(tmp_path / "val", per_class=2)
    metrics = pretrain(
        train_dir=tmp_path / "train",
        validation_dir=tmp_path / "val",
        output_dir=tmp_path / "out",
        decode_device="cuda",
        max_steps=2,
        dataloader_num_workers=1,
    )
    assert "eval_reconstruction_loss" in metrics and made["decoder"].device.type == "cpu"
    assert made["encoded"] and all(count == 4 for count in made["encoded"])  # every training image came encoded
    assert seen and all(kind is torch.Tensor for kind in seen)  # the model only ever saw decoded pixels
    assert os.path.isfile(tmp_path / "out" / "model.safetensors")
