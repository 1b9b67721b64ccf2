"""Transformers' model contracts that the common tests read: `get_input_embeddings` on every model, and the backbone's
default stage (the last block only) with segmentation naming MAE's four blocks, including directories saved before
it named them."""

import json

import pytest
import torch
from helpers import tiny_config
from transformers import AutoModelForSemanticSegmentation

from supmae import SupMAEBackbone, SupMAEForImageClassification, SupMAEForPreTraining, SupMAEModel
from supmae.configuration_supmae import mae_dense_prediction_stages
from supmae.interop.upernet import backbone_config_from, save_segmentation_model, segmentation_model


def block_outputs(backbone, pixel_values):
    """{i: output of encoder block i (1-based), cls dropped, as a (B, D, h, w) map}."""
    outputs = {}
    handles = [
        layer.register_forward_hook(lambda module, args, output, i=i: outputs.__setitem__(i, output))
        for i, layer in enumerate(backbone.supmae.layers, start=1)
    ]
    batch_size, _, height, width = pixel_values.shape
    grid = (height // backbone.config.patch_size, width // backbone.config.patch_size)
    with torch.no_grad():
        feature_maps = backbone(pixel_values).feature_maps
    for handle in handles:
        handle.remove()
    maps = {i: out[:, 1:].transpose(1, 2).reshape(batch_size, -1, *grid) for i, out in outputs.items()}
    return feature_maps, maps


@pytest.mark.parametrize(
    "model_class", [SupMAEModel, SupMAEForPreTraining, SupMAEForImageClassification, SupMAEBackbone]
)
def test_every_model_returns_its_patch_embedding_as_input_embeddings(model_class):
    model = model_class(tiny_config(num_hidden_layers=4))
    encoder = model if model_class is SupMAEModel else model.supmae
    assert model.get_input_embeddings() is encoder.embeddings.patch_embeddings


def test_a_backbone_without_stages_returns_the_last_block_only(tmp_path):
    config = tiny_config(num_hidden_layers=4)
    assert config.out_features == ["stage4"] and config.out_indices == [4]
    torch.manual_seed(0)
    backbone = SupMAEBackbone(config).eval()
    assert backbone.channels == [config.hidden_size]
    feature_maps, blocks = block_outputs(backbone, torch.randn(2, 3, 32, 48))
    assert len(feature_maps) == 1
    torch.testing.assert_close(feature_maps[0], blocks[4], rtol=0, atol=0)
    # The default follows the depth, and a backbone from a pretraining directory gets the same.
    config.num_hidden_layers = 3
    assert config.out_features == ["stage3"]
    SupMAEForPreTraining(tiny_config(num_hidden_layers=4)).save_pretrained(tmp_path)
    # (AutoBackbone.from_pretrained asks the Hub whether a local directory is a repository, in Transformers 5.24.)
    assert SupMAEBackbone.from_pretrained(str(tmp_path)).out_features == ["stage4"]


def test_segmentation_names_maes_four_blocks():
    encoder = tiny_config(num_hidden_layers=12, hidden_size=16)
    config = backbone_config_from(encoder, image_size=32)
    assert config.to_dict()["out_features"] == ["stage4", "stage6", "stage8", "stage12"]  # stored, not derived
    assert config.out_features == mae_dense_prediction_stages(12) and config.add_fpn
    without_pyramid = SupMAEBackbone(config.__class__(**{**config.to_dict(), "add_fpn": False}))
    feature_maps, blocks = block_outputs(without_pyramid, torch.randn(1, 3, 32, 32))
    for feature_map, block in zip(feature_maps, (4, 6, 8, 12), strict=True):
        torch.testing.assert_close(feature_map, blocks[block], rtol=0, atol=0)


@pytest.mark.parametrize("remote_code", [False, True], ids=["import-supmae", "remote-code"])
def test_a_segmentation_directory_saved_before_the_stages_were_named_keeps_them(tmp_path, remote_code):
    """Segmentation directories used to store `out_features: null` in their backbone config (the four blocks were the
    backbone's default). Those load with MAE's four blocks and the same outputs."""
    torch.manual_seed(0)
    encoder = tiny_config(num_hidden_layers=4)
    model, _ = segmentation_model(None, {0: "a", 1: "b"}, 32, config=encoder, decode_channels=16, auxiliary_channels=8)
    model.eval()
    save_segmentation_model(model, str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["backbone_config"]["out_features"] == ["stage1", "stage2", "stage3", "stage4"]
    config["backbone_config"]["out_features"] = config["backbone_config"]["out_indices"] = None  # the old way
    (tmp_path / "config.json").write_text(json.dumps(config, indent=2))

    loaded = AutoModelForSemanticSegmentation.from_pretrained(str(tmp_path), trust_remote_code=remote_code).eval()
    assert type(loaded).__module__.startswith("transformers_modules") == remote_code
    assert loaded.backbone.out_features == ["stage1", "stage2", "stage3", "stage4"]
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values).logits, model(pixel_values).logits, rtol=0, atol=0)
