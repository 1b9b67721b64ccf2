# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Export a fine-tuned `SupMAEForImageClassification` to timm's `VisionTransformer`.

SupMAE's classifier is MAE's fine-tuning ViT, which timm's `VisionTransformer` implements with the same numerics: a
fused qkv projection, exact GELU, the position table covering the cls position too and added to the cls token
(`class_token=True, no_embed_class=False`), and either mean pooling of the patch tokens followed by `fc_norm`
(`global_pool="avg", fc_norm=True`) or the final-normed cls token (`global_pool="token"`). The export is exact in
eval mode for all three heads (logits within 1e-12 in float64, 3e-6 in float32, tests/interop/test_timm_export.py), the
linear-probe one included: its BatchNorm1d without affine parameters has no place in timm's ViT, so its running
statistics are folded into the classifier, `W (x - mu) / sqrt(var + eps) + b = W' x + b'` with
`W' = W / sqrt(var + eps)`, `b' = b - W' mu`.

    from supmae.timm_export import export_to_timm, save_timm

    vit = export_to_timm(model)          # a timm VisionTransformer in eval mode, weights loaded strictly
    save_timm(model, "supmae-timm")      # model.safetensors + config.json in timm's Hub layout

A timm user then loads the directory without this package, offline, through timm's `local-dir:` source (present in
timm 1.0.31, the version this is tested with):

    import timm
    model = timm.create_model("local-dir:supmae-timm", pretrained=True).eval()

`timm.data.resolve_data_config(model=model)` then gives the preprocessing (input size, bicubic resize, crop_pct,
mean and std) and `model.pretrained_cfg["label_names"]` the class names. The directory is laid out as timm's own
`push_to_hf_hub` lays out a Hub repository, and timm reads `hf-hub:` repositories with the same parser, so after
uploading it `timm.create_model("hf-hub:<user>/<repo>", pretrained=True)` should load it too (not tested here: the
tests are offline). Where timm has no `local-dir:` source, build from the saved arguments and load the weights:

    model = timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"])  # cfg = json of config.json
    model.load_state_dict(safetensors.torch.load_file("supmae-timm/model.safetensors"))

