"""Behaviour of the SupMAE models: initialization, masking, attention backends, checkpointing, compile, sizes, errors."""

import math

import pytest
import torch
from helpers import tiny_config
from reference import reference_supmae as ref

from supmae import SupMAEForImageClassification, SupMAEForPreTraining, SupMAEModel
from supmae.modeling_supmae import random_masking


LABELS = torch.tensor([0, 3, 4, 1])


# ---------------------------------------------------------------------------------------------------- initialization
def test_position_tables_from_config_are_the_sincos_formula():
    """Transformers 5.23 builds ViTMAE with all-zero tables; ours must hold the spec's sin-cos values."""
    config = tiny_config(image_size=[32, 48])
    model = SupMAEForPreTraining(config)
    encoder_table = model.supmae.embeddings.position_embeddings[0]
    decoder_table = model.decoder.decoder_pos_embed[0]
    torch.testing.assert_close(encoder_table, ref.sincos_pos_embed(32, 4, 6), atol=1e-6, rtol=0)
    torch.testing.assert_close(decoder_table, ref.sincos_pos_embed(16, 4, 6), atol=1e-6, rtol=0)
    # Spot-check one entry against the formula itself: the patch at row 2, column 5, first column frequency.
    assert encoder_table[1 + 2 * 6 + 5, 0].item() == pytest.approx(math.sin(5.0), abs=1e-6)
    assert encoder_table[1 + 2 * 6 + 5, 16].item() == pytest.approx(math.sin(2.0), abs=1e-6)
    assert not model.supmae.embeddings.position_embeddings.requires_grad
    assert not model.decoder.decoder_pos_embed.requires_grad


def _assert_uniform(tensor, bound):
    """Values of a U(-bound, bound) sample: inside the bound, reaching near it, with std bound / sqrt(3)."""
    assert tensor.abs().max() <= bound + 1e-7
    assert tensor.abs().max() > 0.95 * bound
    assert tensor.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)


def test_initialization_follows_the_official_recipe():
    config = tiny_config(
        hidden_size=128, num_attention_heads=4, intermediate_size=512, supervised_head_hidden_size=256
    )
    model = SupMAEForPreTraining(config)
    width = config.hidden_size
    layer = model.supmae.layers[0]
    # The fused qkv is ONE (3D x D) matrix: xavier bound sqrt(6 / (4D)), not that of three D x D matrices.
    _assert_uniform(layer.attention.qkv_proj.weight, math.sqrt(6 / (4 * width)))
    _assert_uniform(layer.mlp.fc1.weight, math.sqrt(6 / (width + 4 * width)))
    _assert_uniform(model.supervised_head.dense.weight, math.sqrt(6 / (width + 256)))
    for linear in (layer.attention.qkv_proj, layer.attention.o_proj, layer.mlp.fc2, model.decoder.decoder_pred):
        assert torch.count_nonzero(linear.bias) == 0
    # Patch embedding: xavier on its (D, C*P*P) view; the bias keeps PyTorch's default U(+-1/sqrt(fan_in)).
    projection = model.supmae.embeddings.patch_embeddings.projection
    fan_in = 3 * 8 * 8
    _assert_uniform(projection.weight, math.sqrt(6 / (width + fan_in)))
    assert projection.bias.abs().max() <= fan_in**-0.5 and torch.count_nonzero(projection.bias) == width
    # Tokens: normal(0, 0.02).
    tokens = torch.cat([model.supmae.embeddings.cls_token.flatten(), model.decoder.mask_token.flatten()])
    assert 0.015 < tokens.std().item() < 0.025
    assert torch.equal(layer.layernorm_before.weight, torch.ones(width))
    batch_norm = model.supervised_head.batch_norm
    assert torch.equal(batch_norm.weight, torch.ones(256)) and torch.equal(batch_norm.running_var, torch.ones(256))


def test_classifier_head_uses_the_fine_tuning_init():
    model = SupMAEForImageClassification(tiny_config(hidden_size=256, num_labels=100))
    weight = model.classifier.weight
    # trunc_normal_(std=2e-5) cuts at +-2 in absolute units (as timm's does), so it is a plain normal in effect.
    assert weight.std().item() == pytest.approx(2e-5, rel=0.1) and weight.mean().abs() < 1e-6
    assert torch.count_nonzero(model.classifier.bias) == 0
    assert model.supmae.embeddings.position_embeddings.requires_grad  # trainable in fine-tuning
    assert model.supmae.layernorm is None and model.fc_norm is not None


