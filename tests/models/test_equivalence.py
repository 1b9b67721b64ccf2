"""SupMAE against the independent functional reference (tests/reference/reference_supmae.py) over the OFFICIAL
layout.

Same weights and the same masking noise must give the same mask, pixel predictions, classification logits, losses
and gradients. `python tests/models/test_equivalence.py` prints the largest difference of each quantity over every
configuration tested here (the table in docs/CORRECTNESS.md); `--record PATH` also writes it as a JSON record with the
date, machine and versions (docs/records/equivalence.json).

Tolerances, absolute:
- float64, 1e-12: the semantics. Both implementations agree to ~4e-15 there (eager and sdpa), so 1e-12 leaves room
  for summation order and nothing else: a LayerNorm eps of 1e-12 instead of 1e-6 moves the pixel predictions by
  ~1e-5, a head BatchNorm eps of 1e-6 instead of 1e-5 the logits by ~1e-5, and both are caught (the tests at the
  end). In float32 such slips hide in the rounding (an eps-1e-12 model passes a 1e-5 tolerance).
- float32, 4e-6: what users run. Twice the largest difference measured, 1.9e-6 (sdpa's fused kernel sums in another
  order than the reference's matmuls); the outputs reach ~4, where one float32 ulp is 4.8e-7.
"""

import os
import sys

import pytest
import torch


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, when run as a script
from helpers import official_state_dict, tiny_config
from reference import reference_supmae as ref

from supmae import SupMAEForImageClassification, SupMAEForPreTraining, SupMAEModel
from supmae.interop.convert import official_to_supmae_state_dict, supmae_to_official_state_dict


TOLERANCE = {torch.float64: 1e-12, torch.float32: 4e-6}
DTYPES = pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
ATTENTION = pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
LABELS = torch.tensor([0, 3, 4, 1])
CONFIGURATIONS = {
    "default": {},
    "linear-head": {"supervised_head_hidden_size": 0},
    "cls-pooling": {"supervised_pooling": "cls"},
    "raw-pixels": {"norm_pix_loss": False, "mask_ratio": 0.5},
    "1-block-decoder-non-square": {"decoder_num_hidden_layers": 1, "image_size": [32, 48]},
}


def cast(state_dict: dict, dtype: torch.dtype) -> dict:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}


def load_official(model_class, config, state_dict, dtype=torch.float32):
    model = model_class(config)
    renamed, unknown = official_to_supmae_state_dict(state_dict, config.supervised_head_hidden_size)
    assert unknown == []
    model.load_state_dict(renamed, strict=True)
    return model.to(dtype)


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


def pretraining_pair(config, dtype, labels=LABELS, training=False, seed=1, model_hook=None):
    """Our output and the reference's for random official weights (seed), 4 random images and masking noise."""
    state_dict = official_state_dict(config, seed=seed)
    model = load_official(SupMAEForPreTraining, config, state_dict, dtype).train(training)
    if model_hook is not None:
        model_hook(model)
    generator = torch.Generator().manual_seed(2)
    height, width = config.grid_size
    pixel_values = torch.randn(4, 3, height * config.patch_size, width * config.patch_size, generator=generator)
    noise = torch.rand(4, config.num_patches, generator=generator)
    pixel_values = pixel_values.to(dtype)
    with torch.no_grad():
        output = model(pixel_values, labels=labels, noise=noise)
    expected = reference_pretraining(config, cast(state_dict, dtype), pixel_values, noise, labels, training)
    return output, expected


def pretraining_differences(output, expected) -> dict:
    """The largest absolute difference of each compared quantity (masks compared exactly)."""
    assert torch.equal(output.mask, expected["mask"])
    assert torch.equal(output.ids_restore, expected["ids_restore"])
    pairs = {
        "pixel predictions": (output.logits, expected["pred"]),
        "classification logits": (output.classification_logits, expected["logits"]),
        "reconstruction loss": (output.reconstruction_loss, expected["rec_loss"]),
        "classification loss": (output.classification_loss, expected["cls_loss"]),
        "total loss": (output.loss, expected["loss"]),
    }
    differences = {}
    for name, (actual, reference) in pairs.items():
        assert (actual is None) == (reference is None), name
        if actual is not None:
            assert actual.dtype == reference.dtype, name
            differences[name] = (actual - reference).abs().max().item()
    return differences


def assert_matches_reference(output, expected):
    tolerance = TOLERANCE[expected["pred"].dtype]
    for name, difference in pretraining_differences(output, expected).items():
        assert difference <= tolerance, f"{name}: {difference:.3g} > {tolerance:g}"


