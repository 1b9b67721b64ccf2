"""run_segmentation.py's recipe as mmsegmentation's MAE config has it: relative position bias and layer scale in the
backbone, dropout before the classifiers, the stride two thirds of the crop, a clear error for an encoder too shallow
for the pyramid, and the multi-scale + flip test (mmsegmentation's `aug_test`), checked on generated data."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT, tiny_config
from transformers import TrainingArguments

from supmae import SupMAEModel
from supmae.data.segmentation import (
    DIGITS_SEGMENTATION_CLASSES,
    SegmentationDataset,
    SegmentationEvalTransform,
    digits_segmentation_datasets,
)
from supmae.interop.upernet import backbone_config_from, segmentation_model
from supmae.metrics import segmentation_metrics
from supmae.modeling_supmae import SupMAESegmentationClassifier, SupMAEUperNetForSemanticSegmentation
from supmae.tasks import segmentation
from supmae.training.segmentation import (
    TEST_AUGMENTATION_RATIOS,
    SupMAESegmentationTrainer,
    augmented_probabilities,
    sliding_window_logits,
)


LABELS = dict(enumerate(DIGITS_SEGMENTATION_CLASSES))  # the generated canvases' 11 classes
K = len(LABELS)
TINY = "image_size=32,patch_size=8,hidden_size=32,num_hidden_layers=4,num_attention_heads=4,intermediate_size=64"  # the encoder of tests/tasks/test_segmentation.py's script runs


def encoder(**overrides):
    return tiny_config(**{"num_hidden_layers": 4, **overrides})


def tiny_segmenter(**kwargs) -> SupMAEUperNetForSemanticSegmentation:
    torch.manual_seed(0)
    model, _ = segmentation_model(
        None, LABELS, 32, config=encoder(), decode_channels=16, auxiliary_channels=8, **kwargs
    )
    return model.eval()


def randomize_recipe_parameters(model) -> None:
    """Non-zero bias tables and layer scales other than 1 (the recipe starts them as identities)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("relative_position_bias_table", "lambda_1", "lambda_2")):
                offset = 0.0 if name.endswith("relative_position_bias_table") else 1.0  # scales around 1
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5 + offset)


# ----------------------------------------------------------------------------------------------------- the recipe
def test_the_recipe_has_maes_relative_position_bias_layer_scale_and_head_dropout():
    model = tiny_segmenter()
    backbone = model.config.backbone_config
    assert backbone.use_relative_position_bias and backbone.layer_scale_init_value == 1.0
    assert model.config.classifier_dropout == 0.1 and isinstance(model, SupMAEUperNetForSemanticSegmentation)
    for layer in model.backbone.supmae.layers:
        assert torch.equal(layer.attention.relative_position_bias.relative_position_bias_table, torch.zeros(52, 4))
        assert torch.equal(layer.lambda_1, torch.ones(32)) and torch.equal(layer.lambda_2, torch.ones(32))
    for head in (model.decode_head, model.auxiliary_head):
        assert isinstance(head.classifier, SupMAESegmentationClassifier)
        assert [m.p for m in head.classifier.modules() if isinstance(m, torch.nn.Dropout2d)] == [0.1]


def test_the_ablation_switches_turn_each_part_off():
    model = tiny_segmenter(relative_position_bias=False, layer_scale_init_value=0, classifier_dropout=0)
    backbone = model.config.backbone_config
    assert not backbone.use_relative_position_bias and backbone.layer_scale_init_value is None
    assert not any(key.endswith(("_table", "lambda_1", "lambda_2")) for key in model.state_dict())
    assert isinstance(model.decode_head.classifier, torch.nn.Conv2d)
    assert isinstance(model.auxiliary_head.classifier, torch.nn.Conv2d)


def test_a_checkpoint_with_bias_tables_gets_them_resized_to_the_crop(tmp_path):
    torch.manual_seed(0)
    source = SupMAEModel(encoder(use_relative_position_bias=True, layer_scale_init_value=0.5))
    randomize_recipe_parameters(source)
    source.save_pretrained(tmp_path / "encoder")
    model, report = segmentation_model(str(tmp_path / "encoder"), LABELS, 48)  # 4x4 patches -> 6x6
    assert "relative position biases" not in report  # reused, not new
    table = model.backbone.supmae.layers[2].attention.relative_position_bias.relative_position_bias_table
    old = source.layers[2].attention.relative_position_bias.relative_position_bias_table.detach()
    offsets = F.interpolate(old[:-3].T.reshape(1, 4, 7, 7), size=(11, 11), mode="bilinear", align_corners=False)
    torch.testing.assert_close(table[:-3], offsets.reshape(4, 121).T, rtol=0, atol=0)
    assert torch.equal(table[-3:], old[-3:])
    assert torch.equal(model.backbone.supmae.layers[2].lambda_1, source.layers[2].lambda_1)


def parse(*arguments: str):
    return segmentation.parse(["--config_overrides", TINY, "--dataset_name", "digits", *arguments])


