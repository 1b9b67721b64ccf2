"""The encoder's relative position bias and layer scale (mmsegmentation's MAE backbone, BEiT's blocks).

The independent implementation is Transformers' `BeitBackbone` with `use_relative_position_bias=True` and a layer
scale, given the same weights: our fused qkv maps onto BEiT's q/k/v projections, and BEiT's key projection has no
bias, which leaves the softmax unchanged (it adds the same q . b_k to every score of a query), so ours keeps a random
key bias and the comparison shows it cancels. Stage i is the output of block i (1-based) on both sides; Transformers'
BEiT reads out_indices one block off from BEiT's and MAE's code, so stages are compared by name.

Tolerances, absolute: float64 1e-12 (the semantics; measured ~1e-15), float32 1e-5 (measured ~1e-6; outputs reach
~10). `python tests/models/test_relative_position_bias.py` prints the largest differences measured.
"""

import pytest
import torch
from helpers import tiny_config
from transformers import BeitBackbone, BeitConfig
from transformers.models.beit.modeling_beit import BeitRelativePositionBias
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from supmae import SupMAEBackbone, SupMAEForImageClassification, SupMAEForPreTraining, SupMAEModel
from supmae.modeling_supmae import relative_position_index, resize_relative_position_bias_table


TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}
DTYPES = pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
ATTENTION = pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
# The config's 32 px (4x4 patches) and a non-square size whose 6x8 grid needs both tables resized.
SIZES = pytest.mark.parametrize("size", [(32, 32), (48, 64)], ids=["crop-size", "interpolated-48x64"])
RECIPE = dict(use_relative_position_bias=True, layer_scale_init_value=0.1, num_hidden_layers=6)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random and non-zero, the new ones far from their identity init: bias tables ~N(0, 1) (the
    scores are ~1), layer scales in [0.5, 1.5], LayerNorms around (1, 0), matrices ~N(0, 1/fan_in), everything else
    (biases, the cls token and position table) ~N(0, 0.2)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            if name.endswith("relative_position_bias_table"):
                value = noise
            elif ".lambda_" in name:
                value = 0.5 + torch.rand(parameter.shape, generator=generator, dtype=torch.float64)
            elif "layernorm" in name and name.endswith("weight"):
                value = 1 + 0.2 * noise
            elif parameter.ndim > 1 and not name.endswith(("cls_token", "position_embeddings")):
                value = noise * (parameter[0].numel() ** -0.5)  # matrices: unit-variance outputs for unit inputs
            else:
                value = 0.2 * noise
            parameter.copy_(value)
    return model


def beit_twin(config, attn_implementation: str = "sdpa") -> BeitBackbone:
    """Transformers' BEiT backbone of `config`'s architecture, blocks with a relative position bias and layer scale.
    sdpa, since BEiT's eager attention takes its softmax in float32 even for float64 inputs (~1e-7 off)."""
    fields = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act")
    return BeitBackbone(
        BeitConfig(
            **{name: getattr(config, name) for name in fields},
            layer_norm_eps=config.layer_norm_eps,
            image_size=config.image_size,
            patch_size=config.patch_size,
            use_absolute_position_embeddings=True,
            use_relative_position_bias=config.use_relative_position_bias,
            layer_scale_init_value=config.layer_scale_init_value or 0.0,
            drop_path_rate=0.0,
            out_features=config.stage_names,
            attn_implementation=attn_implementation,
        )
    ).eval()


def beit_state_dict(ours: SupMAEBackbone) -> dict:
    """Our backbone's weights under BEiT's names: the fused qkv split into q/k/v, the key bias dropped."""
    state = {}
    for name, tensor in ours.state_dict().items():
        if name.endswith("relative_position_index"):
            continue
        name = name.replace("supmae.", "beit.", 1).replace(
            "attention.relative_position_bias.", "relative_position_bias."
        )
        if ".qkv_proj." in name:
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3), strict=True):
                if not (part == "k_proj" and name.endswith("bias")):
                    state[name.replace("qkv_proj", part)] = chunk
        else:
            state[name] = tensor
    return state


