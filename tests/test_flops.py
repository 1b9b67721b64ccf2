"""benchmarks/flops.py against torch's FLOP counter, and smoke runs of the benchmark scripts (no timing asserted).

What `torch.utils.flop_counter.FlopCounterMode` counts: the matmul-like aten ops only (mm, addmm, bmm, baddbmm,
convolution and its backward, and the CUDA flash / efficient / cuDNN attention kernels), 2 FLOPs per multiply-add,
nothing for elementwise ops, norms or softmax; that is the convention of flops.py. Two consequences for these tests:

- Attention runs eager: on a CPU, sdpa dispatches to `_scaled_dot_product_flash_attention_for_cpu`, which the counter
  does not know, so it would miss the score and value matmuls altogether. (On CUDA it counts the fused kernels, and
  their backward as 2.5x the forward because the kernel recomputes the scores; flops.py counts model FLOPs, 2x.)
- The patch-embedding convolution's backward is counted through `convolution_backward` with its output mask: the
  pixels need no gradient, so only the weight gradient is counted, as flops.py does.

With that, the formulas are exact: the counts below are asserted equal, not just within 1%.
"""

import json
import os
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import ViTConfig, ViTForImageClassification, ViTMAEConfig, ViTMAEForPreTraining

from supmae import SupMAEConfig, SupMAEForImageClassification, SupMAEForPreTraining


sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import flops  # noqa: E402


ARCHITECTURE = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=80,
    image_size=32,
    patch_size=8,
    decoder_hidden_size=16,
    decoder_num_hidden_layers=2,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=48,
    layer_norm_eps=1e-6,
    attn_implementation="eager",
)
HEAD = dict(supervised_head_hidden_size=24, num_labels=5)


def count(model, inputs: dict, backward: bool) -> int:
    with FlopCounterMode(display=False) as counter:
        loss = model(**inputs).loss
        if backward:
            loss.backward()
    return counter.get_total_flops()


def images(image_size=32, batch_size=4):
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    return pixels, torch.randint(0, 5, (batch_size,), generator=generator)


@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize(
    "overrides",
    [{}, {"mask_ratio": 0.6, "supervised_head_hidden_size": 0, "supervised_pooling": "cls"}, {"image_size": 48}],
    ids=["default", "ratio0.6-linear-head", "48px-interpolated"],
)
def test_pretraining_flops_match_counter(overrides, train, backward):
    image_size = overrides.pop("image_size", 32)
    config = SupMAEConfig(**{**ARCHITECTURE, **HEAD, **overrides})
    model = SupMAEForPreTraining(config).train(train)
    pixels, labels = images(image_size)
    inputs = dict(pixel_values=pixels, labels=labels, interpolate_pos_encoding=image_size != 32)
    expected = flops.pretraining_flops(config, 4, backward=backward, image_size=image_size)
    assert count(model, inputs, backward) == expected


def test_pretraining_flops_without_labels_skip_the_head():
    config = SupMAEConfig(**ARCHITECTURE, **HEAD)
    model = SupMAEForPreTraining(config).train()
    pixels, _ = images()
    assert count(model, dict(pixel_values=pixels), True) == flops.pretraining_flops(config, 4, supervised=False)


@pytest.mark.parametrize("backward", [False, True])
def test_vitmae_flops_match_counter(backward):
    config = ViTMAEConfig(**ARCHITECTURE, norm_pix_loss=True)
    model = ViTMAEForPreTraining(config).train()
    pixels, _ = images()
    expected = flops.vitmae_pretraining_flops(config, 4, backward=backward)
    assert count(model, dict(pixel_values=pixels), backward) == expected
    # Same architecture, no head: exactly SupMAE's count without its head.
    assert expected == flops.pretraining_flops(SupMAEConfig(**ARCHITECTURE, **HEAD), 4, backward, supervised=False)


@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("model_class", [SupMAEForImageClassification, ViTForImageClassification])
def test_classification_flops_match_counter(model_class, backward):
    encoder = {k: v for k, v in ARCHITECTURE.items() if not k.startswith("decoder")}
    config_class = SupMAEConfig if model_class is SupMAEForImageClassification else ViTConfig
    config = config_class(**encoder, num_labels=5)
    model = model_class(config).eval()
    pixels, labels = images()
    expected = flops.classification_flops(config, 4, backward=backward)
    assert count(model, dict(pixel_values=pixels, labels=labels), backward) == expected


def test_vit_base_numbers():
    """The released ViT-B/16 sizes, as a reader can check by hand: encoder 17.56 GFLOPs per 224 px image."""
    base = SupMAEConfig.from_preset("vit-base-patch16")
    encoder_only = flops.classification_flops(base) - 2 * 768 * 1000
    assert encoder_only == 12 * flops.block_flops(197, 768, 3072) + flops.patch_embedding_flops(base)
    assert round(encoder_only / 1e9, 2) == 35.13  # 17.56 G multiply-adds
    dec8 = SupMAEConfig.from_preset("vit-base-patch16-dec8")
    assert flops.pretraining_flops(dec8) > flops.pretraining_flops(base)


@pytest.mark.slow  # tiny models, but each script's memory child imports torch and transformers again (~25 s in all)
def test_benchmark_scripts_smoke(tmp_path, capsys):
    """Both scripts run end to end on a tiny model and return the documented record; timings are not asserted."""
    import inference
    import train_step

    output = str(tmp_path / "results.json")
    common = ["--tiny", "--device", "cpu", "--rounds", "1", "--warmup", "0", "--output", output]
    train = train_step.main(common)
    infer = inference.main([*common, "--batch_size", "2"])
    for record, arms, ratios in ((train, 4, 2), (infer, 2, 1)):
        assert {"machine", "args", "matmul_peak_flops", "memory_method", "results"} <= set(record)
        assert {"torch", "device_name", "cpu_count", "torch_threads", "date"} <= set(record["machine"])
        (point,) = record["results"]
        assert len(point["arms"]) == arms and len(point["comparisons"]) == ratios
        for arm in point["arms"].values():
            assert arm["median_s"] > 0 and arm["images_per_s"] > 0 and arm["flops_per_step"] > 0
            assert 0 < arm["mfu"]
            assert {"max_rss_after_build_bytes", "max_rss_after_steps_bytes", "peak_bytes"} <= set(arm["memory"])
        for comparison in point["comparisons"]:
            assert comparison["ratio"] > 0
    assert "theirs time / ours time" in capsys.readouterr().out
    with open(output) as f:
        assert [r["script"] for r in json.load(f)] == ["train_step.py", "inference.py"]