def test_the_command_line_defaults_are_the_recipe_and_its_switches_parse():
    model_args, _, args = parse("--output_dir", "out")
    assert (model_args.relative_position_bias, model_args.layer_scale_init_value) == (True, 1.0)
    assert model_args.classifier_dropout == 0.1 and not args.test_augmentation
    model_args, _, args = parse(
        "--output_dir", "out", "--relative_position_bias", "false", "--layer_scale_init_value", "0",
        "--classifier_dropout", "0", "--test_augmentation", "true",
    )  # fmt: skip
    assert not model_args.relative_position_bias and model_args.layer_scale_init_value == 0
    assert model_args.classifier_dropout == 0 and args.test_augmentation


@pytest.mark.parametrize("crop_size, stride", [(512, 341), (32, 21), (64, 42)])
def test_the_stride_is_two_thirds_of_the_crop_unless_given(crop_size, stride):
    _, _, args = parse("--output_dir", "out", "--crop_size", str(crop_size))
    assert args.stride == stride
    _, _, args = parse("--output_dir", "out", "--crop_size", str(crop_size), "--stride", "16")
    assert args.stride == 16


# -------------------------------------------------------------------------------------------- too shallow an encoder
def test_an_encoder_too_shallow_for_the_pyramid_is_named():
    with pytest.raises(ValueError, match=r"The encoder has 3 blocks \(num_hidden_layers=3\).*at least 4 blocks"):
        backbone_config_from(encoder(num_hidden_layers=3), 32)
    with pytest.raises(ValueError, match=r"The encoder has 1 block \(num_hidden_layers=1\)"):
        backbone_config_from(encoder(num_hidden_layers=1), 32)
    assert backbone_config_from(encoder(num_hidden_layers=4), 32).out_features == [f"stage{i}" for i in range(1, 5)]


