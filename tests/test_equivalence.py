"""SupMAE against the independent functional reference (tests/reference_supmae.py) over the OFFICIAL layout.

Same weights and the same masking noise must give the same mask, pixel predictions, classification logits and
losses. Tolerance: 1e-5 absolute in float32 (what summation order between fused and hand-written attention allows;
the observed differences are ~2e-6 at most).
"""

import pytest
import reference_supmae as ref
import torch
from conftest import official_state_dict, tiny_config

from supmae import SupMAEForImageClassification, SupMAEForPreTraining, SupMAEModel
from supmae.convert import official_to_supmae_state_dict, supmae_to_official_state_dict


ATOL = 1e-5
LABELS = torch.tensor([0, 3, 4, 1])


def load_official(model_class, config, state_dict):
    model = model_class(config)
    renamed, unknown = official_to_supmae_state_dict(state_dict, config.supervised_head_hidden_size)
    assert unknown == []
    model.load_state_dict(renamed, strict=True)
    return model


def reference_pretraining(config, state_dict, pixel_values, noise, labels=None, training=False):
    return ref.pretraining_forward(
        state_dict,
        pixel_values,
        labels,
        num_heads=config.num_attention_heads,
        decoder_num_heads=config.decoder_num_attention_heads,
        patch_size=config.patch_size,
        mask_ratio=config.mask_ratio,
        noise=noise,
        norm_pix_loss=config.norm_pix_loss,
        pooling=config.supervised_pooling,
        training=training,
        loss_weight=config.supervised_loss_weight,
        temperature=config.supervised_temperature,
    )


def assert_matches_reference(output, expected, labels):
    assert torch.equal(output.mask, expected["mask"])
    assert torch.equal(output.ids_restore, expected["ids_restore"])
    torch.testing.assert_close(output.logits, expected["pred"], atol=ATOL, rtol=0)
    torch.testing.assert_close(output.classification_logits, expected["logits"], atol=ATOL, rtol=0)
    torch.testing.assert_close(output.reconstruction_loss, expected["rec_loss"], atol=ATOL, rtol=0)
    torch.testing.assert_close(output.loss, expected["loss"], atol=ATOL, rtol=0)
    if labels is None:
        assert output.classification_loss is None
    else:
        torch.testing.assert_close(output.classification_loss, expected["cls_loss"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"supervised_head_hidden_size": 0},
        {"supervised_pooling": "cls"},
        {"norm_pix_loss": False, "mask_ratio": 0.5},
        {"decoder_num_hidden_layers": 1, "image_size": [32, 48]},
    ],
    ids=["default", "linear-head", "cls-pooling", "raw-pixels", "1-block-decoder-non-square"],
)
@pytest.mark.parametrize("with_labels", [True, False], ids=["labels", "no-labels"])
def test_pretraining_matches_reference(attn_implementation, overrides, with_labels):
    config = tiny_config(**overrides)
    config._attn_implementation = attn_implementation
    state_dict = official_state_dict(config, seed=1)
    model = load_official(SupMAEForPreTraining, config, state_dict).eval()
    generator = torch.Generator().manual_seed(2)
    height, width = config.grid_size
    pixel_values = torch.randn(4, 3, height * 8, width * 8, generator=generator)
    noise = torch.rand(4, config.num_patches, generator=generator)
    labels = LABELS if with_labels else None

    with torch.no_grad():
        output = model(pixel_values, labels=labels, noise=noise)
    assert_matches_reference(output, reference_pretraining(config, state_dict, pixel_values, noise, labels), labels)


def test_training_mode_batch_norm_matches_reference(images):
    """In train mode the head's BatchNorm normalizes with batch statistics, and updates its running ones."""
    config = tiny_config()
    state_dict = official_state_dict(config, seed=3)
    model = load_official(SupMAEForPreTraining, config, state_dict).train()
    pixel_values, noise = images
    output = model(pixel_values, labels=LABELS, noise=noise)
    expected = reference_pretraining(config, state_dict, pixel_values, noise, LABELS, training=True)
    assert_matches_reference(output, expected, LABELS)
    assert not torch.equal(model.supervised_head.batch_norm.running_mean, state_dict["cls_head.1.running_mean"])