@DTYPES
@ATTENTION
@pytest.mark.parametrize("overrides", CONFIGURATIONS.values(), ids=CONFIGURATIONS.keys())
@pytest.mark.parametrize("with_labels", [True, False], ids=["labels", "no-labels"])
def test_pretraining_matches_reference(dtype, attn_implementation, overrides, with_labels):
    config = tiny_config(**overrides)
    config._attn_implementation = attn_implementation
    output, expected = pretraining_pair(config, dtype, LABELS if with_labels else None)
    assert (output.classification_loss is None) == (not with_labels)
    assert_matches_reference(output, expected)


@DTYPES
@ATTENTION
def test_training_mode_batch_norm_matches_reference(dtype, attn_implementation):
    """In train mode the head's BatchNorm normalizes with batch statistics, and updates its running ones."""
    config = tiny_config()
    config._attn_implementation = attn_implementation
    models = []
    output, expected = pretraining_pair(config, dtype, training=True, seed=3, model_hook=models.append)
    assert_matches_reference(output, expected)
    running_mean = official_state_dict(config, seed=3)["cls_head.1.running_mean"]
    assert not torch.equal(models[0].supervised_head.batch_norm.running_mean.float(), running_mean)


def gradient_pair(config, dtype, images):
    """Our gradient of the total loss and the reference's autograd gradient, for every trainable official tensor."""
    official = official_state_dict(config)
    state_dict = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in cast(official, dtype).items()}
    model = load_official(SupMAEForPreTraining, config, official, dtype).train()
    pixel_values, noise = images
    pixel_values = pixel_values.to(dtype)
    model(pixel_values, labels=LABELS, noise=noise).loss.backward()
    expected = reference_pretraining(config, state_dict, pixel_values, noise, LABELS, training=True)["loss"]
    official_names = supmae_to_official_state_dict(dict(model.named_parameters()))
    trainable = {name: p for name, p in official_names.items() if p.requires_grad}
    assert set(official_names) - set(trainable) == {"pos_embed", "decoder_pos_embed"}  # fixed sin-cos tables
    reference_grads = torch.autograd.grad(expected, [state_dict[name] for name in trainable])
    return {name: (p.grad, g) for (name, p), g in zip(trainable.items(), reference_grads, strict=True)}


@ATTENTION
def test_gradients_match_reference(attn_implementation, images):
    """Backpropagating the total loss gives the reference's gradient for every trainable official tensor (float64:
    the float32 gradients differ by rounding only, ~6e-8, and show nothing more)."""
    config = tiny_config()
    config._attn_implementation = attn_implementation
    for name, (gradient, reference) in gradient_pair(config, torch.float64, images).items():
        torch.testing.assert_close(gradient, reference, atol=TOLERANCE[torch.float64], rtol=0, msg=name)


@DTYPES
def test_unmasked_encoding_is_the_reference_encoder_in_image_order(dtype, images):
    """A plain SupMAEModel call encodes all patches in image order: the reference encoder at mask ratio 0 gives the
    same tokens once un-shuffled."""
    config = tiny_config()
    state_dict = official_state_dict(config, seed=4)
    renamed, _ = official_to_supmae_state_dict(state_dict)
    encoder = SupMAEModel(config).eval()
    encoder.load_state_dict({k.removeprefix("supmae."): v for k, v in renamed.items() if k.startswith("supmae.")})
    encoder.to(dtype)
    pixel_values, noise = images
    pixel_values = pixel_values.to(dtype)
    with torch.no_grad():
        output = encoder(pixel_values)
    latent, mask, ids_restore = ref.encoder_forward(
        cast(state_dict, dtype), pixel_values, num_heads=config.num_attention_heads, mask_ratio=0.0, noise=noise
    )
    in_order = torch.gather(latent[:, 1:], 1, ids_restore.unsqueeze(-1).expand(-1, -1, latent.shape[-1]))
    assert output.mask.sum() == 0 and mask.sum() == 0
    tolerance = TOLERANCE[dtype]
    torch.testing.assert_close(output.last_hidden_state[:, 0], latent[:, 0], atol=tolerance, rtol=0)
    torch.testing.assert_close(output.last_hidden_state[:, 1:], in_order, atol=tolerance, rtol=0)
    assert torch.equal(output.ids_restore[0], torch.arange(16))


def finetuned_pair(pooling, attn_implementation, dtype, images):
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
    model = load_official(SupMAEForImageClassification, config, state_dict, dtype).eval()
    pixel_values = images[0].to(dtype)
    with torch.no_grad():
        logits = model(pixel_values).logits
    return logits, ref.finetuned_forward(cast(state_dict, dtype), pixel_values, num_heads=4, pooling=pooling)


@DTYPES
@ATTENTION
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_classification_matches_reference_finetuned(dtype, attn_implementation, pooling, images):
    logits, expected = finetuned_pair(pooling, attn_implementation, dtype, images)
    torch.testing.assert_close(logits, expected, atol=TOLERANCE[dtype], rtol=0)


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