def backbone_pair(dtype, ours_attention="eager", **overrides):
    """Our backbone with random weights (every stage returned) and BEiT's with the same weights, in `dtype`."""
    config = tiny_config(**{**RECIPE, **overrides}, out_features=None, attn_implementation=ours_attention)
    config.out_features = config.stage_names
    ours = randomize(SupMAEBackbone(config)).eval()
    beit = beit_twin(config)
    beit.load_state_dict(beit_state_dict(ours), strict=True)
    return ours.to(dtype), beit.to(dtype)


def pixels(size, dtype, batch_size=2, seed=1):
    return torch.randn(batch_size, 3, *size, generator=torch.Generator().manual_seed(seed)).to(dtype)


def stage_differences(ours, beit, pixel_values) -> dict[str, float]:
    with torch.no_grad():
        mine = ours(pixel_values)
        theirs = beit(pixel_values, interpolate_pos_encoding=True)
    assert ours.out_features == beit.out_features == ["stem"] + [f"stage{i}" for i in range(1, 7)]
    return {
        name: (a - b).abs().max().item()
        for name, a, b in zip(ours.out_features, mine.feature_maps, theirs.feature_maps, strict=True)
    }


@DTYPES
@SIZES
@ATTENTION
def test_stages_match_beits_backbone(dtype, size, attn_implementation):
    """Every stage (the embeddings, then each block) equals Transformers' BEiT's with the same random weights: the
    bias read through BEiT's index, resized for the 6x8 grid as BEiT resizes it, layer scales on both branches."""
    ours, beit = backbone_pair(dtype, attn_implementation)
    differences = stage_differences(ours, beit, pixels(size, dtype))
    assert max(differences.values()) < TOLERANCE[dtype], differences


def test_the_comparison_sees_the_bias_and_the_layer_scales():
    """The random tables and scales matter far above the tolerance: BEiT without them is another model."""
    ours, beit = backbone_pair(torch.float64)
    with torch.no_grad():
        for layer in beit.beit.layers:
            layer.relative_position_bias.relative_position_bias_table.zero_()
    assert stage_differences(ours, beit, pixels((48, 64), torch.float64))["stage6"] > 0.1
    ours, beit = backbone_pair(torch.float64)
    with torch.no_grad():
        beit.beit.layers[0].lambda_2.fill_(1.0)
    assert stage_differences(ours, beit, pixels((32, 32), torch.float64))["stage1"] > 0.1


def test_index_is_beits():
    """The index into the table equals BEiT's for square and non-square grids, and the table has
    (2h - 1)(2w - 1) + 3 rows, the last three for cls-to-patch, patch-to-cls and cls-to-cls."""
    for grid in [(4, 4), (2, 3), (5, 3), (1, 1)]:
        index = relative_position_index(grid)
        assert torch.equal(index, BeitRelativePositionBias.generate_relative_position_index(grid))
        rows = (2 * grid[0] - 1) * (2 * grid[1] - 1) + 3
        assert index[0, 1:].unique().tolist() == [rows - 3] and index[1:, 0].unique().tolist() == [rows - 2]
        assert index[0, 0] == rows - 1 and index[1:, 1:].max() == rows - 4
    config = tiny_config(use_relative_position_bias=True, image_size=[32, 48])  # 4x6 patches
    table = SupMAEModel(config).layers[0].attention.relative_position_bias.relative_position_bias_table
    assert table.shape == (7 * 11 + 3, config.num_attention_heads)