`config.json`'s "architecture" must be a timm registered name for `create_model`; it is the matching timm name
(e.g. `vit_base_patch16_224`) when there is one, else `vit_base_patch16_224` as a plain builder: "model_args" spells
out every architecture argument, so the name only picks the `VisionTransformer` entry point. config.json names
timm's LayerNorm by its default (eps 1e-6, SupMAE's default); `save_timm` refuses another eps, which that file cannot
express, while `export_to_timm` handles any.
"""

import json
import os
import re
from functools import partial

import torch
from torch import nn

from ..configuration_supmae import SupMAEConfig, size_pair
from ..image_processing_supmae import SupMAEImageProcessor
from ..modeling_supmae import SupMAEForImageClassification


# Our block parameters -> timm's `blocks.N.*` (the fused qkv stays fused, rows q, k, v in both).
_BLOCK = {
    "layernorm_before": "norm1",
    "attention.qkv_proj": "attn.qkv",
    "attention.o_proj": "attn.proj",
    "layernorm_after": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_PLAIN = {
    "supmae.embeddings.cls_token": "cls_token",
    "supmae.embeddings.position_embeddings": "pos_embed",
    "supmae.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "supmae.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "supmae.layernorm.weight": "norm.weight",
    "supmae.layernorm.bias": "norm.bias",
    "fc_norm.weight": "fc_norm.weight",
    "fc_norm.bias": "fc_norm.bias",
}
# (width, depth, heads) of timm's named ViT sizes.
_TIMM_SIZES = {
    (192, 12, 3): "tiny",
    (384, 12, 6): "small",
    (768, 12, 12): "base",
    (1024, 24, 16): "large",
    (1280, 32, 16): "huge",
}
_TIMM_DEFAULT_LAYER_NORM_EPS = 1e-6  # what timm's VisionTransformer uses when no norm_layer is given


def _check_model(model) -> None:
    if not isinstance(model, SupMAEForImageClassification):
        raise TypeError(
            f"timm export needs a fine-tuned SupMAEForImageClassification, got {type(model).__name__}. A pretraining "
            "model's head classifies the visible patches with Linear-BatchNorm-ReLU-Linear and has no timm "
            "equivalent; load the checkpoint with SupMAEForImageClassification.from_pretrained and fine-tune it."
        )


def timm_kwargs(config: SupMAEConfig) -> dict:
    """Keyword arguments of `timm.models.vision_transformer.VisionTransformer` for the classifier `config`
    describes. `norm_layer` is a LayerNorm partial with the config's eps and `act_layer` exact GELU (module classes,
    not JSON; `save_timm` writes their JSON form)."""
    if config.hidden_act != "gelu":
        raise ValueError(f"timm export supports the exact GELU (hidden_act='gelu'), got {config.hidden_act!r}.")
    mlp_ratio = config.intermediate_size / config.hidden_size
    if int(config.hidden_size * mlp_ratio) != config.intermediate_size:  # timm's Mlp width is int(D * mlp_ratio)
        raise ValueError(
            f"timm's MLP width int(embed_dim * mlp_ratio) cannot give intermediate_size {config.intermediate_size} "
            f"for hidden_size {config.hidden_size}."
        )
    mean_pooling = config.classifier_pooling == "mean"
    return {
        "img_size": config.image_size if isinstance(config.image_size, int) else tuple(config.image_size),
        "patch_size": config.patch_size,
        "in_chans": config.num_channels,
        "num_classes": config.num_labels,
        "embed_dim": config.hidden_size,
        "depth": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "mlp_ratio": mlp_ratio,
        "qkv_bias": config.qkv_bias,
        "global_pool": "avg" if mean_pooling else "token",
        "fc_norm": mean_pooling,  # avg: no final norm, LayerNorm after pooling; token: final norm, then the cls token
        "class_token": True,
        "no_embed_class": False,  # MAE's layout: the table has a cls row, added to the cls token
        "norm_layer": partial(nn.LayerNorm, eps=config.layer_norm_eps),
        "act_layer": nn.GELU,
    }


def _folded_classifier(model: SupMAEForImageClassification) -> tuple[torch.Tensor, torch.Tensor]:
    """The classifier `(num_labels, D)`, `(num_labels,)` with the eval-mode linear-probe BatchNorm folded in:
    `W (x - mu) / sqrt(var + eps) + b = (W / sqrt(var + eps)) x + (b - (W / sqrt(var + eps)) mu)`."""
    weight, bias = model.classifier.weight.detach(), model.classifier.bias.detach()
    norm = model.batch_norm
    if norm is None:
        return weight.clone(), bias.clone()
    if norm.running_mean is None or norm.affine:
        raise ValueError("Only the linear-probe BatchNorm1d (running statistics, no affine) can be folded.")
    scale = (norm.running_var.double() + norm.eps).rsqrt()  # (D,); float64, so only the final cast rounds
    folded = weight.double() * scale
    return folded.to(weight.dtype), (bias.double() - folded @ norm.running_mean.double()).to(bias.dtype)


def to_timm_state_dict(model: SupMAEForImageClassification) -> dict[str, torch.Tensor]:
    """`model`'s weights under timm's `VisionTransformer` names: `cls_token (1, 1, D)`, `pos_embed (1, 1 + L, D)`,
    `patch_embed.proj.*`, `blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.*`, `norm.*` (cls pooling)
    or `fc_norm.*` (mean pooling), and `head.*`, with the linear-probe BatchNorm folded into `head`."""
    _check_model(model)
    block = re.compile(rf"supmae\.layers\.(\d+)\.({'|'.join(map(re.escape, _BLOCK))})\.(weight|bias)")
    state_dict = {}
    for name, tensor in model.state_dict().items():
        if name.startswith(("classifier.", "batch_norm.")):
            continue  # the head, folded below
        if match := block.fullmatch(name):
            index, part, leaf = match.groups()
            state_dict[f"blocks.{index}.{_BLOCK[part]}.{leaf}"] = tensor.detach().clone()
        elif name in _PLAIN:
            state_dict[_PLAIN[name]] = tensor.detach().clone()
        else:
            raise KeyError(f"No timm name for {name!r}.")
    state_dict["head.weight"], state_dict["head.bias"] = _folded_classifier(model)
    return state_dict


def export_to_timm(model: SupMAEForImageClassification):
    """A timm `VisionTransformer` in eval mode computing `model`'s logits `(B, num_labels)` from `(B, C, H, W)`
    images, weights loaded strictly."""
    from timm.models.vision_transformer import VisionTransformer

    _check_model(model)
    weight = model.classifier.weight
    # In the model's dtype before loading: a float64 model's weights (the folded head too) are not rounded to float32.
    vit = VisionTransformer(**timm_kwargs(model.config)).to(dtype=weight.dtype)
    vit.load_state_dict(to_timm_state_dict(model), strict=True)
    vit.pretrained_cfg = _pretrained_cfg(model.config)  # what timm.data.resolve_data_config reads
    return vit.to(device=weight.device).eval()


def _architecture(config: SupMAEConfig) -> str:
    """timm's registered name for this ViT size, or vit_base_patch16_224 as a plain builder (model_args decide)."""
    import timm

    size = _TIMM_SIZES.get((config.hidden_size, config.num_hidden_layers, config.num_attention_heads))
    height, width = size_pair(config.image_size)
    name = f"vit_{size}_patch{config.patch_size}_{height}"
    return name if size and height == width and timm.is_model(name) else "vit_base_patch16_224"


