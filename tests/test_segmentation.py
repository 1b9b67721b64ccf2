"""Semantic segmentation: SupMAEBackbone, UperNet on it, loading encoders, mmsegmentation's ADE20K pipeline and
sliding-window evaluation, the metric, and run_segmentation.py end to end."""

import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_upernet, write_ade20k_folder
from PIL import Image
from transformers import TrainingArguments, pipeline

from supmae.data.segmentation import (
    UNLABELED_PIXEL,
    SegmentationDataset,
    SegmentationEvalTransform,
    ade20k_folder_datasets,
)
from supmae.metrics import segmentation_metrics
from supmae.training.optim import layer_decay_parameter_groups, layer_id
from supmae.training.segmentation import (
    SupMAESegmentationTrainer,
    pixel_cross_entropy,
    predict_segmentation,
    sliding_window_logits,
    window_boxes,
)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import run_segmentation  # noqa: E402


# ------------------------------------------------------------------------------------------------------ backbone


def test_layer_decay_groups_of_upernet():
    """Embeddings layer 0, block i layer i + 1, the pyramid and both heads the top layer (ViT-B depth: 13)."""
    model = tiny_upernet(num_hidden_layers=12, hidden_size=16)
    expected = {
        "backbone.supmae.embeddings.cls_token": 0,
        "backbone.supmae.layers.0.mlp.fc1.weight": 1,
        "backbone.supmae.layers.11.attention.o_proj.bias": 12,
        "backbone.fpn.levels.0.0.weight": 13,
        "decode_head.classifier.weight": 13,
        "auxiliary_head.classifier.bias": 13,
    }
    groups = layer_decay_parameter_groups(model, weight_decay=0.05, layer_decay=0.65)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    parameters = dict(model.named_parameters())
    for name, layer in expected.items():
        assert layer_id(name, 12) == layer
        assert scale_of[id(parameters[name])] == pytest.approx(0.65 ** (13 - layer)), name
    assert len({round(s, 12) for s in scale_of.values()}) == 14


# -------------------------------------------------------------------------------------------------------- metric
def test_segmentation_metrics_against_a_hand_built_confusion_matrix():
    """Two images of different sizes, one confusion matrix over both. Classes 0..3; 255 ignored; class 2 is only
    predicted (IoU 0, accuracy NaN); class 3 appears nowhere (NaN, out of the means)."""
    references = [np.array([[0, 0, 1], [1, 255, 0]]), np.array([[1, 1], [1, 0], [255, 255]])]
    predictions = [np.array([[0, 1, 1], [2, 0, 0]]), torch.tensor([[1, 1], [0, 0], [3, 3]])]
    # Counted by hand, reference -> prediction over the 5 + 4 labelled pixels:
    #   image 1: 0->0, 0->1, 1->1, 1->2, 0->0;  image 2: 1->1, 1->1, 1->0, 0->0.
    #   So reference 0: 4 pixels, 3 right; reference 1: 5 pixels, 3 right. Predicted 0: 4, 1: 4, 2: 1, 3: 0.
    metrics = segmentation_metrics(predictions, references, num_labels=4)
    iou = [3 / (4 + 4 - 3), 3 / (5 + 4 - 3), 0.0, float("nan")]
    accuracy = [3 / 4, 3 / 5, float("nan"), float("nan")]
    np.testing.assert_allclose(metrics["per_category_iou"], iou, rtol=1e-12)
    np.testing.assert_allclose(metrics["per_category_accuracy"], accuracy, rtol=1e-12)
    assert metrics["mean_iou"] == pytest.approx((iou[0] + iou[1] + 0.0) / 3, rel=1e-12)
    assert metrics["mean_accuracy"] == pytest.approx((3 / 4 + 3 / 5) / 2, rel=1e-12)
    assert metrics["overall_accuracy"] == pytest.approx(6 / 9, rel=1e-12)
    # Not a mean of per-image scores: image 1 alone has aAcc 3/5, image 2 alone 3/4.
    assert metrics["overall_accuracy"] != pytest.approx((3 / 5 + 3 / 4) / 2)