# ------------------------------------------------------------------------ the float64 tolerance catches small slips
@ATTENTION
def test_a_wrong_layer_norm_eps_is_caught(attn_implementation, images):
    """Transformers' ViT eps (1e-12) instead of MAE's (1e-6) everywhere: the comparison fails, in the forward pass
    (pixel predictions off by ~1e-5) and in the gradients (~5e-7), each orders of magnitude above the tolerance."""
    config = tiny_config(layer_norm_eps=1e-12)
    config._attn_implementation = attn_implementation
    output, expected = pretraining_pair(config, torch.float64)
    assert pretraining_differences(output, expected)["pixel predictions"] > 1e3 * TOLERANCE[torch.float64]
    with pytest.raises(AssertionError, match="pixel predictions"):
        assert_matches_reference(output, expected)
    gradients = gradient_pair(config, torch.float64, images)
    assert max((g - r).abs().max().item() for g, r in gradients.values()) > 1e3 * TOLERANCE[torch.float64]


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_a_wrong_head_batch_norm_eps_is_caught(training):
    """The linear-probe BatchNorm's eps (1e-6) in the supervised head instead of PyTorch's default (1e-5): the
    logits move by ~1e-5 with running statistics, ~4e-4 with batch statistics; the comparison fails."""

    def wrong_eps(model):
        model.supervised_head.batch_norm.eps = 1e-6

    output, expected = pretraining_pair(tiny_config(), torch.float64, training=training, model_hook=wrong_eps)
    assert pretraining_differences(output, expected)["classification logits"] > 1e3 * TOLERANCE[torch.float64]
    with pytest.raises(AssertionError, match="classification logits"):
        assert_matches_reference(output, expected)


# ------------------------------------------------------------------------ `python tests/models/test_equivalence.py`
COLUMNS = [(dtype, attn) for dtype in (torch.float64, torch.float32) for attn in ("eager", "sdpa")]


def column_name(dtype: torch.dtype, attn_implementation: str) -> str:
    return f"{str(dtype).removeprefix('torch.')} {attn_implementation}"


def measure() -> dict[str, dict[str, float]]:
    """The largest difference of each quantity over every configuration above, per dtype and attention:
    {"float64 eager": {"pixel predictions": 0.0, ...}, ...} (0.0 = identical; masks are compared exactly)."""
    images = (torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)),)
    images += (torch.rand(4, 16, generator=torch.Generator().manual_seed(1)),)
    table = {}
    for dtype, attn in COLUMNS:
        differences = []
        for overrides in CONFIGURATIONS.values():
            for training in (False, True):
                config = tiny_config(**overrides)
                config._attn_implementation = attn
                differences += pretraining_differences(*pretraining_pair(config, dtype, training=training)).items()
        for pooling in ("mean", "cls"):
            logits, expected = finetuned_pair(pooling, attn, dtype, images)
            differences.append(("fine-tuned classifier logits", (logits - expected).abs().max().item()))
        config = tiny_config()
        config._attn_implementation = attn
        for gradient, reference in gradient_pair(config, dtype, images).values():
            differences.append(("gradients", (gradient - reference).abs().max().item()))
        worst = table[column_name(dtype, attn)] = {}
        for name, value in differences:
            worst[name] = max(worst.get(name, 0.0), value)
    return table


def short(value: float) -> str:
    """2 significant digits, as the docs write them: 1.9e-6."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def markdown_table(table: dict[str, dict[str, float]]) -> str:
    """The table as docs/CORRECTNESS.md shows it: one row per quantity, one column per dtype and attention."""
    columns = list(table)
    lines = ["| quantity | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines.append("| mask, ids_restore | " + " | ".join("identical" for _ in columns) + " |")
    for name in table[columns[0]]:
        cells = [f"≤ {short(table[c][name])}" if table[c][name] else "identical" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_record(path: str, table: dict[str, dict[str, float]]) -> None:
    """The table as a JSON record: the command, date, machine and versions next to the numbers and the tolerances
    the tests assert (float32 numbers move slightly with the thread count, so that is recorded too)."""
    import datetime
    import json
    import os
    import platform

    import transformers

    with open("/proc/cpuinfo") as cpuinfo:  # the CPU's model name (Linux)
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")

    record = {
        "command": "python tests/models/test_equivalence.py --record " + path,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu or platform.machine(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0],
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "asserted_tolerances": {str(dtype).removeprefix("torch."): value for dtype, value in TOLERANCE.items()},
        "largest_absolute_difference": table,
    }
    with open(path, "w") as file:
        json.dump(record, file, indent=2)
        file.write("\n")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="The largest difference from the reference, per quantity.")
    parser.add_argument("--record", metavar="PATH", help="also write the table as a JSON record to PATH")
    arguments = parser.parse_args()
    table = measure()
    print(markdown_table(table))
    if arguments.record:
        write_record(arguments.record, table)
