"""Shared pieces of the test suite: tiny configs and random weights in the official layout."""

import os
import sys

import pytest
import torch


sys.path.insert(0, os.path.dirname(__file__))  # tests/reference_supmae.py

# Stand-ins imported by Transformers' common test mixins (tests/transformers_mixins.py), not tests of their own.
collect_ignore = ["transformers_shims"]

# Nothing in the test suite may reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import reference_supmae as ref  # noqa: E402

from supmae import SupMAEConfig  # noqa: E402


TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    image_size=32,
    patch_size=8,
    decoder_hidden_size=16,
    decoder_num_hidden_layers=2,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=64,
    supervised_head_hidden_size=24,
    num_labels=5,
)


def tiny_config(**overrides) -> SupMAEConfig:
    """A 2-layer, 32-wide SupMAE on 32x32 images with 8x8 patches (L = 16)."""
    return SupMAEConfig(**{**TINY, **overrides})


def official_state_dict(config: SupMAEConfig, seed: int = 0, **kwargs) -> dict:
    """Random weights in the official pretraining layout for `config`'s architecture."""
    return ref.random_official_state_dict(
        hidden_size=config.hidden_size,
        depth=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        mlp_ratio=config.intermediate_size / config.hidden_size,
        decoder_hidden_size=config.decoder_hidden_size,
        decoder_depth=config.decoder_num_hidden_layers,
        decoder_num_heads=config.decoder_num_attention_heads,
        decoder_mlp_ratio=config.decoder_intermediate_size / config.decoder_hidden_size,
        patch_size=config.patch_size,
        num_channels=config.num_channels,
        image_size=config.image_size,
        head_hidden_size=config.supervised_head_hidden_size,
        num_labels=config.num_labels,
        seed=seed,
        **kwargs,
    )


@pytest.fixture
def images():
    """Four 32x32 RGB images and masking noise for them."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 32, 32, generator=generator), torch.rand(4, 16, generator=generator)