def test_linear_probe_head_is_batch_norm_without_affine_then_linear():
    model = SupMAEForImageClassification(tiny_config(classifier_batch_norm=True, classifier_pooling="cls")).train()
    assert model.batch_norm.weight is None and model.batch_norm.eps == 1e-6
    assert model.classifier.weight.std().item() == pytest.approx(0.01, rel=0.15)  # MAE's linear-probe init
    pixel_values = torch.randn(6, 3, 32, 32)
    features = model.supmae(pixel_values).last_hidden_state[:, 0]
    expected = model.classifier((features - features.mean(0)) / torch.sqrt(features.var(0, unbiased=False) + 1e-6))
    torch.testing.assert_close(model(pixel_values).logits, expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------- masking
def test_same_noise_same_mask_and_output(images):
    model = SupMAEForPreTraining(tiny_config()).eval()
    pixel_values, noise = images
    first, second = model(pixel_values, noise=noise), model(pixel_values, noise=noise)
    assert torch.equal(first.mask, second.mask) and torch.equal(first.logits, second.logits)
    other = model(pixel_values, noise=torch.rand_like(noise))
    assert not torch.equal(first.mask, other.mask)


@pytest.mark.parametrize("mask_ratio", [0.0, 0.5, 0.75, 0.9375])
def test_masking_keeps_the_lowest_noise_patches(mask_ratio):
    generator = torch.Generator().manual_seed(0)
    sequence = torch.randn(3, 16, 8, generator=generator)
    noise = torch.rand(3, 16, generator=generator)
    kept, mask, ids_restore = random_masking(sequence, mask_ratio, noise)
    len_keep = int(16 * (1 - mask_ratio))
    assert kept.shape == (3, len_keep, 8)
    assert torch.equal(mask.sum(1), torch.full((3,), 16.0 - len_keep))
    ranks = noise.argsort(1).argsort(1)
    assert torch.equal(mask, (ranks >= len_keep).float())
    for b in range(3):  # kept tokens are the original ones, smallest noise first
        assert torch.equal(kept[b], sequence[b, noise[b].argsort()[:len_keep]])
    assert torch.equal(ids_restore, noise.argsort(1).argsort(1))


def test_masked_encoder_sees_a_quarter_of_the_patches(images):
    pixel_values, noise = images
    model = SupMAEModel(tiny_config())
    assert model(pixel_values, noise=noise).last_hidden_state.shape == (4, 1 + 4, 32)
    assert model(pixel_values, mask_ratio=0.5).last_hidden_state.shape == (4, 1 + 8, 32)
    full = model(pixel_values)
    assert full.last_hidden_state.shape == (4, 1 + 16, 32) and full.mask.sum() == 0


def test_masking_that_keeps_nothing_is_refused():
    with pytest.raises(ValueError, match="keeps no patch"):
        random_masking(torch.randn(2, 4, 8), 0.8)
    with pytest.raises(Exception, match="`mask_ratio` 0.95 keeps no patch of the 16"):
        tiny_config(mask_ratio=0.95)


def test_wrong_noise_shape_is_refused(images):
    pixel_values, _ = images
    with pytest.raises(ValueError, match=r"`noise` must have shape \(batch_size, num_patches\) = \(4, 16\)"):
        SupMAEForPreTraining(tiny_config())(pixel_values, noise=torch.rand(4, 15))


# ------------------------------------------------------------------------------------------------------ the losses
def test_unlabeled_images_are_ignored_by_the_classification_loss(images):
    model = SupMAEForPreTraining(tiny_config()).eval()
    pixel_values, noise = images
    partial = model(pixel_values, labels=torch.tensor([0, -100, 4, -100]), noise=noise)
    expected = torch.nn.functional.cross_entropy(partial.classification_logits[[0, 2]] / 10.0, torch.tensor([0, 4]))
    torch.testing.assert_close(partial.classification_loss, expected)
    none = model(pixel_values, labels=torch.full((4,), -100), noise=noise)
    assert none.classification_loss.item() == 0.0 and torch.equal(none.loss, none.reconstruction_loss)


def test_batch_of_one_in_training_mode_names_the_batch_norm(images):
    pixel_values, noise = images
    model = SupMAEForPreTraining(tiny_config()).train()
    with pytest.raises(ValueError, match="BatchNorm1d needs more than one image per batch"):
        model(pixel_values[:1], labels=LABELS[:1], noise=noise[:1])
    # Without labels training is MAE: the head is skipped, so a batch of one works and its statistics stay put.
    output = model(pixel_values[:1], noise=noise[:1])
    assert output.classification_logits is None and torch.isfinite(output.loss)
    assert model.supervised_head.batch_norm.num_batches_tracked == 0
    model.eval()
    assert model(pixel_values[:1], noise=noise[:1]).classification_logits.shape == (1, 5)


# ---------------------------------------------------------------------------------------------- attention backends
def test_eager_and_sdpa_agree(images):
    pixel_values, noise = images
    eager = SupMAEForPreTraining(tiny_config(attn_implementation="eager")).eval()
    sdpa = SupMAEForPreTraining(tiny_config(attn_implementation="sdpa")).eval()
    sdpa.load_state_dict(eager.state_dict())
    assert sdpa.config._attn_implementation == "sdpa"
    a = eager(pixel_values, labels=LABELS, noise=noise, output_hidden_states=True)
    b = sdpa(pixel_values, labels=LABELS, noise=noise, output_hidden_states=True)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-6, rtol=0)
    for x, y in zip(a.hidden_states, b.hidden_states, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)


