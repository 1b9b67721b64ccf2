"""Semantic segmentation: SupMAEBackbone, UperNet on it, loading encoders, mmsegmentation's ADE20K pipeline and
sliding-window evaluation, the metric, and run_segmentation.py end to end."""

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import reference_supmae as ref
import torch
import torch.nn.functional as F
from conftest import official_state_dict, tiny_config
from PIL import Image
from test_convert import HEADS, save_official
from transformers import (
    AutoBackbone,
    AutoModelForSemanticSegmentation,
    TrainingArguments,
    UperNetConfig,
    UperNetForSemanticSegmentation,
    pipeline,
)
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from supmae import SupMAEBackbone, SupMAEConfig, SupMAEForImageClassification, SupMAEForPreTraining
from supmae.configuration_supmae import mae_dense_prediction_stages
from supmae.data.images import BadImagePolicy
from supmae.data.segmentation import (
    UNLABELED_PIXEL,
    SegmentationDataset,
    SegmentationEvalTransform,
    SegmentationTrainTransform,
    ade20k_folder_datasets,
    digits_segmentation_datasets,
    find_mask_column,
    read_id2label,
    reduce_zero_label,
    segmentation_class_names,
    segmentation_collator,
)
from supmae.interop.convert import convert, save_converted
from supmae.interop.upernet import save_segmentation_model, segmentation_image_processor, segmentation_model
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


def backbone_config(**overrides) -> SupMAEConfig:
    """A 4-block, 32-wide encoder on 32x32 images with 8x8 patches."""
    return tiny_config(**{"num_hidden_layers": 4, **overrides})


def tiny_upernet(num_labels=3, **overrides) -> UperNetForSemanticSegmentation:
    config = UperNetConfig(
        backbone_config=backbone_config(add_fpn=True, **overrides),
        num_labels=num_labels,
        hidden_size=16,
        auxiliary_channels=8,
    )
    return UperNetForSemanticSegmentation(config)


# ------------------------------------------------------------------------------------------------------ backbone
def test_stage_i_is_the_output_of_encoder_block_i():
    """Every stage against forward hooks on the blocks (1-based i = the output of layers[i - 1]), cls dropped."""
    torch.manual_seed(0)
    config = backbone_config(out_features=["stem", "stage1", "stage2", "stage3", "stage4"])
    backbone = SupMAEBackbone(config).eval()
    outputs = {}
    for i, layer in enumerate(backbone.supmae.layers, start=1):
        layer.register_forward_hook(lambda module, args, output, i=i: outputs.__setitem__(i, output))
    pixel_values = torch.randn(2, 3, 48, 80)  # not the config's 32x32: the position table is resized
    feature_maps = backbone(pixel_values).feature_maps
    assert len(feature_maps) == 5
    for i in range(1, 5):
        expected = outputs[i][:, 1:].transpose(1, 2).reshape(2, 32, 6, 10)
        torch.testing.assert_close(feature_maps[i], expected, rtol=0, atol=0)
    embeddings, _, _ = backbone.supmae.embeddings(pixel_values, interpolate_pos_encoding=True)
    torch.testing.assert_close(feature_maps[0], embeddings[:, 1:].transpose(1, 2).reshape(2, 32, 6, 10))