def test_segmentation_metrics_refuse_labels_outside_the_classes():
    with pytest.raises(ValueError, match=r"A reference holds class 150, outside the 150 classes \(0..149\)"):
        segmentation_metrics([np.zeros((2, 2), int)], [np.full((2, 2), 150)], num_labels=150)
    with pytest.raises(ValueError, match="resize the prediction to the annotation"):
        segmentation_metrics([np.zeros((2, 2), int)], [np.zeros((2, 3), int)], num_labels=2)


# --------------------------------------------------------------------------------------------- sliding windows
class PositionalToyModel(torch.nn.Module):
    """Logits that depend on the window's content AND on the position inside it, so that averaging the wrong windows,
    or misplacing one, changes the result."""

    def forward(self, pixel_values):
        ramp = torch.arange(pixel_values.shape[-1], dtype=torch.float32) / 7
        logits = torch.stack([pixel_values[:, 0] + ramp, pixel_values[:, 1] * 2 - ramp, pixel_values.mean(1) ** 2], 1)
        return SimpleNamespace(logits=logits + pixel_values.mean(dim=(1, 2, 3))[:, None, None, None])


@pytest.mark.parametrize("size", [(50, 70), (41, 32), (32, 97)])
def test_sliding_windows_average_every_window_that_covers_a_pixel(size):
    """Sizes that are not multiples of the stride, against windows enumerated independently: tops 0, s, 2s, ... below
    H - crop, then H - crop."""
    crop, stride = 32, 21
    pixel_values = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    model = PositionalToyModel()
    logits = sliding_window_logits(model, pixel_values, crop, stride, num_labels=3, windows_per_batch=3)
    tops = sorted(set(range(0, size[0] - crop, stride)) | {size[0] - crop})
    lefts = sorted(set(range(0, size[1] - crop, stride)) | {size[1] - crop})
    total, count = torch.zeros(2, 3, *size), torch.zeros(size)
    for top in tops:
        for left in lefts:
            total[:, :, top : top + crop, left : left + crop] += model(
                pixel_values[:, :, top : top + crop, left : left + crop]
            ).logits
            count[top : top + crop, left : left + crop] += 1
    assert count.min() >= 1
    torch.testing.assert_close(logits, total / count, rtol=0, atol=1e-6)
    assert len(window_boxes(*size, (crop, crop), (stride, stride))) == len(tops) * len(lefts)


def test_one_window_is_whole_image_inference_and_small_images_are_padded():
    torch.manual_seed(0)
    model = tiny_upernet().eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        whole = model(pixel_values).logits
    torch.testing.assert_close(sliding_window_logits(model, pixel_values, 32, 21, 3), whole, rtol=0, atol=0)
    small = torch.randn(1, 3, 24, 16)
    with torch.no_grad():
        padded = model(F.pad(small, (0, 16, 0, 8))).logits[:, :, :24, :16]
    torch.testing.assert_close(sliding_window_logits(model, small, 32, 21, 3), padded, rtol=0, atol=0)