def test_hidden_states_and_attention_maps_on_request(images, caplog):
    pixel_values, noise = images
    model = SupMAEForPreTraining(tiny_config(attn_implementation="sdpa")).eval()
    output = model(pixel_values, noise=noise, output_hidden_states=True, output_attentions=True)
    assert len(output.hidden_states) == 3 and output.hidden_states[0].shape == (4, 5, 32)
    assert len(output.attentions) == 2 and output.attentions[0].shape == (4, 4, 5, 5)
    torch.testing.assert_close(output.attentions[0].sum(-1), torch.ones(4, 4, 5))
    # sdpa computes no maps: those calls fall back to eager, so the maps equal an eager model's.
    eager = SupMAEForPreTraining(tiny_config(attn_implementation="eager")).eval()
    eager.load_state_dict(model.state_dict())
    expected = eager(pixel_values, noise=noise, output_attentions=True).attentions
    for x, y in zip(output.attentions, expected, strict=True):
        torch.testing.assert_close(x, y)
    assert model(pixel_values, noise=noise).hidden_states is None


def test_return_dict_false_gives_a_tuple(images):
    pixel_values, noise = images
    model = SupMAEForPreTraining(tiny_config()).eval()
    as_dict = model(pixel_values, labels=LABELS, noise=noise)
    as_tuple = model(pixel_values, labels=LABELS, noise=noise, return_dict=False)
    assert isinstance(as_tuple, tuple)
    assert torch.equal(as_tuple[0], as_dict.loss) and torch.equal(as_tuple[3], as_dict.logits)
    classifier = SupMAEForImageClassification(tiny_config()).eval()
    assert torch.equal(classifier(pixel_values, return_dict=False)[0], classifier(pixel_values).logits)


# ---------------------------------------------------------------------------------------- training-step mechanics
def test_gradient_checkpointing_gives_the_same_gradients(images):
    pixel_values, noise = images
    plain = SupMAEForPreTraining(tiny_config()).train()
    checkpointed = SupMAEForPreTraining(tiny_config()).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in checkpointed.supmae.layers)
    for model in (plain, checkpointed):
        model(pixel_values, labels=LABELS, noise=noise).loss.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters(), strict=True):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)


def _compiled_step_matches_eager(backend, images):
    pixel_values, noise = images
    model = SupMAEForPreTraining(tiny_config()).train()
    reference = SupMAEForPreTraining(tiny_config()).train()
    reference.load_state_dict(model.state_dict())
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    try:
        loss = compiled(pixel_values, labels=LABELS, noise=noise).loss
        loss.backward()
    finally:
        torch._dynamo.reset()
    expected = reference(pixel_values, labels=LABELS, noise=noise).loss
    expected.backward()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        model.supmae.layers[0].attention.qkv_proj.weight.grad,
        reference.supmae.layers[0].attention.qkv_proj.weight.grad,
        atol=1e-5,
        rtol=1e-4,
    )


def test_training_step_compiles_with_fullgraph(images):
    """fullgraph=True fails on any graph break; aot_eager keeps the test fast while tracing forward and backward."""
    _compiled_step_matches_eager("aot_eager", images)


@pytest.mark.slow
def test_training_step_compiles_with_inductor(images):
    _compiled_step_matches_eager("inductor", images)