def test_mae_dense_prediction_stages_are_mae_and_beits_blocks():
    """12 blocks: stage4, 6, 8, 12 = the 0-based blocks 3, 5, 7, 11 of MAE's and BEiT's code (not BeitBackbone's)."""
    config = SupMAEConfig(out_features=mae_dense_prediction_stages(12))
    assert config.out_features == ["stage4", "stage6", "stage8", "stage12"] and config.out_indices == [4, 6, 8, 12]
    vit_large = SupMAEConfig.from_preset("vit-large-patch16")
    assert mae_dense_prediction_stages(vit_large.num_hidden_layers) == ["stage8", "stage12", "stage16", "stage24"]
    # The pyramid's default (no stages named) follows the depth, also when the depth changes after the config was made.
    config = SupMAEConfig(add_fpn=True)
    assert config.out_features == ["stage4", "stage6", "stage8", "stage12"]
    config.update_from_string("num_hidden_layers=4")
    assert SupMAEConfig.from_dict(config.to_dict()).out_features == ["stage1", "stage2", "stage3", "stage4"]
    torch.manual_seed(0)
    config = tiny_config(num_hidden_layers=12, hidden_size=16, out_features=mae_dense_prediction_stages(12))
    backbone = SupMAEBackbone(config).eval()
    captured = {}
    backbone.supmae.layers[3].register_forward_hook(lambda m, a, output: captured.setdefault("block3", output))
    backbone.supmae.layers[11].register_forward_hook(lambda m, a, output: captured.setdefault("block11", output))
    maps = backbone(torch.randn(1, 3, 32, 32)).feature_maps
    torch.testing.assert_close(maps[0], captured["block3"][:, 1:].transpose(1, 2).reshape(1, 16, 4, 4))
    torch.testing.assert_close(maps[3], captured["block11"][:, 1:].transpose(1, 2).reshape(1, 16, 4, 4))
    with pytest.raises(Exception, match="`add_fpn` needs exactly 4 `out_features`"):
        tiny_config(add_fpn=True)  # 2 blocks give 2 stages
    # Four different blocks at every depth (5 blocks rounded N/3 and N/2 both to block 2).
    assert [SupMAEConfig(num_hidden_layers=n, add_fpn=True).out_indices for n in (4, 5, 6, 7)] == [
        [1, 2, 3, 4],
        [2, 3, 4, 5],
        [2, 3, 4, 6],
        [2, 4, 5, 7],
    ]


@pytest.mark.parametrize(
    "patch_size, size, strides",
    [
        (16, (64, 96), (4, 8, 16, 32)),
        (8, (64, 96), (4, 8, 16, 32)),
        (4, (64, 96), (4, 8, 16, 32)),
        (14, (56, 84), (3.5, 7, 14, 28)),
    ],
)
def test_feature_pyramid_shapes_and_strides(patch_size, size, strides):
    config = backbone_config(patch_size=patch_size, image_size=patch_size * 4, add_fpn=True)
    maps = SupMAEBackbone(config)(torch.randn(2, 3, *size)).feature_maps
    assert [tuple(m.shape) for m in maps] == [(2, 32, round(size[0] / s), round(size[1] / s)) for s in strides]


def test_feature_pyramid_for_16px_patches_is_maes_neck():
    levels = SupMAEBackbone(backbone_config(patch_size=16, image_size=64, add_fpn=True)).fpn.levels
    kinds = [
        [type(m).__name__ for m in level] if isinstance(level, torch.nn.Sequential) else type(level).__name__
        for level in levels
    ]
    assert kinds == [
        ["ConvTranspose2d", "BatchNorm2d", "GELU", "ConvTranspose2d"],
        ["ConvTranspose2d"],
        "Identity",
        "MaxPool2d",
    ]
    assert levels[0][0].stride == (2, 2) and levels[3].kernel_size == 2


def test_upernet_builds_on_the_backbone_and_trains():
    """`UperNetForSemanticSegmentation(UperNetConfig(backbone_config=SupMAEConfig(...)))` works after import supmae."""
    torch.manual_seed(0)
    model = tiny_upernet(num_labels=5)
    assert type(model.backbone) is SupMAEBackbone and model.backbone.channels == [32] * 4
    assert type(AutoBackbone.from_config(backbone_config())) is SupMAEBackbone
    pixel_values, labels = torch.randn(2, 3, 32, 48), torch.randint(0, 5, (2, 32, 48))
    labels[0, :4] = UNLABELED_PIXEL
    outputs = model(pixel_values, labels=labels)
    assert outputs.logits.shape == (2, 5, 32, 48) and torch.isfinite(outputs.loss)
    outputs.loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert "backbone.supmae.embeddings.position_embeddings" in trainable  # trainable, as in MAE's fine-tuning
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in trainable.items()), [
        n for n, p in trainable.items() if p.grad is None or p.grad.abs().sum() == 0
    ]


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


# ------------------------------------------------------------------------------------------------------- loading
@pytest.fixture
def pretraining_dir(tmp_path):
    torch.manual_seed(0)
    model = SupMAEForPreTraining(backbone_config())
    model.save_pretrained(tmp_path / "pretrained")
    return tmp_path / "pretrained", model