def test_resizing_keeps_rows_and_columns_apart():
    """A bias that depends on the row offset alone still does after resizing a non-square grid's table, and the
    cls entries are kept. (Transformers' BEiT reads the offsets as a (2w - 1) x (2h - 1) map, and resizes even for
    its own grid, which mixes rows and columns for non-square grids; square ones, where the two agree, are compared
    with it above.)"""
    old_grid, new_grid = (2, 3), (4, 7)
    row_offsets = torch.arange(2 * old_grid[0] - 1, dtype=torch.float64).repeat_interleave(2 * old_grid[1] - 1)
    cls_entries = torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64)
    table = torch.cat([row_offsets, cls_entries]).unsqueeze(1)
    resized = resize_relative_position_bias_table(table, old_grid, new_grid)
    offsets = resized[:-3, 0].reshape(2 * new_grid[0] - 1, 2 * new_grid[1] - 1)
    torch.testing.assert_close(offsets, offsets[:, :1].expand_as(offsets), rtol=0, atol=1e-14)  # constant per row
    assert offsets[:, 0].diff().min() >= 0 and offsets[-1, 0] > offsets[0, 0]
    assert torch.equal(resized[-3:, 0], cls_entries)
    assert resize_relative_position_bias_table(table, old_grid, old_grid) is table


@DTYPES
def test_eager_and_sdpa_agree_with_the_bias(dtype):
    """The bias reaches sdpa as an additive mask, as it reaches eager: same outputs, whole and masked images."""
    config = tiny_config(**RECIPE)
    torch.manual_seed(0)
    state = randomize(SupMAEForPreTraining(config)).state_dict()
    outputs = {}
    for implementation in ("eager", "sdpa"):
        model = SupMAEForPreTraining(tiny_config(**RECIPE, attn_implementation=implementation)).eval()
        model.load_state_dict(state)
        model.to(dtype)
        images, noise = pixels((32, 32), dtype, batch_size=4), torch.rand(4, 16, generator=torch.Generator())
        with torch.no_grad():
            outputs[implementation] = (
                model(images, noise=torch.linspace(0, 1, 16).flip(0).repeat(4, 1)).logits,
                model(images, noise=noise).logits,
                model.supmae(pixels((48, 64), dtype), interpolate_pos_encoding=True).last_hidden_state,
            )
    for eager, sdpa in zip(*outputs.values(), strict=True):
        assert (eager - sdpa).abs().max() < TOLERANCE[dtype]


@DTYPES
@ATTENTION
def test_masked_encoding_reads_the_bias_at_the_kept_positions(dtype, attn_implementation):
    """A masked encoder with the bias equals BEiT over the whole image with the removed patches masked out of the
    attention: each kept patch reads the table at its image position, whatever order the shuffle encodes it in."""
    ours, beit = backbone_pair(dtype, attn_implementation)
    images, noise = (
        pixels((32, 32), dtype, batch_size=3),
        torch.rand(3, 16, generator=torch.Generator().manual_seed(3)),
    )
    with torch.no_grad():
        masked = ours.supmae(images, noise=noise, mask_ratio=0.5, output_hidden_states=True)
        kept = torch.argsort(noise, dim=1)[:, :8]  # the 8 smallest noises, in the encoder's order
        positions = torch.cat([torch.zeros(3, 1, dtype=torch.long), kept + 1], dim=1)
        # An additive mask that removes every patch but the kept ones from each query's keys (BEiT adds its bias).
        attention_mask = torch.full((3, 1, 17, 17), torch.finfo(dtype).min, dtype=dtype)
        attention_mask.scatter_(3, positions[:, None, None, :].expand(-1, 1, 17, -1), 0.0)
        full = beit.beit(images, attention_mask=attention_mask, output_hidden_states=True)
    for mine, theirs in zip(masked.hidden_states, full.hidden_states, strict=True):
        theirs = torch.gather(theirs, 1, positions.unsqueeze(-1).expand(-1, -1, theirs.shape[-1]))
        assert (mine - theirs).abs().max() < TOLERANCE[dtype]


