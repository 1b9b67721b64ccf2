"""supmae.convert: official SupMAE / MAE checkpoints and Transformers ViTMAE into supmae directories.

Synthetic checkpoints (random weights from tests/reference/reference_supmae.py, saved as the official wrapper dict
with an argparse.Namespace) convert without missing keys and then match the independent functional reference over
the ORIGINAL state dict within 1e-5, for the same noise.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import HEADS, official_state_dict, save_official, tiny_config
from huggingface_hub import ModelCard
from reference import reference_supmae as ref
from safetensors.torch import save_file
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from supmae import SupMAEForImageClassification, SupMAEForPreTraining, SupMAEModel
from supmae.interop.convert import convert, main, read_checkpoint


ATOL = 1e-5
LABELS = torch.tensor([0, 3, 4, 1])


def inputs(seed=0, size=32, patches=16):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, size, size, generator=generator), torch.rand(4, patches, generator=generator)


@pytest.mark.parametrize("head_name", ["cls_head", "projection_head"])
def test_official_supmae_pretraining_matches_the_reference(tmp_path, head_name):
    config = tiny_config()
    state_dict = official_state_dict(config, seed=11, head_name=head_name)
    path = save_official(tmp_path / "supmae_pretrain.pth", state_dict)
    model, report = convert(path, **HEADS)
    assert type(model) is SupMAEForPreTraining and report.task == "pretraining"
    assert report.used == len(state_dict) and report.dropped == {} and report.new == []
    assert "official SupMAE pretraining" in report.source and len(report.md5) == 32
    assert model.config.supervised_head_hidden_size == 24 and model.config.num_labels == 5
    pixel_values, noise = inputs()
    with torch.no_grad():
        output = model(pixel_values, labels=LABELS, noise=noise)
    expected = ref.pretraining_forward(
        state_dict, pixel_values, LABELS, num_heads=4, decoder_num_heads=2, patch_size=8, mask_ratio=0.75, noise=noise
    )
    assert torch.equal(output.mask, expected["mask"])
    torch.testing.assert_close(output.logits, expected["pred"], atol=ATOL, rtol=0)
    torch.testing.assert_close(output.classification_logits, expected["logits"], atol=ATOL, rtol=0)
    torch.testing.assert_close(output.loss, expected["loss"], atol=ATOL, rtol=0)
    torch.testing.assert_close(output.classification_loss, expected["cls_loss"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_official_fine_tuned_matches_the_reference(tmp_path, pooling):
    state_dict = ref.random_official_finetuned_state_dict(
        hidden_size=32,
        depth=2,
        num_heads=4,
        mlp_ratio=4.0,
        patch_size=8,
        num_channels=3,
        image_size=32,
        num_labels=7,
        seed=12,
        pooling=pooling,
    )
    model, report = convert(save_official(tmp_path / "finetuned.pth", state_dict), num_attention_heads=4)
    assert type(model) is SupMAEForImageClassification and report.task == "classification"
    assert model.config.classifier_pooling == pooling and model.config.num_labels == 7
    pixel_values, _ = inputs()
    with torch.no_grad():
        logits = model(pixel_values).logits
    expected = ref.finetuned_forward(state_dict, pixel_values, num_heads=4, pooling=pooling)
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)


def test_mae_with_decoder_gets_a_new_supervised_head(tmp_path):
    config = tiny_config()
    state_dict = official_state_dict(config, seed=13)
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith("cls_head.")}  # MAE has no head
    model, report = convert(save_official(tmp_path / "mae_pretrain_vit_full.pth", state_dict), **HEADS)
    assert report.new == ["supervised_head"] and "MAE pretraining" in report.source
    pixel_values, noise = inputs(1)
    with torch.no_grad():
        output = model(pixel_values, noise=noise)
    expected = ref.pretraining_forward(
        state_dict, pixel_values, None, num_heads=4, decoder_num_heads=2, patch_size=8, mask_ratio=0.75, noise=noise
    )
    torch.testing.assert_close(output.logits, expected["pred"], atol=ATOL, rtol=0)
    torch.testing.assert_close(output.reconstruction_loss, expected["rec_loss"], atol=ATOL, rtol=0)


def test_mae_visualize_checkpoint_keeps_its_raw_pixel_loss(tmp_path):
    """MAE's "visualize" releases were trained to predict raw pixels: the file's args say norm_pix_loss=False."""
    state_dict = official_state_dict(tiny_config(), seed=21)
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith("cls_head.")}
    path = save_official(tmp_path / "mae_visualize_vit_base.pth", state_dict, norm_pix_loss=False, mask_ratio=0.6)
    model, _ = convert(path, **HEADS)
    assert model.config.norm_pix_loss is False and model.config.mask_ratio == 0.6
    pixel_values, _ = inputs(6)
    noise = torch.rand(4, 16, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        output = model(pixel_values, noise=noise)
    expected = ref.pretraining_forward(
        state_dict,
        pixel_values,
        None,
        num_heads=4,
        decoder_num_heads=2,
        patch_size=8,
        mask_ratio=0.6,
        noise=noise,
        norm_pix_loss=False,
    )
    torch.testing.assert_close(output.reconstruction_loss, expected["rec_loss"], atol=ATOL, rtol=0)


def test_mae_encoder_only_becomes_the_encoder(tmp_path):
    state_dict = official_state_dict(tiny_config(), seed=14)
    encoder_only = {k: v for k, v in state_dict.items() if not k.startswith(("decoder", "mask_token", "cls_head"))}
    model, report = convert(save_official(tmp_path / "mae_pretrain_vit.pth", encoder_only), num_attention_heads=4)
    assert type(model) is SupMAEModel and report.task == "encoder" and report.used == len(encoder_only)
    pixel_values, noise = inputs(2)
    with torch.no_grad():
        output = model(pixel_values, noise=noise)
    latent, mask, _ = ref.encoder_forward(encoder_only, pixel_values, num_heads=4, mask_ratio=0.75, noise=noise)
    torch.testing.assert_close(output.last_hidden_state, latent, atol=ATOL, rtol=0)
    assert torch.equal(output.mask, mask)


def test_encoder_task_drops_the_decoder_and_head_by_rule(tmp_path):
    state_dict = official_state_dict(tiny_config(), seed=15)
    _, report = convert(save_official(tmp_path / "p.pth", state_dict), task="encoder", **HEADS)
    decoder = sum(k.startswith(("decoder", "mask_token")) for k in state_dict)
    assert report.dropped == {"the pixel decoder": decoder, "the supervised head": 9}
    assert report.used == len(state_dict) - decoder - 9


# ------------------------------------------------------------------------------------------- Transformers ViTMAE
def vitmae_model():
    config = ViTMAEConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
        norm_pix_loss=True,
    )
    model = ViTMAEForPreTraining(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every tensor random, the position tables included, so no mapping mistake can hide
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model


@pytest.mark.parametrize("naming", ["v5 save_pretrained", "v4 Hub", "v5 state dict"])
def test_vitmae_converts_to_the_same_outputs(tmp_path, naming):
    vitmae = vitmae_model()
    directory = tmp_path / "vit-mae"
    vitmae.save_pretrained(directory)  # v5 writes the v4 names, with the decoder under decoder_encoder.layer
    if naming != "v5 save_pretrained":
        from safetensors.torch import load_file

        on_disk = load_file(directory / "model.safetensors")
        if naming == "v4 Hub":  # as the Hub's v4 checkpoints name the decoder
            state = {
                k.replace("decoder.decoder_encoder.layer.", "decoder.decoder_layers."): v for k, v in on_disk.items()
            }
        else:
            state = {k: v.contiguous() for k, v in vitmae.state_dict().items()}
        save_file(state, directory / "model.safetensors")
    model, report = convert(str(directory), decoder_num_attention_heads=2, num_attention_heads=4)
    assert "ViTMAE" in report.source and report.new == ["supervised_head"] and report.dropped == {}
    assert model.config.layer_norm_eps == vitmae.config.layer_norm_eps and model.config.norm_pix_loss
    pixel_values, noise = inputs(3)
    with torch.no_grad():
        expected = vitmae(pixel_values, noise=noise)
        output = model(pixel_values, noise=noise)
        encoded = model.supmae(pixel_values, noise=noise).last_hidden_state
        expected_encoded = vitmae.vit(pixel_values, noise=noise).last_hidden_state
    assert torch.equal(output.mask, expected.mask)
    torch.testing.assert_close(encoded, expected_encoded, atol=ATOL, rtol=0)
    torch.testing.assert_close(output.logits, expected.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(output.reconstruction_loss, expected.loss, atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------------------- refusals
class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file if unpickled


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 8)}, "payload": _RunsCode(str(marker))}, path)
    with pytest.raises(ValueError, match="Refusing to load .*evil.pth: it is not a plain weights file"):
        read_checkpoint(str(path))
    assert not marker.exists()


def test_unknown_tensors_are_refused(tmp_path):
    state_dict = official_state_dict(tiny_config(), seed=16)
    state_dict["extra_projection.weight"] = torch.zeros(2, 2)
    with pytest.raises(ValueError, match=r"1 tensors this converter does not know: \['extra_projection.weight'\]"):
        convert(save_official(tmp_path / "p.pth", state_dict), **HEADS)


def test_head_count_that_shapes_cannot_tell_must_be_given(tmp_path):
    path = save_official(tmp_path / "p.pth", official_state_dict(tiny_config(), seed=17))
    with pytest.raises(
        ValueError, match="Cannot tell `num_attention_heads` from the shapes.*pass --num_attention_heads"
    ):
        convert(path)


def test_release_md5_is_checked_when_asked(tmp_path):
    path = save_official(tmp_path / "p.pth", official_state_dict(tiny_config(), seed=18))
    with pytest.raises(ValueError, match="the released SupMAE pretraining file's starts with d83c8a"):
        convert(path, verify_release=True, **HEADS)


def test_other_model_types_are_refused(tmp_path):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    save_file({"x": torch.zeros(1)}, tmp_path / "bert" / "model.safetensors")
    with pytest.raises(ValueError, match="holds a 'bert' model, not ViTMAE"):
        read_checkpoint(str(tmp_path / "bert"))


# --------------------------------------------------------------------------------------------------- the output
@pytest.mark.slow
def test_command_line_writes_a_hub_ready_directory(tmp_path):
    config = tiny_config()
    state_dict = official_state_dict(config, seed=19)
    path = save_official(tmp_path / "supmae_pretrain.pth", state_dict)
    output = tmp_path / "converted"
    main(
        [
            "--checkpoint",
            path,
            "--output_dir",
            str(output),
            "--num_attention_heads",
            "4",
            "--decoder_num_attention_heads",
            "2",
        ]
    )
    files = set(os.listdir(output))
    assert {
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "README.md",
        "modeling_supmae.py",
        "configuration_supmae.py",
        "image_processing_supmae.py",
    } <= files
    card = ModelCard.load(output / "README.md")
    assert card.data.license == "cc-by-nc-4.0" and card.data.library_name == "transformers"
    assert "supmae" in card.data.tags and "supmae_pretrain.pth" in card.text
    with pytest.raises(FileExistsError, match="already holds a model"):
        main(
            [
                "--checkpoint",
                path,
                "--output_dir",
                str(output),
                "--num_attention_heads",
                "4",
                "--decoder_num_attention_heads",
                "2",
            ]
        )

    # A fresh process where `import supmae` fails loads it as remote code and gets the reference's numbers.
    pixel_values, noise = inputs(4)
    torch.save({"pixel_values": pixel_values, "noise": noise}, tmp_path / "inputs.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["supmae"] = None
        import torch
        from transformers import AutoModelForPreTraining
        model = AutoModelForPreTraining.from_pretrained({str(output)!r}, trust_remote_code=True).eval()
        batch = torch.load({str(tmp_path / "inputs.pt")!r})
        with torch.no_grad():
            torch.save(model(batch["pixel_values"], noise=batch["noise"]).logits, {str(tmp_path / "logits.pt")!r})
    """)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = ref.pretraining_forward(
        state_dict, pixel_values, None, num_heads=4, decoder_num_heads=2, patch_size=8, mask_ratio=0.75, noise=noise
    )
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected["pred"], atol=ATOL, rtol=0)


def test_fine_tuned_conversion_exports_to_timm(tmp_path):
    import timm

    state_dict = ref.random_official_finetuned_state_dict(
        hidden_size=32,
        depth=2,
        num_heads=4,
        mlp_ratio=4.0,
        patch_size=8,
        num_channels=3,
        image_size=32,
        num_labels=7,
        seed=20,
    )
    path = save_official(tmp_path / "supmae_finetuned.pth", state_dict)
    main(
        [
            "--checkpoint",
            path,
            "--output_dir",
            str(tmp_path / "hf"),
            "--num_attention_heads",
            "4",
            "--export_timm",
            str(tmp_path / "timm"),
        ]
    )
    card = ModelCard.load(tmp_path / "hf" / "README.md")
    assert card.data.pipeline_tag == "image-classification" and card.data.license == "cc-by-nc-4.0"
    exported = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    pixel_values, _ = inputs(5)
    with torch.no_grad():
        logits = exported(pixel_values)
    expected = ref.finetuned_forward(state_dict, pixel_values, num_heads=4)
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)