def test_a_pretraining_checkpoint_starts_the_backbone(pretraining_dir):
    directory, pretrained = pretraining_dir
    logger = logging.get_logger("supmae.interop.upernet")
    with CaptureLogger(logger) as captured:
        model, report = segmentation_model(str(directory), {0: "a", 1: "b", 2: "c"}, crop_size=48)
    assert captured.out.count("reused the encoder") == 1 and report in captured.out
    decoder, head = len(pretrained.decoder.state_dict()), len(pretrained.supervised_head.state_dict())
    for part in (
        "reused the encoder of the SupMAE pretraining checkpoint",
        "the embeddings and 4 blocks",
        "position table resized from 4x4 to 6x6 patches",
        f"dropped the pixel decoder ({decoder} tensors), the pretraining head ({head} tensors), the encoder's final "
        "LayerNorm (2 tensors)",
        "newly initialized: the relative position biases (zeros) and layer scales (1.0) of the 4 encoder blocks, "
        "the feature pyramid (neck), the decode head, the auxiliary head.",
    ):
        assert part in report
    encoder, reused = pretrained.supmae.state_dict(), model.backbone.supmae.state_dict()
    for key, value in reused.items():
        if key != "embeddings.position_embeddings" and key in encoder:  # not the recipe's biases and layer scales
            assert torch.equal(value, encoder[key]), key
    table = encoder["embeddings.position_embeddings"]
    patches = F.interpolate(table[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2), size=(6, 6), mode="bicubic")
    torch.testing.assert_close(reused["embeddings.position_embeddings"][:, 0], table[:, 0])
    torch.testing.assert_close(
        reused["embeddings.position_embeddings"][:, 1:], patches.permute(0, 2, 3, 1).reshape(1, 36, -1)
    )
    assert model.config.backbone_config.image_size == 48 and model.config.backbone_config.drop_path_rate == 0.1
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}


def test_a_fine_tuned_classifier_starts_the_backbone(pretraining_dir, tmp_path):
    directory, _ = pretraining_dir
    classifier = SupMAEForImageClassification.from_pretrained(directory, num_labels=3)
    classifier.save_pretrained(tmp_path / "classifier")
    model, report = segmentation_model(str(tmp_path / "classifier"), {0: "a", 1: "b"}, crop_size=32)
    assert "reused the encoder of the fine-tuned SupMAE classifier" in report
    assert "dropped the classification head (4 tensors)" in report and "resized" not in report
    expected = classifier.supmae.state_dict()
    reused = {k: v for k, v in model.backbone.supmae.state_dict().items() if k in expected}  # not lambda_1, ...
    assert len(reused) == len(expected) and all(torch.equal(v, expected[k]) for k, v in reused.items())


def test_a_converted_official_checkpoint_gives_the_official_block_outputs(tmp_path):
    """The backbone's stages against tests/reference_supmae.py on the ORIGINAL official weights."""
    config = backbone_config()
    state_dict = official_state_dict(config, seed=3)
    converted, conversion = convert(save_official(tmp_path / "supmae_pretrain.pth", state_dict), **HEADS)
    save_converted(converted, conversion, str(tmp_path / "converted"), command="test")
    model, report = segmentation_model(str(tmp_path / "converted"), {0: "a", 1: "b"}, crop_size=32)
    assert "reused the encoder of the SupMAE pretraining checkpoint" in report
    backbone = model.backbone.eval()
    backbone.config.out_features = ["stage1", "stage2", "stage3", "stage4"]
    backbone.fpn = None
    pixel_values = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    maps = backbone(pixel_values).feature_maps
    x = ref._patch_embed(state_dict, pixel_values, "") + state_dict["pos_embed"][:, 1:]
    x = torch.cat([(state_dict["cls_token"] + state_dict["pos_embed"][:, :1]).expand(2, -1, -1), x], dim=1)
    for i in range(4):
        x = ref.transformer_block(state_dict, f"blocks.{i}", x, num_heads=4)
        torch.testing.assert_close(maps[i], x[:, 1:].transpose(1, 2).reshape(2, 32, 4, 4), rtol=0, atol=1e-5)