def test_drop_path_is_linear_over_blocks_and_off_in_eval(images):
    pixel_values, _ = images
    config = tiny_config(num_hidden_layers=3, drop_path_rate=0.3)
    model = SupMAEForImageClassification(config)
    assert [layer.drop_path_rate for layer in model.supmae.layers] == pytest.approx([0.0, 0.15, 0.3])
    model.eval()
    torch.testing.assert_close(model(pixel_values).logits, model(pixel_values).logits, atol=0, rtol=0)
    model.train()
    torch.manual_seed(0)
    first = model(pixel_values).logits
    torch.manual_seed(1)
    assert not torch.equal(first, model(pixel_values).logits)


# ------------------------------------------------------------------------------------------------ other image sizes
def test_other_image_sizes_need_interpolate_pos_encoding():
    model = SupMAEForPreTraining(tiny_config()).eval()
    pixel_values = torch.randn(2, 3, 48, 64)
    with pytest.raises(ValueError, match="pass `interpolate_pos_encoding=True`"):
        model(pixel_values)
    output = model(pixel_values, labels=torch.tensor([1, 2]), interpolate_pos_encoding=True)
    assert output.logits.shape == (2, 6 * 8, 8 * 8 * 3) and output.mask.shape == (2, 48)
    assert output.mask.sum(1).tolist() == [48 - 12, 48 - 12] and torch.isfinite(output.loss)
    # The reconstruction target is the patchified 48x64 image; unpatchify brings the prediction back to that size.
    assert model.unpatchify(output.logits, (48, 64)).shape == (2, 3, 48, 64)
    classifier = SupMAEForImageClassification(tiny_config()).eval()
    assert classifier(pixel_values, interpolate_pos_encoding=True).logits.shape == (2, 5)


def test_interpolation_resizes_the_table_bicubically():
    from supmae.modeling_supmae import interpolate_position_embeddings

    table = ref.sincos_pos_embed(16, 4, 4).unsqueeze(0)
    assert interpolate_position_embeddings(table, (4, 4), (4, 4)) is table
    resized = interpolate_position_embeddings(table, (4, 4), (6, 8))
    assert resized.shape == (1, 1 + 48, 16) and torch.equal(resized[:, 0], table[:, 0])
    grid = table[:, 1:].reshape(1, 4, 4, 16).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(6, 8), mode="bicubic", align_corners=False)
    torch.testing.assert_close(resized[0, 1:], expected[0].permute(1, 2, 0).reshape(48, 16))


def test_patchify_layout_and_round_trip():
    model = SupMAEForPreTraining(tiny_config(image_size=[32, 48]))
    pixel_values = torch.randn(2, 3, 32, 48)
    patches = model.patchify(pixel_values)
    torch.testing.assert_close(patches, ref.patchify(pixel_values, 8), atol=0, rtol=0)
    # Patch (row 1, col 2), pixel (row 3, col 5), channel 2 sits at index (3 * 8 + 5) * 3 + 2 of patch 1 * 6 + 2.
    assert patches[1, 8, (3 * 8 + 5) * 3 + 2] == pixel_values[1, 2, 8 + 3, 16 + 5]
    assert torch.equal(model.unpatchify(patches), pixel_values)


# ------------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 1, 32, 32), r"must have shape \(batch_size, 3, height, width\), got \(2, 1, 32, 32\)"),
        ((3, 32, 32), r"must have shape \(batch_size, 3, height, width\), got \(3, 32, 32\)"),
        ((2, 3, 36, 32), "Image size 36x32 is not divisible by the patch size 8"),
    ],
)
def test_wrong_input_shapes_are_named(shape, message):
    with pytest.raises(ValueError, match=message):
        SupMAEForPreTraining(tiny_config())(torch.randn(shape))


def test_unpatchify_names_the_mismatch():
    with pytest.raises(ValueError, match="don't make a 32x32 image with patch size 8"):
        SupMAEForPreTraining(tiny_config()).unpatchify(torch.randn(1, 15, 192))


@pytest.mark.parametrize(
    "problem_type, labels, loss_fn",
    [
        ("single_label_classification", torch.tensor([0, 3, 4, 1]), torch.nn.functional.cross_entropy),
        ("multi_label_classification", torch.eye(5)[:4], torch.nn.functional.binary_cross_entropy_with_logits),
        ("regression", torch.randn(4, 5), torch.nn.functional.mse_loss),
    ],
)
def test_classification_follows_transformers_problem_types(problem_type, labels, loss_fn, images):
    pixel_values, _ = images
    model = SupMAEForImageClassification(tiny_config(problem_type=problem_type)).eval()
    output = model(pixel_values, labels=labels)
    torch.testing.assert_close(output.loss, loss_fn(output.logits, labels))
