# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Optimizers of the recipes: MAE's weight-decay rule, the linear lr scaling, layer-wise lr decay, LARS or SGD for
linear probes."""

import torch
from torch import nn


# BEiT's (and timm's) exception for its relative position bias tables, which are 2-D: no weight decay.
NO_DECAY_TABLES = (".relative_position_bias_table",)


def decay_parameter_names(model: nn.Module) -> list[str]:
    """Trainable parameters that get weight decay: MAE's (and timm's) rule gives none to biases and other 1-D
    parameters (norms, layer scales) nor to relative position bias tables; the cls and mask tokens, being 3-D, do get
    it. Frozen tables are left out."""
    return [
        name
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and parameter.ndim > 1 and not name.endswith((".bias", *NO_DECAY_TABLES))
    ]


def effective_batch_size(args) -> int:
    """Images per optimizer step over all processes: per-device batch x accumulation steps x processes."""
    return args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size


def scaled_learning_rate(base_learning_rate: float, effective_batch_size: int) -> float:
    """MAE's linear scaling rule: `lr = base_lr * effective_batch_size / 256`."""
    return base_learning_rate * effective_batch_size / 256


def peak_learning_rate(learning_rate: float | None, base_learning_rate: float, effective_batch_size: int):
    """The peak learning rate and a log line saying where it comes from: `learning_rate` when one was given (it wins
    over the rule), else MAE's `base_lr * effective_batch_size / 256`."""
    scaled = scaled_learning_rate(base_learning_rate, effective_batch_size)
    rule = f"{base_learning_rate:g} x {effective_batch_size} / 256 = {scaled:g}"
    if learning_rate is not None:
        return learning_rate, f"lr {learning_rate:g} from --learning_rate (it overrides the base-lr rule, {rule})"
    return scaled, f"effective batch {effective_batch_size}: lr = {rule}"


# LARS (You et al., 2017) is a large-batch optimizer: MAE probes with it at an effective batch of 16384. Its step is
# lr x trust_coefficient (0.001) x |w| / |g|, and with lr = 0.1 x batch / 256 a small batch leaves the head where it
# was initialized. Below this batch the probe uses momentum SGD (the same lr rule, no trust ratio).
LARS_MIN_EFFECTIVE_BATCH = 4096


def linear_probe_optimizer(choice: str, effective_batch_size: int) -> tuple[str, str]:
    """`"lars"` or `"sgd"` for `--linprobe_optimizer` `choice` (`"auto"` decides by the batch), and a log line."""
    if choice != "auto":
        return choice, f"linear probe optimizer: {choice} (--linprobe_optimizer)"
    if effective_batch_size >= LARS_MIN_EFFECTIVE_BATCH:
        message = f"linear probe optimizer: MAE's LARS (effective batch {effective_batch_size} >= {LARS_MIN_EFFECTIVE_BATCH})"
        return "lars", message
    return "sgd", (
        f"linear probe optimizer: SGD with momentum 0.9, no LARS trust ratio (effective batch {effective_batch_size} "
        f"< {LARS_MIN_EFFECTIVE_BATCH}, where LARS's step, lr x 0.001 x |w|/|g|, barely moves the head; "
        "--linprobe_optimizer lars forces it)"
    )


def layer_id(name: str, num_layers: int) -> int:
    """MAE's layer-wise lr-decay groups for a classifier's parameter `name` (or, under `backbone.`, UperNet's SupMAE
    backbone's): the embeddings are layer 0, block i is layer i + 1, everything after the blocks (fc_norm and the head;
    the feature pyramid and UperNet's heads) is layer `num_layers + 1`."""
    name = name.removeprefix("backbone.")
    if name.startswith("supmae.embeddings."):
        return 0
    if name.startswith("supmae.layers."):
        return int(name.split(".")[2]) + 1
    return num_layers + 1


def check_layer_decay(layer_decay: float) -> None:
    """Layer-wise lr decay scales layer l's lr by `layer_decay ** (L + 1 - l)`: it must lie in (0, 1] (a negative one
    would flip the sign of every other layer's step)."""
    if not 0 < layer_decay <= 1:
        raise ValueError(
            f"--layer_decay must be in (0, 1] (MAE: 0.65 for ViT-B, 0.75 for ViT-L), got {layer_decay:g}."
        )


def layer_decay_parameter_groups(model: nn.Module, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW groups of MAE's fine-tuning: lr scale `layer_decay ** (num_layers + 1 - layer_id)` and no weight decay on
    biases, 1-D parameters, the cls token, the position table and relative position bias tables (ViT-B: 13 lr
    scales, 0.65**13 ... 1)."""
    num_layers = (getattr(model.config, "backbone_config", None) or model.config).num_hidden_layers
    groups = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        no_decay = parameter.ndim == 1 or name.endswith(
            (".bias", ".cls_token", ".position_embeddings", *NO_DECAY_TABLES)
        )
        layer = layer_id(name, num_layers)
        key = (layer, no_decay)
        if key not in groups:
            scale = layer_decay ** (num_layers + 1 - layer)
            groups[key] = {"params": [], "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": scale}
        groups[key]["params"].append(parameter)
    return list(groups.values())


def layer_decay_adamw(model: nn.Module, args, layer_decay: float) -> torch.optim.AdamW:
    """AdamW over `layer_decay_parameter_groups` at `args.learning_rate` x each group's lr scale, with the Trainer
    arguments' betas, eps, weight decay and kernel (`--optim adamw_torch_fused`). The top layer's group (the head's
    lr, the peak) comes first, since Trainer logs the first group's learning rate."""
    groups = sorted(layer_decay_parameter_groups(model, args.weight_decay, layer_decay), key=lambda g: -g["lr_scale"])
    for group in groups:
        group["lr"] = args.learning_rate * group["lr_scale"]
    return torch.optim.AdamW(
        groups,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        fused=args.optim == "adamw_torch_fused" or None,
    )


def lars_parameter_groups(model: nn.Module) -> list[dict]:
    """MAE's LARS: layer-wise adaptation for matrices only; biases and 1-D parameters get plain momentum SGD."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trainable if p.ndim > 1], "always_adapt": True},
        {"params": [p for p in trainable if p.ndim <= 1], "always_adapt": False},
    ]