def test_checkpoints_that_cannot_start_the_backbone_are_named(pretraining_dir, tmp_path):
    directory, pretrained = pretraining_dir
    state = {k: v for k, v in pretrained.state_dict().items() if k != "supmae.layers.3.mlp.fc2.weight"}
    state["supmae.extra.weight"] = torch.zeros(1)
    broken = tmp_path / "broken"
    SupMAEForPreTraining(backbone_config()).save_pretrained(broken)
    from safetensors.torch import save_file

    save_file(state, broken / "model.safetensors")
    with pytest.raises(ValueError, match=r"unknown tensors \['supmae.extra.weight'\]; missing \['layers.3.mlp.fc2"):
        segmentation_model(str(broken), {0: "a", 1: "b"}, crop_size=32)
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="holds a 'vit' checkpoint .* `supmae-convert`"):
        segmentation_model(str(tmp_path / "vit"), {0: "a", 1: "b"}, crop_size=32)


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


# ----------------------------------------------------------------------------------------------------- data
def test_reduce_zero_label_ignores_other_and_shifts_the_classes():
    mask = np.array([[0, 1, 2], [150, 255, 0]], dtype=np.uint8)
    assert reduce_zero_label(mask).tolist() == [[255, 0, 1], [149, 255, 255]]


def test_training_crops_pad_flip_and_keep_labels():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[:, 15:] = 1
    transform = SegmentationTrainTransform((32, 32), scale=(30, 20), ratio_range=(1.0, 1.0), photometric=False)
    pixels, labels = transform(image, mask, random.Random(0))
    assert pixels.shape == (3, 32, 32) and labels.shape == (32, 32) and labels.dtype == torch.int64
    assert (
        (labels[20:] == UNLABELED_PIXEL).all()
        and (labels[:, 30:] == UNLABELED_PIXEL).all()
        and (pixels[:, 20:] == 0).all()
    )
    assert set(labels[:20, :30].unique().tolist()) == {0, 1}
    # Deterministic in the generator; across generators the flip shows up.
    again, _ = transform(image, mask, random.Random(0))
    assert torch.equal(pixels, again)
    lefts = {transform(image, mask, random.Random(seed))[1][0, 0].item() for seed in range(12)}
    assert lefts == {0, 1}


def test_random_crops_avoid_one_class_crops_when_they_can():
    """cat_max_ratio 0.75: the crop's largest class covers less than 3/4 of its labelled pixels when such a crop
    exists; without the rule most crops of this mask are one class."""
    labels = torch.zeros(40, 100, dtype=torch.uint8)
    labels[:, 50:] = 1  # a crop qualifies when it starts in columns 21..39: 19 of the 61 places
    ratio = SegmentationTrainTransform((40, 40), cat_max_ratio=0.75)
    no_ratio = SegmentationTrainTransform((40, 40), cat_max_ratio=1.0)

    def largest_share(transform, seed):
        top, left = transform.crop_box(labels, random.Random(seed))
        counts = torch.bincount(labels[top : top + 40, left : left + 40].flatten().long())
        return (counts.max() / counts.sum()).item()

    shares = [largest_share(ratio, seed) for seed in range(30)]
    assert sum(share < 0.75 for share in shares) >= 27  # 10 tries each: 98% of the crops qualify
    assert sum(largest_share(no_ratio, seed) < 0.75 for seed in range(30)) <= 15  # one try: 31%


def test_evaluation_keeps_the_ratio_and_the_original_annotation():
    image = Image.new("RGB", (3000, 1000))
    mask = np.zeros((1000, 3000), dtype=np.uint8)
    pixels, labels = SegmentationEvalTransform(scale=(2048, 512))(image, mask)
    assert pixels.shape == (3, 512, 1536) and labels.shape == (1000, 3000)
    pixels, _ = SegmentationEvalTransform(scale=(2048, 512))(
        Image.new("RGB", (683, 512)), np.zeros((512, 683), np.uint8)
    )
    assert pixels.shape == (3, 512, 683)


def write_ade20k_folder(root, counts=None, size=(24, 16)):
    counts = counts or {"training": 3, "validation": 2}
    rng = np.random.default_rng(0)
    for folder, count in counts.items():
        (root / "images" / folder).mkdir(parents=True)
        (root / "annotations" / folder).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
                root / "images" / folder / f"ADE_{i}.jpg"
            )
            Image.fromarray(rng.integers(0, 4, size, dtype=np.uint8)).save(
                root / "annotations" / folder / f"ADE_{i}.png"
            )


