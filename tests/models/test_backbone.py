"""SupMAEBackbone: each stage is the output of an encoder block, the default stages are MAE's and BEiT's, and the
feature pyramid (MAE's neck) gives strides 4 to 32."""

import pytest
import torch
from helpers import backbone_config, tiny_config

from supmae import SupMAEBackbone, SupMAEConfig
from supmae.configuration_supmae import mae_dense_prediction_stages


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
