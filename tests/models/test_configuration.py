"""SupMAEConfig: defaults of the released model, presets, validation messages, serialization."""

import pytest
from helpers import tiny_config

from supmae import SUPMAE_PRESETS, SupMAEConfig, SupMAEForPreTraining


def test_defaults_are_the_released_supmae_vit_b16():
    config = SupMAEConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (
        768,
        12,
        12,
        3072,
    )
    assert (
        config.decoder_hidden_size,
        config.decoder_num_hidden_layers,
        config.decoder_num_attention_heads,
        config.decoder_intermediate_size,
    ) == (512, 1, 16, 2048)
    assert config.layer_norm_eps == 1e-6 and config.norm_pix_loss and config.mask_ratio == 0.75
    assert config.num_labels == 1000 and config.supervised_head_hidden_size == 3072
    assert (config.supervised_loss_weight, config.supervised_temperature) == (0.01, 10.0)
    assert config.grid_size == (14, 14) and config.num_patches == 196


def test_released_architecture_has_the_official_parameter_count():
    """ViT-B/16 encoder + 3072-wide head, counted from shapes on the meta device."""
    import torch

    with torch.device("meta"):
        model = SupMAEForPreTraining(SupMAEConfig())
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in model.named_children()}
    # timm's vit_base_patch16_224 has 86,567,656 parameters, 769,000 of them in its 1000-class head.
    assert counts["supmae"] == 86_567_656 - 769_000
    assert counts["supervised_head"] == 768 * 3072 + 3072 + 2 * 3072 + 3072 * 1000 + 1000


@pytest.mark.parametrize("name", sorted(SUPMAE_PRESETS))
def test_presets_build(name):
    config = SupMAEConfig.from_preset(name, num_labels=10)
    assert config.num_labels == 10
    assert config.hidden_size % config.num_attention_heads == 0
    expected_decoder_depth = 1 if name in ("vit-small-patch16", "vit-base-patch16") else 8
    assert config.decoder_num_hidden_layers == expected_decoder_depth


def test_preset_values():
    huge = SupMAEConfig.from_preset("vit-huge-patch14")
    assert (huge.hidden_size, huge.num_hidden_layers, huge.patch_size, huge.grid_size) == (1280, 32, 14, (16, 16))
    large = SupMAEConfig.from_preset("vit-large-patch16", image_size=32)
    assert (large.hidden_size, large.num_hidden_layers, large.num_attention_heads, large.image_size) == (
        1024,
        24,
        16,
        32,
    )


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match="Unknown SupMAE preset 'vit-gigantic'.*vit-base-patch16"):
        SupMAEConfig.from_preset("vit-gigantic")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hidden_size": 30}, r"`hidden_size` \(30\) must be divisible by `num_attention_heads` \(4\)"),
        ({"decoder_num_attention_heads": 3}, r"`decoder_hidden_size` \(16\) must be divisible by `decoder_num_attent"),
        ({"hidden_size": 30, "num_attention_heads": 3}, r"`hidden_size` \(30\) must be divisible by 4"),
        ({"image_size": 36}, r"`image_size` 36 must be positive and divisible by `patch_size` \(8\)"),
        ({"image_size": [32, 40, 8]}, r"`image_size` must be an int or a \(height, width\) pair"),
        ({"mask_ratio": 1.0}, r"`mask_ratio` must be in \[0, 1\), got 1.0"),
        ({"mask_ratio": -0.1}, r"`mask_ratio` must be in \[0, 1\), got -0.1"),
        ({"supervised_pooling": "max"}, r"`supervised_pooling` must be one of \('mean', 'cls'\), got 'max'"),
        ({"classifier_pooling": "avg"}, r"`classifier_pooling` must be one of \('mean', 'cls'\), got 'avg'"),
        ({"num_hidden_layers": 0}, "`num_hidden_layers` must be a positive integer, got 0"),
        ({"supervised_head_hidden_size": -1}, "`supervised_head_hidden_size` must be >= 0, got -1"),
        ({"supervised_temperature": 0.0}, "`supervised_temperature` must be > 0, got 0.0"),
        ({"drop_path_rate": 1.0}, r"`drop_path_rate` must be in \[0, 1\), got 1.0"),
        ({"hidden_act": "swishy"}, "`hidden_act` 'swishy' is not one of"),
        ({"num_labels": 0}, "`num_labels` must be >= 1, got 0"),
    ],
)
def test_invalid_values_name_the_field_and_the_allowed_range(overrides, message):
    with pytest.raises(Exception, match=message):
        tiny_config(**overrides)


def test_wrong_types_are_refused():
    with pytest.raises(Exception, match="hidden_size"):
        tiny_config(hidden_size="32")


def test_round_trip_through_json(tmp_path):
    config = tiny_config(
        image_size=[32, 48], mask_ratio=0.5, id2label={0: "a", 1: "b"}, num_labels=2, drop_path_rate=0.1
    )
    config.save_pretrained(tmp_path)
    loaded = SupMAEConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.grid_size == (4, 6) and loaded.id2label == {0: "a", 1: "b"} and loaded.num_labels == 2