def test_from_config_initialization():
    """From a config: zero tables and layer scales at layer_scale_init_value, in the encoder only; the index buffer
    is BEiT's, outside the state dict. Off (the default), the blocks have neither."""
    config = tiny_config(use_relative_position_bias=True, layer_scale_init_value=0.25)
    model = SupMAEForPreTraining(config)
    for layer in model.supmae.layers:
        bias = layer.attention.relative_position_bias
        assert torch.equal(bias.relative_position_bias_table, torch.zeros(52, 4))
        assert torch.equal(bias.relative_position_index, relative_position_index((4, 4)))
        assert torch.equal(layer.lambda_1, torch.full((32,), 0.25)) and torch.equal(layer.lambda_2, layer.lambda_1)
    for layer in model.decoder.decoder_layers:
        assert layer.attention.relative_position_bias is None and layer.lambda_1 is None and layer.lambda_2 is None
    assert not any("relative_position_index" in key for key in model.state_dict())
    default = SupMAEForPreTraining(tiny_config()).state_dict()
    assert not any("relative_position" in key or "lambda" in key for key in default)
    assert set(model.state_dict()) - set(default) == {
        f"supmae.layers.{i}.{name}"
        for i in range(2)
        for name in ("lambda_1", "lambda_2", "attention.relative_position_bias.relative_position_bias_table")
    }


def test_at_initialization_both_are_the_identity(tmp_path):
    """A pretraining checkpoint (which has neither) loads into a backbone with both: one sentence names them as newly
    initialized, they hold their initial values (not uninitialized memory), and the stages equal those of the
    backbone without them exactly (a zero bias and a scale of 1)."""
    pretrained = randomize(SupMAEForPreTraining(tiny_config(num_hidden_layers=4)))
    pretrained.save_pretrained(tmp_path)
    logger = logging.get_logger("supmae.modeling_supmae")
    with CaptureLogger(logger) as captured:
        backbone, info = SupMAEBackbone.from_pretrained(
            tmp_path, use_relative_position_bias=True, layer_scale_init_value=1.0, output_loading_info=True
        )
    assert captured.out.count("reused the encoder of a SupMAE pretraining checkpoint") == 1
    assert (
        "newly initialized: the relative position biases (zeros) and layer scales (1.0) of the 4 encoder blocks."
        in captured.out
    )
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    for layer in backbone.supmae.layers:
        bias = layer.attention.relative_position_bias
        assert torch.equal(bias.relative_position_bias_table, torch.zeros_like(bias.relative_position_bias_table))
        assert torch.equal(bias.relative_position_index, relative_position_index((4, 4)))
        assert torch.equal(layer.lambda_1, torch.ones(32)) and torch.equal(layer.lambda_2, torch.ones(32))
    plain = SupMAEBackbone.from_pretrained(tmp_path)
    images = pixels((32, 32), torch.float32)
    with torch.no_grad():
        for ours, theirs in zip(backbone.eval()(images).feature_maps, plain.eval()(images).feature_maps, strict=True):
            assert torch.equal(ours, theirs)

    with CaptureLogger(logger) as captured:
        SupMAEForImageClassification.from_pretrained(tmp_path, num_labels=3, use_relative_position_bias=True)
    assert "newly initialized: classifier, fc_norm, the relative position biases (zeros) of the 4 encoder blocks." in (
        captured.out
    )


def test_saved_bias_and_scales_load_back(tmp_path):
    """A fine-tuned model with both saves and loads back with the same tables, scales and outputs, the index rebuilt
    (it is not saved), and nothing reported."""
    config = tiny_config(use_relative_position_bias=True, layer_scale_init_value=0.1, classifier_pooling="cls")
    model = randomize(SupMAEForImageClassification(config)).eval()
    model.save_pretrained(tmp_path)
    logger = logging.get_logger("supmae.modeling_supmae")
    with CaptureLogger(logger) as captured:
        loaded, info = SupMAEForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert captured.out == "" and info["missing_keys"] == set() and info["unexpected_keys"] == set()
    for layer in loaded.supmae.layers:
        assert torch.equal(
            layer.attention.relative_position_bias.relative_position_index, relative_position_index((4, 4))
        )
    images = pixels((32, 32), torch.float32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(images).logits, model(images).logits)


