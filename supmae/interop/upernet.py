# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""A SupMAE checkpoint into UperNet: the backbone's config, the encoder's weights (position table resized) with a
one-sentence report, and a saved directory that loads as remote code."""

import glob
import logging
import os
import shutil

import safetensors.torch
import torch
from transformers import PreTrainedConfig, SegformerImageProcessor, UperNetConfig, UperNetForSemanticSegmentation

from .. import modeling_supmae
from ..configuration_supmae import SupMAEConfig, SupMAEUperNetConfig, mae_dense_prediction_stages
from ..data.segmentation import UNLABELED_PIXEL
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..modeling_supmae import (
    SEGMENTATION_REMOTE_CODE_AUTO_MAP,
    SupMAEBackbone,
    SupMAEUperNetForSemanticSegmentation,
    interpolate_position_embeddings,
    resize_relative_position_bias_table,
)


logger = logging.getLogger(__name__)


# The encoder's architecture, carried from a checkpoint into the backbone (the rest of its config is pretraining's).
ENCODER_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "initializer_range",
    "layer_norm_eps",
    "patch_size",
    "num_channels",
    "qkv_bias",
)


_CHECKPOINT_KINDS = {
    "SupMAEForPreTraining": "the SupMAE pretraining checkpoint",
    "SupMAEForImageClassification": "the fine-tuned SupMAE classifier",
    "SupMAEModel": "the SupMAE encoder",
}


def upernet_config(
    backbone_config: SupMAEConfig,
    id2label: dict[int, str],
    decode_channels: int = 768,
    auxiliary_channels: int = 256,
    auxiliary_loss_weight: float = 0.4,
    classifier_dropout: float = 0.1,
) -> SupMAEUperNetConfig:
    """mmsegmentation's UperNet for MAE: pool scales (1, 2, 3, 6), a `decode_channels`-wide UPerHead (768), and an FCN
    auxiliary head on the third map (256 wide, loss weight 0.4), both with dropout 0.1 before their classifier
    (`SupMAEUperNetForSemanticSegmentation` reads it); 255 is ignored."""
    return SupMAEUperNetConfig(
        backbone_config=backbone_config,
        hidden_size=decode_channels,
        auxiliary_channels=auxiliary_channels,
        auxiliary_loss_weight=auxiliary_loss_weight,
        use_auxiliary_head=True,
        classifier_dropout=classifier_dropout,
        loss_ignore_index=UNLABELED_PIXEL,
        num_labels=len(id2label),
        id2label=dict(id2label),
        label2id={name: index for index, name in id2label.items()},
    )


def backbone_config_from(
    encoder_config: SupMAEConfig,
    image_size: int,
    drop_path_rate: float = 0.1,
    relative_position_bias: bool = True,
    layer_scale_init_value: float | None = 1.0,
) -> SupMAEConfig:
    """The backbone of `encoder_config`'s architecture for `image_size` crops: MAE's four blocks, named explicitly
    (a backbone's default is its last block only), into MAE's feature pyramid; as mmsegmentation's MAE backbone, a
    relative position bias in every block (zero at the start) and layer scales initialized to 1.0 (False and 0 or
    None: without them, for ablations)."""
    check_pyramid_depth(encoder_config.num_hidden_layers)
    if image_size % encoder_config.patch_size:
        raise ValueError(
            f"--crop_size {image_size} is not a multiple of the encoder's patch size ({encoder_config.patch_size}): "
            f"crops of {image_size // encoder_config.patch_size * encoder_config.patch_size} or "
            f"{(image_size // encoder_config.patch_size + 1) * encoder_config.patch_size} pixels would do."
        )
    fields = {name: getattr(encoder_config, name) for name in ENCODER_FIELDS}
    # num_labels=1: the backbone classifies nothing, and 1000 label names would fill UperNet's config.json.
    return SupMAEConfig(
        **fields,
        image_size=image_size,
        drop_path_rate=drop_path_rate,
        out_features=mae_dense_prediction_stages(encoder_config.num_hidden_layers),
        add_fpn=True,
        use_relative_position_bias=relative_position_bias,
        layer_scale_init_value=layer_scale_init_value or None,
        num_labels=1,
        attn_implementation=encoder_config._attn_implementation,
    )


def check_pyramid_depth(num_hidden_layers: int) -> None:
    """UperNet's feature pyramid takes four maps, from four different encoder blocks (MAE's N/3, N/2, 2N/3 and N)."""
    if num_hidden_layers < 4:
        raise ValueError(
            f"The encoder has {num_hidden_layers} block{'s' if num_hidden_layers != 1 else ''} "
            f"(num_hidden_layers={num_hidden_layers}), and UperNet's feature pyramid takes four maps from four "
            "different blocks (MAE's N/3, N/2, 2N/3 and N, at strides 4, 8, 16 and 32): segment with an encoder of at "
            "least 4 blocks, i.e. a deeper checkpoint for --model_name_or_path or, from scratch, "
            "--config_overrides num_hidden_layers=4 (or more)."
        )


def checkpoint_weights(source: str, **hub_kwargs) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors files of a local directory or Hub repository."""
    if os.path.isdir(source):
        directory = source
    else:
        from huggingface_hub import snapshot_download

        directory = snapshot_download(source, allow_patterns=["*.safetensors", "*.json"], **hub_kwargs)
    files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
    if not files:
        raise FileNotFoundError(
            f"{source} holds no weights (*.safetensors). Convert official .pth checkpoints with `supmae-convert` first."
        )
    state = {}
    for path in files:
        try:
            state.update(safetensors.torch.load_file(path))
        except Exception as error:  # safetensors raises its own error types
            raise OSError(
                f"Could not read the weights {path}: {error}. The file is truncated or damaged; save or download it "
                "again."
            ) from error
    return state