@pytest.mark.parametrize("source", ["scratch", "checkpoint"])
def test_an_encoder_too_shallow_is_a_one_paragraph_error(source, tmp_path):
    if source == "scratch":
        given = ["--config_overrides", TINY.replace("num_hidden_layers=4", "num_hidden_layers=3")]
    else:
        SupMAEModel(encoder(num_hidden_layers=2)).save_pretrained(tmp_path / "shallow")
        given = ["--model_name_or_path", str(tmp_path / "shallow")]
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run_segmentation.py"), *given, "--dataset_name", "digits"]
        + ["--crop_size", "32", "--output_dir", str(tmp_path / "out"), "--report_to", "none"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    depth = 3 if source == "scratch" else 2
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: The encoder has {depth} blocks (num_hidden_layers={depth})"), message
    assert "--config_overrides num_hidden_layers=4" in message


# ------------------------------------------------------------------------------------------ test-time augmentation
def test_the_test_scales_are_mmsegs_ratios_of_the_test_scale():
    """A 40x56 image and the (64, 32) test scale: ratio r fits it into (int(64 r), int(32 r)), keeping its ratio."""
    image = digits_segmentation_datasets(num_train=1, num_validation=1)["train"][0]["image"].resize((56, 40))
    mask = np.zeros((40, 56), dtype=np.uint8)
    scaled, labels = SegmentationEvalTransform((64, 32), ratios=(0.5, 1.0, 1.5, 1.75))(image, mask)
    # r = 0.5: min(32 / 56, 16 / 40) = 0.4 -> 16 x 22; r = 1: 0.8 -> 32 x 45; 1.5: 1.2 -> 48 x 67; 1.75: 1.4 -> 56 x 78
    assert [tuple(pixels.shape) for pixels in scaled] == [(3, 16, 22), (3, 32, 45), (3, 48, 67), (3, 56, 78)]
    plain, plain_labels = SegmentationEvalTransform((64, 32))(image, mask)
    assert torch.equal(scaled[1], plain) and torch.equal(labels, plain_labels)
    assert TEST_AUGMENTATION_RATIOS == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def test_augmented_predictions_are_the_mean_over_scales_and_flips_at_the_original_size():
    model = tiny_segmenter()
    randomize_recipe_parameters(model)
    generator = torch.Generator().manual_seed(0)
    scaled = [torch.randn(2, 3, h, w, generator=generator) for h, w in ((16, 24), (32, 45), (56, 78))]
    probabilities = augmented_probabilities(model, scaled, (40, 56), 32, 21, K, flip=True)
    expected = []
    for pixels in scaled:
        for mirror in (False, True):
            logits = sliding_window_logits(model, pixels.flip(-1) if mirror else pixels, 32, 21, K)
            logits = F.interpolate(logits, size=(40, 56), mode="bilinear", align_corners=False)
            expected.append(logits.softmax(1).flip(-1) if mirror else logits.softmax(1))
    assert probabilities.shape == (2, K, 40, 56)
    torch.testing.assert_close(probabilities, torch.stack(expected).mean(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(2, 40, 56), rtol=0, atol=1e-6)
    unflipped = augmented_probabilities(model, scaled, (40, 56), 32, 21, K)
    torch.testing.assert_close(unflipped, torch.stack(expected[::2]).mean(0), rtol=0, atol=1e-6)


def test_with_flip_the_prediction_of_a_mirrored_image_is_the_mirrored_prediction():
    """The model is not mirror-symmetric (position embeddings, bias tables), its flip-averaged prediction is. The
    windows (crop 32, stride 16) tile these sizes symmetrically, so that only the model could break the symmetry."""
    model = tiny_segmenter()
    randomize_recipe_parameters(model)
    generator = torch.Generator().manual_seed(0)
    scaled = [torch.randn(1, 3, h, w, generator=generator) for h, w in ((32, 48), (48, 64))]
    mirrored = [pixels.flip(-1) for pixels in scaled]
    for flip in (True, False):
        ours = augmented_probabilities(model, scaled, (40, 56), 32, 16, K, flip=flip)
        theirs = augmented_probabilities(model, mirrored, (40, 56), 32, 16, K, flip=flip)
        difference = (theirs - ours.flip(-1)).abs().max()
        assert difference < 1e-6 if flip else difference > 1e-4, (flip, difference)  # 100 times the tolerance


def validation_set(ratios=None):
    validation = digits_segmentation_datasets(num_train=1, num_validation=3)["validation"]
    transform = SegmentationEvalTransform((48, 40), ratios=ratios)
    return SegmentationDataset(validation, "image", "annotation", transform, substitute=False)


def trainer_for(model, dataset, tmp_path, flip=False):
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    return SupMAESegmentationTrainer(model=model, args=args, eval_dataset=dataset, crop_size=32, stride=16, flip=flip)


def test_one_scale_without_flip_is_the_plain_evaluation(tmp_path):
    model = tiny_segmenter()
    randomize_recipe_parameters(model)
    plain = trainer_for(model, validation_set(), tmp_path).confusion_matrix(validation_set())
    one_scale = trainer_for(model, validation_set((1.0,)), tmp_path).confusion_matrix(validation_set((1.0,)))
    assert torch.equal(plain, one_scale) and plain.sum() == 3 * 64 * 64


def test_the_trainer_scores_the_augmented_predictions(tmp_path):
    model = tiny_segmenter()
    randomize_recipe_parameters(model)
    dataset = validation_set(TEST_AUGMENTATION_RATIOS)
    metrics = trainer_for(model, dataset, tmp_path, flip=True).evaluate()
    predictions, references = [], []
    for item in dataset:
        scaled = [pixels[None] for pixels in item["pixel_values"]]
        assert len(scaled) == 6 and scaled[0].shape[-2:] == (20, 20) and scaled[-1].shape[-2:] == (70, 70)
        probabilities = augmented_probabilities(model, scaled, item["labels"].shape, 32, 16, K, flip=True)
        predictions.append(probabilities.argmax(1)[0].numpy())
        references.append(item["labels"].numpy())
    expected = segmentation_metrics(predictions, references, num_labels=K)
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy", "per_category_iou"):
        np.testing.assert_allclose(metrics[f"eval_{key}"], expected[key], rtol=1e-12)
    plain = trainer_for(model, validation_set(), tmp_path).evaluate()
    assert plain["eval_overall_accuracy"] != metrics["eval_overall_accuracy"]  # the augmentation did something


@pytest.mark.slow
def test_run_segmentation_with_test_augmentation_and_the_ablation_switches(tmp_path):
    output = tmp_path / "out"
    metrics = segmentation.main(
        [
            "--config_overrides", TINY, "--dataset_name", "digits", "--output_dir", str(output),
            "--crop_size", "32", "--scale", "48", "40", "--max_steps", "2", "--max_eval_samples", "2",
            "--per_device_train_batch_size", "2", "--decode_channels", "16", "--auxiliary_channels", "8",
            "--relative_position_bias", "false", "--layer_scale_init_value", "0", "--test_augmentation", "true",
            "--report_to", "none", "--use_cpu", "true", "--save_strategy", "no", "--eval_strategy", "no",
            "--dataloader_num_workers", "0", "--disable_tqdm", "true",
        ]
    )  # fmt: skip
    config = json.loads((output / "config.json").read_text())
    assert config["backbone_config"]["use_relative_position_bias"] is False
    assert config["backbone_config"]["layer_scale_init_value"] is None and config["classifier_dropout"] == 0.1
    model = SupMAEUperNetForSemanticSegmentation.from_pretrained(output).eval()
    dataset = SegmentationDataset(
        digits_segmentation_datasets()["validation"].select(range(2)),
        "image",
        "annotation",
        SegmentationEvalTransform((48, 40), ratios=TEST_AUGMENTATION_RATIOS),
        substitute=False,
    )
    predictions, references = [], []
    for item in dataset:
        scaled = [pixels[None] for pixels in item["pixel_values"]]
        probabilities = augmented_probabilities(model, scaled, item["labels"].shape, 32, 21, K, flip=True)
        predictions.append(probabilities.argmax(1)[0].numpy())
        references.append(item["labels"].numpy())
    expected = segmentation_metrics(predictions, references, num_labels=K)
    np.testing.assert_allclose(metrics["eval_mean_iou"], expected["mean_iou"], rtol=1e-12)