def test_sliding_windows_of_a_real_model_match_one_window_at_a_time():
    """Batching the windows of two images (window-major) must not mix images or windows up."""
    torch.manual_seed(0)
    model = tiny_upernet().eval()
    pixel_values = torch.randn(2, 3, 40, 56)
    logits = sliding_window_logits(model, pixel_values, 32, 24, 3, windows_per_batch=4)
    expected = torch.zeros_like(logits)
    count = torch.zeros(40, 56)
    with torch.no_grad():
        for top, left, bottom, right in window_boxes(40, 56, (32, 32), (24, 24)):
            for b in range(2):
                expected[b, :, top:bottom, left:right] += model(
                    pixel_values[b : b + 1, :, top:bottom, left:right]
                ).logits[0]
            count[top:bottom, left:right] += 1
    torch.testing.assert_close(logits, expected / count, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------------- trainer
def test_the_trainer_loss_is_upernets_with_mmsegs_normalization(tmp_path):
    """Decode + 0.4 x auxiliary cross-entropy: with no ignored pixel it equals UperNet's own loss; with ignored pixels
    it is divided by all pixels (mmsegmentation), not by the labelled ones (UperNet)."""
    torch.manual_seed(0)
    model = tiny_upernet().eval()
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = SupMAESegmentationTrainer(model=model, args=args, crop_size=32, stride=16)
    pixel_values, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    with torch.no_grad():
        ours = trainer.compute_loss(model, {"pixel_values": pixel_values, "labels": labels})
        theirs = model(pixel_values, labels=labels).loss
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
        labels[:, :16] = UNLABELED_PIXEL
        ours = trainer.compute_loss(model, {"pixel_values": pixel_values, "labels": labels})
        theirs = model(pixel_values, labels=labels).loss
    torch.testing.assert_close(ours, theirs / 2, rtol=1e-6, atol=0)
    assert pixel_cross_entropy(torch.randn(1, 3, 4, 4), torch.full((1, 4, 4), UNLABELED_PIXEL)) == 0
    optimizer = trainer.create_optimizer()
    assert optimizer.param_groups[0]["lr"] == args.learning_rate  # the heads' group: what the logs show


def test_gradient_accumulation_trains_and_logs_as_one_batch(tmp_path):
    """4 crops in one step, or 2 x 2 with gradient accumulation: the same logged loss and gradient norm, and the same
    weights after the step (AdamW's eps 1 makes its first step about -lr x gradient, so the weights show the gradients
    too). BatchNorm couples the crops of a batch (batches of 2 and of 4 crops give different gradients), so the
    model's BatchNorms are taken out: what is tested is how the Trainer scales the loss. UperNet's forward takes
    **kwargs, from which Trainer would infer that the loss is already divided by the accumulation steps: the loss and
    gradients were then twice as large."""
    torch.manual_seed(0)
    data = [{"pixel_values": torch.randn(3, 32, 32), "labels": torch.randint(0, 3, (32, 32))} for _ in range(4)]
    initial = without_batch_norm(tiny_upernet()).state_dict()
    runs = {}
    for batch, accumulation in ((4, 1), (2, 2)):
        model = without_batch_norm(tiny_upernet())
        model.load_state_dict(initial)
        args = TrainingArguments(
            output_dir=str(tmp_path / str(batch)),
            report_to="none",
            use_cpu=True,
            max_steps=1,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            logging_steps=1,
            save_strategy="no",
            max_grad_norm=0,
            learning_rate=1.0,
            adam_epsilon=1.0,
        )
        trainer = SupMAESegmentationTrainer(model=model, args=args, train_dataset=data, crop_size=32, stride=16)
        trainer.train()
        runs[batch] = (trainer.state.log_history[0], model.state_dict())
    (log_4, weights_4), (log_2, weights_2) = runs[4], runs[2]
    for key in ("loss", "grad_norm", "decode_loss", "auxiliary_loss"):
        assert log_2[key] == pytest.approx(log_4[key], rel=1e-4), key
    moved = [k for k, v in initial.items() if v.is_floating_point() and not torch.equal(v, weights_4[k])]
    assert len(moved) > 40
    for key in moved:
        torch.testing.assert_close(
            weights_2[key] - initial[key], weights_4[key] - initial[key], rtol=1e-4, atol=1e-6, msg=key
        )


def without_batch_norm(module: torch.nn.Module) -> torch.nn.Module:
    """`module` with each BatchNorm replaced by the identity (in place)."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
            setattr(module, name, torch.nn.Identity())
        else:
            without_batch_norm(child)
    return module


def test_the_trainer_evaluates_by_sliding_windows_over_the_whole_set(tmp_path):
    torch.manual_seed(0)
    model = tiny_upernet(num_labels=4).eval()
    write_ade20k_folder(tmp_path / "ade", counts={"training": 1, "validation": 3}, size=(40, 56))
    validation = ade20k_folder_datasets(str(tmp_path / "ade"))["validation"]
    dataset = SegmentationDataset(validation, "image", "annotation", SegmentationEvalTransform((64, 32)), False)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    trainer = SupMAESegmentationTrainer(model=model, args=args, eval_dataset=dataset, crop_size=32, stride=24)
    metrics = trainer.evaluate()
    predictions, references = [], []
    for item in dataset:
        predictions.append(predict_segmentation(model, item["pixel_values"][None], item["labels"].shape, 32, 24))
        references.append(item["labels"].numpy())
    expected = segmentation_metrics(predictions, references, num_labels=4)
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy", "per_category_iou"):
        np.testing.assert_allclose(metrics[f"eval_{key}"], expected[key], rtol=1e-12)
    assert dataset[0]["pixel_values"].shape == (3, 32, 45)  # rescaled to fit (64, 32); annotations kept at 40x56


# ---------------------------------------------------------------------------------------------------- the script
COLORS = {1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255)}


def write_rectangles_dataset(path, count, seed):
    """An easy set: colored rectangles (red, green, blue = classes 1..3) on black (class 0), 32x32."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for _ in range(count):
        image, annotation = np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.uint8)
        for label in rng.choice([1, 2, 3], size=2, replace=False):
            top, left = rng.integers(0, 20, size=2)
            height, width = rng.integers(8, 14, size=2)
            image[top : top + height, left : left + width] = COLORS[label]
            annotation[top : top + height, left : left + width] = label
        images.append(Image.fromarray(image))
        annotations.append(Image.fromarray(annotation))
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    return datasets.Dataset.from_dict({"image": images, "annotation": annotations}, features=features)