def _pretrained_cfg(config: SupMAEConfig, image_processor=None) -> dict:
    """timm's `pretrained_cfg`: preprocessing (from `image_processor`, default `SupMAEImageProcessor()`'s) and labels."""
    from transformers.image_utils import PILImageResampling

    processor = image_processor if image_processor is not None else SupMAEImageProcessor()
    crop_pct = processor.crop_pct  # timm's meaning too: the crop's share of the resized shorter side
    if processor.crop_size is not None:  # the explicit (resize, crop) form of older directories
        shortest_edge, crop_height = processor.size.get("shortest_edge"), processor.crop_size.get("height")
        crop_pct = crop_height / shortest_edge if shortest_edge and crop_height else 1.0
    return {
        "tag": "supmae",
        "custom_load": False,
        "input_size": [config.num_channels, *size_pair(config.image_size)],
        "fixed_input_size": True,
        "interpolation": PILImageResampling(processor.resample).name.lower(),
        "crop_pct": crop_pct,
        "crop_mode": "center",
        "mean": list(processor.image_mean),
        "std": list(processor.image_std),
        "num_classes": config.num_labels,
        "label_names": [config.id2label[i] for i in range(config.num_labels)],
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "paper_name": "Supervised Masked Autoencoders Are Efficient Vision Learners",
        "paper_ids": "arXiv:2205.14540",
    }


def _timm_config(model: SupMAEForImageClassification, image_processor=None) -> dict:
    """config.json in the layout timm's `push_to_hf_hub` writes and its `local-dir:` / `hf-hub:` sources read."""
    config = model.config
    if config.layer_norm_eps != _TIMM_DEFAULT_LAYER_NORM_EPS:
        # timm's JSON names norm layers by string, which cannot carry an eps; its default LayerNorm is eps 1e-6.
        raise ValueError(
            f"timm's config.json cannot express LayerNorm eps {config.layer_norm_eps} (only its default 1e-6); "
            "use export_to_timm(model) and save the module with torch instead."
        )
    kwargs = timm_kwargs(config)
    del kwargs["norm_layer"]  # timm's default: LayerNorm with eps 1e-6
    kwargs["act_layer"] = "gelu"  # timm's exact GELU
    return {
        "architecture": _architecture(config),
        "num_classes": config.num_labels,
        "num_features": config.hidden_size,
        "global_pool": kwargs["global_pool"],
        "model_args": {key: list(value) if isinstance(value, tuple) else value for key, value in kwargs.items()},
        "pretrained_cfg": _pretrained_cfg(config, image_processor),
    }


def save_timm(model: SupMAEForImageClassification, directory: str | os.PathLike, image_processor=None) -> None:
    """Write `model.safetensors` (timm's state dict) and `config.json` (timm's Hub config: architecture, model_args,
    pretrained_cfg with input size, interpolation, crop_pct, mean, std and label names) into `directory`.
    Preprocessing is taken from `image_processor` (a `SupMAEImageProcessor`, default: its defaults)."""
    from safetensors.torch import save_file

    _check_model(model)
    config = _timm_config(model, image_processor)
    os.makedirs(directory, exist_ok=True)
    state_dict = {name: tensor.contiguous().cpu() for name, tensor in to_timm_state_dict(model).items()}
    save_file(state_dict, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(directory, "config.json"), "w") as file:
        json.dump(config, file, indent=2)


__all__ = ["export_to_timm", "save_timm", "timm_kwargs", "to_timm_state_dict"]