def load_encoder_weights(backbone: SupMAEBackbone, source: str, encoder_config: SupMAEConfig, **hub_kwargs) -> str:
    """
    Put the encoder of a SupMAE checkpoint into `backbone`: the embeddings and every block, the position table
    resized bicubically to the backbone's patch grid. The decoder, the pretraining head, the final LayerNorm and a
    classification head are dropped. Returns the one-sentence report, which is also logged. A checkpoint that lacks
    an encoder tensor, holds one of another shape, or holds tensors of unknown parts is refused, naming them.
    """
    state = checkpoint_weights(source, **hub_kwargs)
    if not any(key.startswith("supmae.") for key in state):  # a bare SupMAEModel
        state = {f"supmae.{key}": tensor for key, tensor in state.items()}
    target = backbone.supmae.state_dict()
    reused, dropped, unknown = {}, {}, []
    for key, tensor in state.items():
        name = key.removeprefix("supmae.")
        part = next((d for p, d in backbone._dropped_on_transfer.items() if key.startswith(p)), None)
        if key.startswith("supmae.") and name in target:
            reused[name] = tensor
        elif part is not None:
            dropped[part] = dropped.get(part, 0) + 1
        else:
            unknown.append(key)
    # A pretraining checkpoint has no relative position biases or layer scales: they keep their initial values.
    added = {key for key in set(target) - set(reused) if is_encoder_addition(key)}
    missing = sorted(set(target) - set(reused) - added)
    if unknown or missing:
        raise ValueError(
            f"{source} does not hold a SupMAE encoder that fits the backbone: "
            + (f"unknown tensors {unknown[:5]}" if unknown else "")
            + ("; " if unknown and missing else "")
            + (f"missing {missing[:5]}" if missing else "")
            + "."
        )
    table = "embeddings.position_embeddings"
    old_grid, new_grid = encoder_config.grid_size, backbone.config.grid_size
    if reused[table].shape[1] != old_grid[0] * old_grid[1] + 1:
        raise ValueError(
            f"The position table of {source} has {reused[table].shape[1] - 1} rows; its config's "
            f"{encoder_config.image_size} px images make {old_grid[0]}x{old_grid[1]} patches."
        )
    reused[table] = interpolate_position_embeddings(reused[table], old_grid, new_grid)
    for key in [key for key in reused if key.endswith(".relative_position_bias_table")]:  # BEiT's resize
        reused[key] = resize_relative_position_bias_table(reused[key], old_grid, new_grid)
    wrong = [
        f"{k}: {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in reused.items() if v.shape != target[k].shape
    ]
    if wrong:
        raise ValueError(f"The encoder of {source} does not fit the backbone's shapes: {wrong[:5]}.")
    backbone.supmae.load_state_dict(reused, strict=not added)

    order = [part for part in dict.fromkeys(backbone._dropped_on_transfer.values()) if part in dropped]
    kind = _CHECKPOINT_KINDS.get((encoder_config.architectures or [""])[0], "the SupMAE checkpoint")
    resized = f"; position table resized from {old_grid[0]}x{old_grid[1]} to {new_grid[0]}x{new_grid[1]} patches"
    report = (
        f"UperNetForSemanticSegmentation: reused the encoder of {kind} {source} ({len(reused)} tensors: the "
        f"embeddings and {backbone.config.num_hidden_layers} blocks"
        + (resized if old_grid != new_grid else "")
        + ")"
        + ("; dropped " + ", ".join(f"{part} ({dropped[part]} tensors)" for part in order) if order else "")
        + "; newly initialized: "
        + (backbone._encoder_additions_phrase({f"supmae.{key}" for key in added}) + ", " if added else "")
        + "the feature pyramid (neck), the decode head, the auxiliary head."
    )
    logger.warning(report)
    return report