def test_ade20k_folder_layout(tmp_path):
    write_ade20k_folder(tmp_path / "ADEChallengeData2016")
    splits = ade20k_folder_datasets(str(tmp_path / "ADEChallengeData2016"))
    assert {name: len(split) for name, split in splits.items()} == {"train": 3, "validation": 2}
    assert find_mask_column(splits["train"], image_column="image") == "annotation"
    names, reduce = segmentation_class_names(None, str(tmp_path / "ADEChallengeData2016"))
    assert reduce and len(names) == 150 and names[0] == "wall" and names[149] == "flag"
    dataset = SegmentationDataset(
        splits["train"], "image", "annotation", SegmentationEvalTransform((24, 16)), True, num_labels=150
    )
    item = dataset[0]
    annotation = np.array(Image.open(tmp_path / "ADEChallengeData2016" / "annotations" / "training" / "ADE_0.png"))
    assert item["labels"].tolist() == reduce_zero_label(annotation).tolist()
    os.remove(tmp_path / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_1.png")
    with pytest.raises(FileNotFoundError, match=r"1 of the 2 images in .*validation have no annotation"):
        ade20k_folder_datasets(str(tmp_path / "ADEChallengeData2016"))


def test_classes_outside_the_model_are_named(tmp_path):
    write_ade20k_folder(tmp_path / "ade")
    splits = ade20k_folder_datasets(str(tmp_path / "ade"))
    dataset = SegmentationDataset(
        splits["train"], "image", "annotation", SegmentationEvalTransform((24, 16)), reduce_labels=False, num_labels=3
    )
    with pytest.raises(
        ValueError,
        match=r"ADE_0.png \(item 0\) holds class 3, outside the 3 classes \(0..2\).*"
        "--reduce_zero_label",
    ):
        dataset[0]


def test_bad_annotations_are_named_and_no_image_is_scored_twice(tmp_path):
    """An unreadable annotation is skipped under its own name; in evaluation its image is left out (not replaced by
    the next one, which would count twice). An annotation of the wrong kind or size stops the run, naming the file."""
    write_ade20k_folder(tmp_path / "ade", counts={"training": 1, "validation": 3})
    annotations = tmp_path / "ade" / "annotations" / "validation"
    (annotations / "ADE_1.png").write_bytes(b"not a png")
    validation = ade20k_folder_datasets(str(tmp_path / "ade"))["validation"]
    policy = BadImagePolicy("skip", str(tmp_path / "skipped.tsv"))
    evaluation = SegmentationDataset(
        validation, "image", "annotation", SegmentationEvalTransform((24, 16)), bad_images=policy, substitute=False
    )
    items = [evaluation[i] for i in range(3)]
    assert items[1] is None and items[0] is not None and items[2] is not None
    assert segmentation_collator([items[1]]) is None and len(segmentation_collator(items)["labels"]) == 2
    assert (tmp_path / "skipped.tsv").read_text().startswith(str(annotations / "ADE_1.png"))
    training = SegmentationDataset(
        validation, "image", "annotation", SegmentationEvalTransform((24, 16)), bad_images=policy
    )
    assert torch.equal(training[1]["labels"], items[2]["labels"])  # in training the next pair takes its place
    Image.new("RGB", (16, 24)).save(annotations / "ADE_1.png")
    with pytest.raises(
        ValueError, match=r"annotation .*ADE_1.png \(item 1\) is a RGB image; .* class index per pixel"
    ):
        evaluation[1]
    Image.new("L", (17, 24)).save(annotations / "ADE_1.png")
    with pytest.raises(
        ValueError, match=r"ADE_1.png \(item 1\) is 17x24 pixels, its image .*ADE_1.jpg \(item 1\) 16x24"
    ):
        evaluation[1]


def test_class_names_come_from_the_data_or_the_arguments(tmp_path):
    assert segmentation_class_names("digits", None)[0][1] == "0"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "id2label.json").write_text(json.dumps({"0": "sky", "1": "road"}))
    assert segmentation_class_names(str(tmp_path / "data"), None) == ({0: "sky", 1: "road"}, False)
    assert segmentation_class_names("user/other", None, num_labels=3)[0] == {0: "0", 1: "1", 2: "2"}
    with pytest.raises(ValueError, match="--num_labels 3 disagrees with the 2 class names"):
        segmentation_class_names(str(tmp_path / "data"), None, num_labels=3)
    with pytest.raises(ValueError, match="No class names for the data: pass --id2label FILE"):
        segmentation_class_names(str(tmp_path), None)
    (tmp_path / "names.json").write_text('["sky", "road"]')
    with pytest.raises(ValueError, match=r"--id2label .*names.json: cannot read it as a JSON object"):
        read_id2label(str(tmp_path / "names.json"))