@pytest.fixture(scope="module")
def rectangles(tmp_path_factory):
    root = tmp_path_factory.mktemp("rectangles")
    splits = datasets.DatasetDict(
        {"train": write_rectangles_dataset(root, 96, 0), "validation": write_rectangles_dataset(root, 16, 1)}
    )
    splits.save_to_disk(root / "data")
    (root / "data" / "id2label.json").write_text(
        json.dumps({"0": "background", "1": "red", "2": "green", "3": "blue"})
    )
    return root / "data"


SCRIPT_TINY = [
    "--config_name",
    "vit-small-patch16",
    "--config_overrides",
    "image_size=32,patch_size=8,hidden_size=32,num_hidden_layers=4,num_attention_heads=4,intermediate_size=64",
    "--crop_size",
    "32",
    "--stride",
    "16",
    "--scale",
    "64",
    "32",
    "--ratio_range",
    "1",
    "1",
    "--photometric_distortion",
    "false",
    "--decode_channels",
    "32",
    "--auxiliary_channels",
    "16",
    "--per_device_train_batch_size",
    "8",
    "--learning_rate",
    "2e-3",
    "--layer_decay",
    "1.0",
    "--warmup_steps",
    "5",
    "--report_to",
    "none",
    "--disable_tqdm",
    "true",
    "--use_cpu",
    "true",
    "--dataloader_num_workers",
    "0",
    "--eval_strategy",
    "no",
    "--logging_steps",
    "10",
    "--seed",
    "0",
]


@pytest.mark.slow
def test_run_segmentation_learns_and_writes_a_hub_ready_directory(rectangles, tmp_path):
    output = tmp_path / "out"
    metrics = run_segmentation.main(
        [
            *SCRIPT_TINY,
            "--dataset_name",
            str(rectangles),
            "--max_steps",
            "120",
            "--save_strategy",
            "no",
            "--output_dir",
            str(output),
        ]
    )
    # Chance is about 0.1 mIoU (4 classes, mostly background); the colors make the task easy.
    assert metrics["eval_mean_iou"] > 0.6, metrics
    assert set(os.listdir(output)) >= {
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "README.md",
        "modeling_supmae.py",
        "configuration_supmae.py",
        "eval_validation.json",
    }
    config = json.loads((output / "config.json").read_text())
    assert config["id2label"] == {"0": "background", "1": "red", "2": "green", "3": "blue"}
    assert config["backbone_config"]["model_type"] == "supmae" and config["backbone_config"]["add_fpn"]
    report = json.loads((output / "eval_validation.json").read_text())
    assert report["metrics"]["eval_mean_iou"] == pytest.approx(metrics["eval_mean_iou"])
    assert f"{metrics['eval_mean_iou']:.4g}" in (output / "README.md").read_text()
    segment = pipeline("image-segmentation", model=str(output))
    assert {r["label"] for r in segment(Image.new("RGB", (32, 32)))} <= {"background", "red", "green", "blue"}


