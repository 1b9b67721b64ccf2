"""UperNet on a SupMAE encoder (supmae.interop.upernet): it builds and trains, a pretraining or fine-tuned checkpoint
starts its backbone (the position table resized, with a one-sentence report), and its saved directory loads with the
Auto class, in the pipeline, and as remote code without the package."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import HEADS, backbone_config, official_state_dict, save_official, tiny_upernet
from PIL import Image
from reference import reference_supmae as ref
from transformers import AutoBackbone, AutoModelForSemanticSegmentation, UperNetForSemanticSegmentation, pipeline
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from supmae import SupMAEBackbone, SupMAEForImageClassification, SupMAEForPreTraining
from supmae.data.segmentation import UNLABELED_PIXEL
from supmae.interop.convert import convert, save_converted
from supmae.interop.upernet import save_segmentation_model, segmentation_image_processor, segmentation_model


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


# ------------------------------------------------------------------------------------ a checkpoint starts the backbone
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
    """The backbone's stages against tests/reference/reference_supmae.py on the ORIGINAL official weights."""
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


# ------------------------------------------------------------------------------------------------- the saved directory
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