def test_digits_canvases_label_each_digit_with_its_class():
    splits = digits_segmentation_datasets(num_train=8, num_validation=4)
    annotation = np.array(splits["train"][0]["annotation"])
    image = np.array(splits["train"][0]["image"])
    assert image.shape == (64, 64, 3) and annotation.shape == (64, 64)
    assert set(np.unique(annotation)) <= set(range(11)) and len(np.unique(annotation)) >= 3  # background + 2 digits
    assert (image[annotation == 0].max() <= 64) and (image[annotation > 0].min() > 64)


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


# ---------------------------------------------------------------------------------------------- saved directory
@pytest.fixture
def saved_dir(tmp_path):
    torch.manual_seed(0)
    model = tiny_upernet(num_labels=3).eval()
    model.config.id2label = {0: "sky", 1: "road", 2: "car"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    save_segmentation_model(model, str(tmp_path / "segmenter"), segmentation_image_processor(32))
    return tmp_path / "segmenter", model


def test_the_saved_directory_loads_with_the_auto_class(saved_dir):
    directory, model = saved_dir
    loaded = AutoModelForSemanticSegmentation.from_pretrained(directory).eval()
    assert type(loaded) is UperNetForSemanticSegmentation and type(loaded.backbone) is SupMAEBackbone
    pixel_values = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values).logits, model(pixel_values).logits, rtol=0, atol=0)
    assert {"configuration_supmae.py", "modeling_supmae.py", "preprocessor_config.json"} <= set(os.listdir(directory))


def test_the_segmentation_pipeline_runs_on_the_saved_directory(saved_dir, monkeypatch):
    directory, model = saved_dir
    prompts = []
    monkeypatch.setattr("builtins.input", lambda *args: prompts.append(args) or "n")
    segment = pipeline("image-segmentation", model=str(directory))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    results = segment(image)
    assert prompts == []
    # The masks partition the image by the argmax of the logits, resized back to the image.
    pixel_values = segmentation_image_processor(32)(image, return_tensors="pt").pixel_values
    with torch.no_grad():
        logits = F.interpolate(model(pixel_values).logits, size=(40, 50), mode="bilinear", align_corners=False)
    expected = logits.argmax(1)[0].numpy()
    assert {r["label"] for r in results} == {model.config.id2label[c] for c in np.unique(expected)}
    for result in results:
        assert result["mask"].size == (50, 40)
        class_index = model.config.label2id[result["label"]]
        assert np.array_equal(np.array(result["mask"]) > 0, expected == class_index)


@pytest.mark.slow
def test_the_saved_directory_loads_as_remote_code_without_the_package(saved_dir, tmp_path):
    directory, model = saved_dir
    pixel_values = torch.randn(1, 3, 32, 32)
    torch.save(pixel_values, tmp_path / "inputs.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["supmae"] = None  # `import supmae` raises ImportError from here on
        import torch
        from transformers import AutoModelForSemanticSegmentation
        model = AutoModelForSemanticSegmentation.from_pretrained({str(directory)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            logits = model(torch.load({str(tmp_path / "inputs.pt")!r})).logits
        torch.save({{"logits": logits, "class": type(model).__name__}}, {str(tmp_path / "outputs.pt")!r})
    """)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = torch.load(tmp_path / "outputs.pt")
    assert outputs["class"] == "SupMAEUperNetForSemanticSegmentation"
    with torch.no_grad():
        torch.testing.assert_close(outputs["logits"], model(pixel_values).logits, rtol=0, atol=1e-6)


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