def test_gradients_match_reference(images):
    """Backpropagating the total loss gives the reference's gradient for every trainable official tensor."""
    config = tiny_config()
    config._attn_implementation = "eager"
    state_dict = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in official_state_dict(config).items()}
    model = load_official(SupMAEForPreTraining, config, {k: v.detach() for k, v in state_dict.items()}).train()
    pixel_values, noise = images
    model(pixel_values, labels=LABELS, noise=noise).loss.backward()
    expected = reference_pretraining(config, state_dict, pixel_values, noise, LABELS, training=True)["loss"]
    official_names = supmae_to_official_state_dict(dict(model.named_parameters()))
    trainable = {name: p for name, p in official_names.items() if p.requires_grad}
    assert set(official_names) - set(trainable) == {"pos_embed", "decoder_pos_embed"}  # fixed sin-cos tables
    reference_grads = torch.autograd.grad(expected, [state_dict[name] for name in trainable])
    for (name, parameter), reference_grad in zip(trainable.items(), reference_grads, strict=True):
        torch.testing.assert_close(parameter.grad, reference_grad, atol=ATOL, rtol=1e-4, msg=name)


def test_unmasked_encoding_is_the_reference_encoder_in_image_order(images):
    """A plain SupMAEModel call encodes all patches in image order: the reference encoder at mask ratio 0 gives the
    same tokens once un-shuffled."""
    config = tiny_config()
    state_dict = official_state_dict(config, seed=4)
    renamed, _ = official_to_supmae_state_dict(state_dict)
    encoder = SupMAEModel(config).eval()
    encoder.load_state_dict({k.removeprefix("supmae."): v for k, v in renamed.items() if k.startswith("supmae.")})
    pixel_values, noise = images
    with torch.no_grad():
        output = encoder(pixel_values)
    latent, mask, ids_restore = ref.encoder_forward(
        state_dict, pixel_values, num_heads=config.num_attention_heads, mask_ratio=0.0, noise=noise
    )
    in_order = torch.gather(latent[:, 1:], 1, ids_restore.unsqueeze(-1).expand(-1, -1, latent.shape[-1]))
    assert output.mask.sum() == 0 and mask.sum() == 0
    torch.testing.assert_close(output.last_hidden_state[:, 0], latent[:, 0], atol=ATOL, rtol=0)
    torch.testing.assert_close(output.last_hidden_state[:, 1:], in_order, atol=ATOL, rtol=0)
    assert torch.equal(output.ids_restore[0], torch.arange(16))


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_classification_matches_reference_finetuned(attn_implementation, pooling, images):
    config = tiny_config(classifier_pooling=pooling)
    config._attn_implementation = attn_implementation
    state_dict = ref.random_official_finetuned_state_dict(
        hidden_size=32,
        depth=2,
        num_heads=4,
        mlp_ratio=4.0,
        patch_size=8,
        num_channels=3,
        image_size=32,
        num_labels=5,
        seed=5,
        pooling=pooling,
    )
    model = load_official(SupMAEForImageClassification, config, state_dict).eval()
    pixel_values, _ = images
    with torch.no_grad():
        logits = model(pixel_values).logits
    expected = ref.finetuned_forward(state_dict, pixel_values, num_heads=4, pooling=pooling)
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)


def test_released_head_name_is_accepted():
    """The released pretraining file may call the head `projection_head.*`."""
    config = tiny_config()
    state_dict = official_state_dict(config, seed=6, head_name="projection_head")
    renamed, unknown = official_to_supmae_state_dict(state_dict)
    assert unknown == [] and any(k.startswith("supervised_head.batch_norm") for k in renamed)


def test_layout_round_trip_is_exact():
    config = tiny_config()
    state_dict = official_state_dict(config, seed=7)
    renamed, _ = official_to_supmae_state_dict(state_dict)
    back = supmae_to_official_state_dict(renamed)
    assert back.keys() == state_dict.keys()
    assert all(torch.equal(back[k], state_dict[k]) for k in state_dict)