def test_flash_attention_is_refused_with_the_bias():
    """Flash kernels take no additive bias: the message names the config field and the ways out."""
    model = SupMAEModel(tiny_config(use_relative_position_bias=True)).eval()
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match=r"`use_relative_position_bias=True`.*attn_implementation=\"sdpa\""):
        model(pixels((32, 32), torch.float32))


def test_gradients_reach_the_tables_and_scales_under_checkpointing():
    """Training: both are trainable and get gradients, also with gradient checkpointing (same gradients)."""
    config = tiny_config(**RECIPE)
    gradients = []
    for checkpointing in (False, True):
        model = randomize(SupMAEBackbone(config)).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert all(layer.gradient_checkpointing for layer in model.supmae.layers)
        model(pixels((48, 64), torch.float32)).feature_maps[-1].square().mean().backward()
        layer = model.supmae.layers[2]
        gradients.append(
            [
                layer.attention.relative_position_bias.relative_position_bias_table.grad,
                layer.lambda_1.grad,
                layer.lambda_2.grad,
            ]
        )
    for without, with_checkpointing in zip(*gradients, strict=True):
        assert without.abs().max() > 0
        torch.testing.assert_close(with_checkpointing, without, rtol=1e-5, atol=1e-7)


def test_negative_layer_scale_is_refused():
    with pytest.raises(Exception, match="`layer_scale_init_value` must be >= 0, or None or 0"):
        tiny_config(layer_scale_init_value=-0.1)
    assert SupMAEModel(tiny_config(layer_scale_init_value=0.0)).layers[0].lambda_1 is None


def test_shallow_encoder_with_pyramid_names_the_fix():
    """`add_fpn` with fewer than 4 blocks: the config's message says why and what to do."""
    with pytest.raises(
        Exception, match="has only 2 stages: use an encoder of at least 4 blocks, or set `add_fpn=False`"
    ):
        tiny_config(add_fpn=True)


def largest_differences() -> dict[str, float]:
    """The largest difference against BEiT of any stage, per dtype, size and attention implementation."""
    results = {}
    for dtype in (torch.float64, torch.float32):
        for size in ((32, 32), (48, 64)):
            for implementation in ("eager", "sdpa"):
                ours, beit = backbone_pair(dtype, implementation)
                key = f"{str(dtype).removeprefix('torch.')} {size[0]}x{size[1]} {implementation}"
                results[key] = max(stage_differences(ours, beit, pixels(size, dtype)).values())
    return results


if __name__ == "__main__":
    for name, difference in largest_differences().items():
        print(f"{name:>24}: {difference:.2e}")


def test_optimizer_groups_give_the_new_parameters_their_blocks_lr_and_no_decay():
    """Layer-wise lr decay puts each block's table and scales in that block's group; the tables (2-D) get no weight
    decay, as BEiT's `no_weight_decay` says, and the scales none as 1-D parameters."""
    from supmae.training.optim import decay_parameter_names, layer_decay_parameter_groups, layer_id

    model = SupMAEForImageClassification(tiny_config(**RECIPE))
    decayed = set(decay_parameter_names(model))
    groups = layer_decay_parameter_groups(model, weight_decay=0.05, layer_decay=0.65)
    group_of = {id(p): group for group in groups for p in group["params"]}
    for name, parameter in model.named_parameters():
        if name.endswith(("relative_position_bias_table", "lambda_1", "lambda_2")):
            assert layer_id(name, 6) == int(name.split(".")[2]) + 1
            assert name not in decayed and group_of[id(parameter)]["weight_decay"] == 0.0
            block_weight = model.get_parameter(name.split(".lambda")[0].split(".attention")[0] + ".mlp.fc1.weight")
            assert group_of[id(parameter)]["lr_scale"] == group_of[id(block_weight)]["lr_scale"]
    assert "supmae.layers.0.attention.qkv_proj.weight" in decayed