@pytest.mark.slow
def test_a_run_killed_after_a_checkpoint_resumes_to_the_same_weights(rectangles, tmp_path):
    common = [
        *SCRIPT_TINY,
        "--dataset_name",
        str(rectangles),
        "--max_steps",
        "8",
        "--save_steps",
        "4",
        "--max_eval_samples",
        "2",
    ]
    run_segmentation.main([*common, "--output_dir", str(tmp_path / "whole")])
    run_segmentation.main([*common, "--output_dir", str(tmp_path / "killed")])
    # What a kill after checkpoint-4 leaves: no final model, no checkpoint-8, no record of a finished run.
    os.remove(tmp_path / "killed" / "model.safetensors")
    os.remove(tmp_path / "killed" / "trainer_state.json")
    os.remove(tmp_path / "killed" / "run_complete.json")
    shutil.rmtree(tmp_path / "killed" / "checkpoint-8")
    run_segmentation.main([*common, "--output_dir", str(tmp_path / "killed")])
    from safetensors.torch import load_file

    whole, resumed = (
        load_file(tmp_path / "whole" / "model.safetensors"),
        load_file(tmp_path / "killed" / "model.safetensors"),
    )
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--model_name_or_path", "x", "--config_name", "vit-small-patch16"], "both give the architecture"),
        (["--mask_column_name", "seg"], r"`mask_column_name` 'seg' is not a column.*\['image', 'annotation'\]"),
        (["--config_name", "vit-gigantic"], "neither a preset"),
        (["--num_labels", "3"], "--num_labels 3 disagrees with the 4 class names"),
        (["--stride", "40"], r"--stride 40 must be between 1 and --crop_size \(32\)"),
        (["--stride", "0"], r"--stride 0 must be between 1 and --crop_size"),
        (["--windows_per_batch", "0"], "--windows_per_batch must be at least 1, got 0"),
        (
            ["--crop_size", "30", "--stride", "16"],
            r"--crop_size 30 is not a multiple of the encoder's patch size \(8\)",
        ),
    ],
)
def test_mistakes_fail_before_training(rectangles, tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        run_segmentation.main(
            [*SCRIPT_TINY, "--dataset_name", str(rectangles), "--output_dir", str(tmp_path / "out"), *arguments]
        )
    assert not os.path.exists(tmp_path / "out" / "model.safetensors")


def test_a_command_line_mistake_is_one_line_not_a_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "run_segmentation.py"),
            "--output_dir",
            str(tmp_path / "out"),
            "--dataset_name",
            "digits",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: Give --model_name_or_path")


# --------------------------------------------------------------------------------------------------- benchmark
@pytest.mark.slow  # a tiny model, but the memory child imports torch and transformers again
def test_segmentation_benchmark_compares_the_same_architecture(tmp_path, monkeypatch):
    """benchmarks/segmentation_step.py on a tiny ViT: both arms run and are recorded, and they do the same work (the
    same FLOPs per step: same blocks, same pyramid, same heads). Timings are not asserted."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    monkeypatch.setenv("PYTHONPATH", ROOT)  # the memory child imports this checkout's package
    import segmentation_step

    output = tmp_path / "results.json"
    record = segmentation_step.main(
        ["--tiny", "--device", "cpu", "--rounds", "1", "--warmup", "0", "--output", str(output)]
    )
    (point,) = record["results"]
    ours, beit = point["arms"]["supmae"], point["arms"]["beit"]
    assert ours["label"] == "UperNet + SupMAEBackbone" and beit["label"] == "UperNet + BeitBackbone"
    assert ours["flops_per_step"] == pytest.approx(beit["flops_per_step"], rel=0.01) and ours["flops_per_step"] > 0
    for arm in (ours, beit):
        assert arm["images_per_s"] > 0 and arm["memory"]["peak_bytes"] > 0
    assert point["comparisons"][0]["ratio"] > 0 and (point["batch_size"], point["image_size"]) == (2, 64)
    assert json.loads(output.read_text())[-1]["script"] == "segmentation_step.py"
