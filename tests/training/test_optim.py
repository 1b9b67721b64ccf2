"""supmae.training.optim: MAE's weight-decay rule, the linear lr scaling, layer-wise lr decay (ViT and UperNet) and
LARS for linear probes."""

import pytest
from helpers import tiny_config, tiny_upernet
from transformers import TrainingArguments

from supmae import SupMAEForImageClassification, SupMAEForPreTraining
from supmae.training.classification import SupMAEClassificationTrainer
from supmae.training.optim import (
    decay_parameter_names,
    lars_parameter_groups,
    layer_decay_parameter_groups,
    layer_id,
    scaled_learning_rate,
)


def test_weight_decay_follows_mae():
    """No decay on biases and 1-D parameters (norms); decay on matrices and the 3-D cls / mask tokens; the frozen
    sin-cos tables are not trained at all."""
    model = SupMAEForPreTraining(tiny_config())
    decayed = set(decay_parameter_names(model))
    assert {
        "supmae.embeddings.cls_token",
        "decoder.mask_token",
        "supmae.layers.0.attention.qkv_proj.weight",
        "supmae.embeddings.patch_embeddings.projection.weight",
        "supervised_head.dense.weight",
    } <= decayed
    for name, parameter in model.named_parameters():
        if name.endswith(".bias") or parameter.ndim == 1 or not parameter.requires_grad:
            assert name not in decayed, name
    assert "supmae.layers.0.layernorm_before.weight" not in decayed
    assert "supervised_head.batch_norm.weight" not in decayed
    assert "supmae.embeddings.position_embeddings" not in decayed


def test_learning_rate_scaling_rule():
    # The released run: effective batch 4096, base 1.5e-4 -> peak 2.4e-3.
    assert scaled_learning_rate(1.5e-4, 4096) == pytest.approx(2.4e-3)
    assert scaled_learning_rate(1e-3, 256) == pytest.approx(1e-3)


def test_layer_wise_lr_decay_follows_the_spec():
    """ViT-B depth: embeddings are layer 0, block i is layer i + 1, fc_norm and the head layer 13; each parameter's lr
    is scaled by 0.65 ** (13 - layer)."""
    model = SupMAEForImageClassification(tiny_config(num_hidden_layers=12))
    groups = layer_decay_parameter_groups(model, weight_decay=0.05, layer_decay=0.65)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    expected_layer = {
        "supmae.embeddings.cls_token": 0,
        "supmae.embeddings.position_embeddings": 0,
        "supmae.embeddings.patch_embeddings.projection.weight": 0,
        "supmae.layers.0.attention.qkv_proj.weight": 1,
        "supmae.layers.11.mlp.fc2.bias": 12,
        "fc_norm.weight": 13,
        "classifier.weight": 13,
        "classifier.bias": 13,
    }
    parameters = dict(model.named_parameters())
    for name, layer in expected_layer.items():
        assert layer_id(name, 12) == layer
        assert scale_of[id(parameters[name])] == pytest.approx(0.65 ** (13 - layer)), name
    for name, parameter in parameters.items():
        assert scale_of[id(parameter)] == pytest.approx(0.65 ** (13 - layer_id(name, 12))), name
        no_decay = parameter.ndim == 1 or name.endswith((".bias", "cls_token", "position_embeddings"))
        assert decay_of[id(parameter)] == (0.0 if no_decay else 0.05), name
    assert len({round(s, 12) for s in scale_of.values()}) == 14  # layers 0..13


def test_lars_adapts_matrices_only(tmp_path):
    from timm.optim import Lars

    model = SupMAEForImageClassification(tiny_config(classifier_batch_norm=True))
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith("classifier.")
    groups = lars_parameter_groups(model)
    assert [p.shape for p in groups[0]["params"]] == [model.classifier.weight.shape] and groups[0]["always_adapt"]
    assert [p.shape for p in groups[1]["params"]] == [model.classifier.bias.shape] and not groups[1]["always_adapt"]
    args = TrainingArguments(
        output_dir=str(tmp_path), learning_rate=0.1, weight_decay=0.0, report_to="none", use_cpu=True
    )
    optimizer = SupMAEClassificationTrainer(model=model, args=args, optimizer_name="lars").create_optimizer()
    assert isinstance(optimizer, Lars) and optimizer.defaults["momentum"] == 0.9


def test_layer_decay_groups_of_upernet():
    """Embeddings layer 0, block i layer i + 1, the pyramid and both heads the top layer (ViT-B depth: 13)."""
    model = tiny_upernet(num_hidden_layers=12, hidden_size=16)
    expected = {
        "backbone.supmae.embeddings.cls_token": 0,
        "backbone.supmae.layers.0.mlp.fc1.weight": 1,
        "backbone.supmae.layers.11.attention.o_proj.bias": 12,
        "backbone.fpn.levels.0.0.weight": 13,
        "decode_head.classifier.weight": 13,
        "auxiliary_head.classifier.bias": 13,
    }
    groups = layer_decay_parameter_groups(model, weight_decay=0.05, layer_decay=0.65)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    parameters = dict(model.named_parameters())
    for name, layer in expected.items():
        assert layer_id(name, 12) == layer
        assert scale_of[id(parameters[name])] == pytest.approx(0.65 ** (13 - layer)), name
    assert len({round(s, 12) for s in scale_of.values()}) == 14
