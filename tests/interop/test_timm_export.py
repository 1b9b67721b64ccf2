"""Export to timm's VisionTransformer: the same logits as our classifier, through every route a timm user takes."""

import json

import pytest
import torch
from helpers import tiny_config


timm = pytest.importorskip("timm")
from safetensors.torch import load_file  # noqa: E402

from supmae import SupMAEConfig, SupMAEForImageClassification, SupMAEForPreTraining  # noqa: E402
from supmae.interop.timm_export import _architecture, export_to_timm, save_timm, timm_kwargs  # noqa: E402


HEADS = {
    "mean": dict(classifier_pooling="mean"),  # mean of the patch tokens, then fc_norm
    "cls": dict(classifier_pooling="cls"),  # the final-normed cls token
    "linear_probe": dict(classifier_batch_norm=True),  # BatchNorm1d without affine, folded into the classifier
}
# Logits of magnitude up to ~5. In float64 the export is exact up to summation order (measured <= 2e-15, in every
# head): 1e-12 catches any mapping slip, a LayerNorm eps or a folding mistake of 1e-6 included. In float32, what timm
# users run, twice the largest difference measured: 1.4e-6 between our eager attention and timm's fused one (with our
# default sdpa, 0 for the mean and cls heads and 6e-7 for the linear probe, whose folded head is rounded once more).
TOLERANCE = {torch.float64: 1e-12, torch.float32: 3e-6}
DTYPES = pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])


def random_classifier(**overrides) -> SupMAEForImageClassification:
    """A tiny classifier in eval mode with every weight and statistic random, so that no mapping error can hide behind
    an initialization (ones, zeros, a near-zero classifier, a sin-cos table with a zero cls row)."""
    model = SupMAEForImageClassification(tiny_config(**overrides)).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
        if model.batch_norm is not None:
            model.batch_norm.running_mean.copy_(torch.randn(model.config.hidden_size, generator=generator))
            model.batch_norm.running_var.copy_(0.5 + 1.5 * torch.rand(model.config.hidden_size, generator=generator))
    return model


@torch.no_grad()
def max_logit_difference(model, timm_model, pixel_values) -> float:
    expected = model(pixel_values).logits
    actual = timm_model(pixel_values)
    assert actual.shape == expected.shape == (pixel_values.shape[0], model.config.num_labels)
    assert expected.abs().max() > 0.5  # random weights give logits that a mapping error would change visibly
    return (actual - expected).abs().max().item()


@DTYPES
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("head", HEADS)
def test_timm_logits_match(head, attn_implementation, dtype, images):
    model = random_classifier(**HEADS[head])
    model.config._attn_implementation = attn_implementation
    model.to(dtype)
    timm_model = export_to_timm(model)
    assert not timm_model.training
    assert all(p.dtype == dtype for p in timm_model.parameters())  # a float64 model is not rounded to float32
    assert max_logit_difference(model, timm_model, images[0].to(dtype)) <= TOLERANCE[dtype]


def test_linear_probe_batch_norm_is_folded():
    model = random_classifier(classifier_batch_norm=True)
    timm_model = export_to_timm(model)
    assert not any(isinstance(module, torch.nn.BatchNorm1d) for module in timm_model.modules())
    assert not torch.allclose(timm_model.head.weight, model.classifier.weight)


@pytest.mark.parametrize("head", HEADS)
def test_saved_directory_loads_in_timm(head, images, tmp_path):
    model = random_classifier(**HEADS[head], id2label={i: f"class {i}" for i in range(5)})
    save_timm(model, tmp_path)

    # The documented route: timm's local-dir source reads config.json and model.safetensors.
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert max_logit_difference(model, loaded, images[0]) <= TOLERANCE[torch.float32]
    assert loaded.pretrained_cfg["label_names"] == [f"class {i}" for i in range(5)]
    data_config = timm.data.resolve_data_config(model=loaded)
    assert data_config["input_size"] == (3, 32, 32)
    assert data_config["interpolation"] == "bicubic" and data_config["crop_pct"] == 0.875

    # The fallback for timm without local-dir: build from model_args, then load the state dict strictly.
    config = json.loads((tmp_path / "config.json").read_text())
    rebuilt = timm.create_model(config["architecture"], pretrained=False, **config["model_args"]).eval()
    rebuilt.load_state_dict(load_file(tmp_path / "model.safetensors"))
    assert max_logit_difference(model, rebuilt, images[0]) <= TOLERANCE[torch.float32]


def test_non_default_layer_norm_eps(images, tmp_path):
    """Exact in memory; refused on disk, where timm's config.json can only name its eps-1e-6 LayerNorm."""
    model = random_classifier(layer_norm_eps=1e-5).double()
    assert timm_kwargs(model.config)["norm_layer"](32).eps == 1e-5
    timm_model = export_to_timm(model)
    assert timm_model.blocks[0].norm1.eps == timm_model.fc_norm.eps == 1e-5
    assert max_logit_difference(model, timm_model, images[0].double()) <= TOLERANCE[torch.float64]
    with pytest.raises(ValueError, match="eps"):
        save_timm(model, tmp_path)


def test_architecture_name_is_timms():
    assert _architecture(SupMAEConfig.from_preset("vit-base-patch16")) == "vit_base_patch16_224"
    assert _architecture(SupMAEConfig.from_preset("vit-large-patch16")) == "vit_large_patch16_224"
    assert timm.is_model(_architecture(tiny_config()))  # a registered builder; model_args set the architecture


def test_pretraining_model_is_refused(tmp_path):
    model = SupMAEForPreTraining(tiny_config())
    for export in (export_to_timm, lambda m: save_timm(m, tmp_path)):
        with pytest.raises(TypeError, match="SupMAEForImageClassification.*SupMAEForPreTraining"):
            export(model)