def is_encoder_addition(key: str) -> bool:
    """Whether `key` (of `SupMAEModel`'s state dict) is a relative position bias table or a layer scale."""
    return key.startswith("layers.") and key.endswith((".relative_position_bias_table", ".lambda_1", ".lambda_2"))


def segmentation_model(
    source: str | None,
    id2label: dict[int, str],
    crop_size: int,
    *,
    config: SupMAEConfig | None = None,
    random_init: bool = False,
    drop_path_rate: float = 0.1,
    decode_channels: int = 768,
    auxiliary_channels: int = 256,
    relative_position_bias: bool = True,
    layer_scale_init_value: float | None = 1.0,
    classifier_dropout: float = 0.1,
    **hub_kwargs,
) -> tuple[SupMAEUperNetForSemanticSegmentation, str]:
    """
    UperNet with a SupMAE backbone for `crop_size` crops and the classes of `id2label`, mmsegmentation's MAE recipe
    by default (`backbone_config_from`, `upernet_config`), and a sentence saying where its weights came from:

    - `source` a SupMAE checkpoint (pretraining, classifier, encoder; a converted official one): its encoder goes
      into the backbone (`load_encoder_weights`); with `random_init`, only its architecture is used;
    - `source` a saved segmentation directory: loaded whole, its own architecture (a new classifier if its classes
      differ);
    - `source` None: `config`'s architecture with random weights.
    """
    if source is not None:
        checkpoint, _ = PreTrainedConfig.get_config_dict(source, **hub_kwargs)
        model_type = checkpoint.get("model_type")
        if model_type == UperNetConfig.model_type and random_init:
            raise ValueError(f"{source} is a segmentation checkpoint; random weights start from a SupMAE one.")
        if model_type == UperNetConfig.model_type:
            labels = {int(k): v for k, v in (checkpoint.get("id2label") or {}).items()}
            model = SupMAEUperNetForSemanticSegmentation.from_pretrained(
                source,
                id2label=dict(id2label),
                label2id={v: k for k, v in id2label.items()},
                num_labels=len(id2label),
                ignore_mismatched_sizes=labels != dict(id2label),
                **hub_kwargs,
            )
            return model, f"UperNetForSemanticSegmentation: continued from the segmentation checkpoint {source}."
        if model_type is None:
            raise ValueError(f"{source} has no config.json with a model_type: is it a saved model directory?")
        if model_type != SupMAEConfig.model_type:
            raise ValueError(
                f"{source} holds a {model_type!r} checkpoint (model_type in its config.json), neither a SupMAE nor a "
                "segmentation one. Convert Transformers ViTMAE checkpoints and the official SupMAE / MAE weights with "
                "`supmae-convert` first."
            )
        config = SupMAEConfig.from_pretrained(source, **hub_kwargs)
    elif config is None:
        raise ValueError("Give a checkpoint (--model_name_or_path) or an architecture (--config_name).")
    backbone = backbone_config_from(config, crop_size, drop_path_rate, relative_position_bias, layer_scale_init_value)
    model = SupMAEUperNetForSemanticSegmentation(
        upernet_config(backbone, id2label, decode_channels, auxiliary_channels, classifier_dropout=classifier_dropout)
    )
    if source is None or random_init:
        what = f"the architecture of {source}" if source else "the given architecture"
        report = f"UperNetForSemanticSegmentation: {what} with random weights (training from scratch)."
        logger.warning(report)
        return model, report
    return model, load_encoder_weights(model.backbone, source, config, **hub_kwargs)


def segmentation_image_processor(crop_size: int, reduce_labels: bool = False) -> SegformerImageProcessor:
    """What a saved directory ships for `pipeline("image-segmentation")`: a resize to the crop size (no sliding
    window) and ImageNet normalization. `do_reduce_labels` records whether the annotations were reduced."""
    return SegformerImageProcessor(
        size={"height": crop_size, "width": crop_size},
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        do_reduce_labels=reduce_labels,
    )


def save_segmentation_model(model: UperNetForSemanticSegmentation, output_dir: str, image_processor=None) -> None:
    """`save_pretrained`, plus the model files and the `auto_map` that make the directory load with
    `trust_remote_code=True` where the supmae package is not installed."""
    os.makedirs(output_dir, exist_ok=True)
    here = os.path.dirname(os.path.abspath(modeling_supmae.__file__))  # the model files, for remote code
    for name in ("configuration_supmae.py", "modeling_supmae.py"):
        shutil.copyfile(os.path.join(here, name), os.path.join(output_dir, name))
    model.config.auto_map = dict(SEGMENTATION_REMOTE_CODE_AUTO_MAP)
    model.save_pretrained(output_dir)
    if image_processor is not None:
        image_processor.save_pretrained(output_dir)
