# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""SupMAE model configuration."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig, UperNetConfig
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneConfigMixin


POOLING_CHOICES = ("mean", "cls")

# Architectures of the published ViT sizes. The SupMAE release is ViT-B/16 with a ONE-block decoder; the other sizes
# use MAE's 8-block, 512-wide decoder (MAE's released ViT-B/L/H), since SupMAE published no other decoder for them.
_MAE_DECODER = {
    "decoder_hidden_size": 512,
    "decoder_num_hidden_layers": 8,
    "decoder_num_attention_heads": 16,
    "decoder_intermediate_size": 2048,
}
_SUPMAE_DECODER = {**_MAE_DECODER, "decoder_num_hidden_layers": 1}
SUPMAE_PRESETS = {
    "vit-small-patch16": {
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 6,
        "intermediate_size": 1536,
        "patch_size": 16,
        **_SUPMAE_DECODER,
    },
    "vit-base-patch16": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "patch_size": 16,
        **_SUPMAE_DECODER,
    },
    "vit-base-patch16-dec8": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "patch_size": 16,
        **_MAE_DECODER,
    },
    "vit-large-patch16": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "patch_size": 16,
        **_MAE_DECODER,
    },
    "vit-huge-patch14": {
        "hidden_size": 1280,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "intermediate_size": 5120,
        "patch_size": 14,
        **_MAE_DECODER,
    },
}


@strict
class SupMAEConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of a SupMAE model: a ViT encoder that sees the visible patches, MAE's pixel decoder, and a small
    supervised head that classifies the image from the visible patches alone. Field names follow `ViTMAEConfig`; the
    defaults reproduce the released SupMAE ViT-B/16 (1-block 512-wide decoder, LayerNorm eps 1e-6, normalized-pixel
    loss, mask ratio 0.75, 1000 labels).

    Args:
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size (`int`):
            Width, depth, heads and MLP width of the encoder.
        hidden_act (`str`, defaults to `"gelu"`): MLP activation (exact GELU).
        initializer_range (`float`, defaults to 0.02): std of the normal init of the cls and mask tokens.
        layer_norm_eps (`float`, defaults to 1e-6): epsilon of every LayerNorm.
        image_size (`int` or `(height, width)`, defaults to 224): input size the position tables are built for.
        patch_size (`int`, defaults to 16): side of a square patch, in pixels.
        num_channels (`int`, defaults to 3): input channels.
        qkv_bias (`bool`, defaults to `True`): bias on the fused query/key/value projection.
        use_relative_position_bias (`bool`, defaults to `False`): give every encoder block BEiT's relative position
            bias: a learned `((2h - 1)(2w - 1) + 3, num_attention_heads)` table for the `image_size` patch grid (h x w),
            one entry per offset between two patches and three for the cls token, added to the attention scores.
            Zero at initialization, as in mmsegmentation's MAE backbone (BEiT draws it from a truncated normal); other
            grids use it bilinearly resized, as Transformers' BEiT does. Not with flash attention.
        layer_scale_init_value (`float`, *optional*): BEiT's layer scale: a learned per-channel factor on both residual
            branches of every encoder block, initialized to this value (mmsegmentation's MAE backbone uses 1.0).
            `None` or 0 (the default) leaves the blocks without it. MAE and SupMAE pretrain and fine-tune without
            either; the two are for dense transfer as mmsegmentation's MAE recipe runs it. The decoder has neither.
        decoder_hidden_size, decoder_num_hidden_layers, decoder_num_attention_heads, decoder_intermediate_size (`int`):
            The pixel decoder (used in pretraining only).
        mask_ratio (`float`, defaults to 0.75): fraction of patches removed in pretraining, in [0, 1).
        norm_pix_loss (`bool`, defaults to `True`): reconstruct per-patch normalized pixels.
        supervised_head_hidden_size (`int`, defaults to 3072): hidden width of the pretraining head
            Linear -> BatchNorm1d -> ReLU -> Linear; 0 makes the head a single Linear.
        supervised_pooling (`str`, defaults to `"mean"`): feature of the pretraining head: `"mean"` of the visible
            patch tokens or the `"cls"` token.
        supervised_loss_weight (`float`, defaults to 0.01): weight of the classification loss in the total loss.
        supervised_temperature (`float`, defaults to 10.0): logits are divided by it inside the classification loss.
        classifier_pooling (`str`, defaults to `"mean"`): pooling of `SupMAEForImageClassification`: `"mean"` of all
            patch tokens followed by a LayerNorm (MAE's fine-tuning recipe) or the final-normed `"cls"` token.
        classifier_batch_norm (`bool`, defaults to `False`): put MAE's linear-probing BatchNorm1d (no affine,
            eps 1e-6) before the classifier. The classifier is then initialized with std 0.01 (linear probing),
            otherwise with std 2e-5 (fine-tuning).
        drop_path_rate (`float`, defaults to 0.0): stochastic depth of the last encoder block; block i gets
            `drop_path_rate * i / (num_hidden_layers - 1)`. The fine-tuning recipe uses 0.1.
        out_features (`list[str]`, *optional*), out_indices (`list[int]`, *optional*): what `SupMAEBackbone`
            returns, from `stage_names` = `["stem", "stage1", ..., "stageN"]`, where `stem` is the embeddings and
            `stage{i}` the output of encoder block i (1-based). Default: the last block only, Transformers' backbone
            contract. Dense prediction names its stages: `mae_dense_prediction_stages(N)` gives MAE's and BEiT's four
            blocks (`["stage4", "stage6", "stage8", "stage12"]` for 12 blocks, the 0-based blocks 3, 5, 7, 11).
        add_fpn (`bool`, defaults to `False`): end `SupMAEBackbone` with MAE's feature pyramid, which turns four
            stages into maps at strides 4, 8, 16 and 32 (for 16 px patches; the nearest powers of two otherwise).
            The pyramid needs four stages: with `add_fpn` and none named, the default is MAE's four blocks (which is
            also how segmentation configs saved before the stages were named load, with the stages they had).

    Example:

    ```python
    >>> from supmae import SupMAEConfig, SupMAEForPreTraining
    >>> config = SupMAEConfig.from_preset("vit-base-patch16", num_labels=100)
    >>> model = SupMAEForPreTraining(config)
    ```
    """

    model_type = "supmae"

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-6
    image_size: int | list[int] | tuple[int, int] = 224
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True
    use_relative_position_bias: bool = False
    layer_scale_init_value: float | int | None = None
    decoder_hidden_size: int = 512
    decoder_num_hidden_layers: int = 1
    decoder_num_attention_heads: int = 16
    decoder_intermediate_size: int = 2048
    mask_ratio: float | int = 0.75
    norm_pix_loss: bool = True
    supervised_head_hidden_size: int = 3072
    supervised_pooling: str = "mean"
    supervised_loss_weight: float | int = 0.01
    supervised_temperature: float | int = 10.0
    classifier_pooling: str = "mean"
    classifier_batch_norm: bool = False
    drop_path_rate: float | int = 0.0
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None
    add_fpn: bool = False

    def __post_init__(self, **kwargs):
        # Transformers' configs default to 2 labels; SupMAE is an ImageNet-1k model.
        if self.id2label is None and kwargs.get("num_labels") is None:
            kwargs["num_labels"] = 1000
        kwargs.pop("stage_names", None)  # derived from num_hidden_layers
        self.set_output_features_output_indices(kwargs.pop("out_features", None), kwargs.pop("out_indices", None))
        super().__post_init__(**kwargs)

    # The backbone's stages follow the depth: `stage_names`, and `out_features` unless given, are derived from
    # `num_hidden_layers` (stored as None), so that a config whose depth is changed later stays consistent. The
    # default is the last block (Transformers' backbone contract), or MAE's four blocks for the feature pyramid.
    @property
    def stage_names(self) -> list[str]:
        return ["stem"] + [f"stage{i}" for i in range(1, self.num_hidden_layers + 1)]

    @stage_names.setter
    def stage_names(self, value):
        pass  # older configs and the backbone mixin may assign it; it is always derived

    def set_output_features_output_indices(self, out_features: list | None, out_indices: list | None):
        if out_features is None and out_indices is None:  # the default, derived from the depth
            self._out_features = self._out_indices = None
        else:
            super().set_output_features_output_indices(out_features, out_indices)

    @property
    def out_features(self) -> list[str]:
        if self._out_features is not None:
            return self._out_features
        return mae_dense_prediction_stages(self.num_hidden_layers) if self.add_fpn else [self.stage_names[-1]]

    @out_features.setter
    def out_features(self, out_features: list[str] | None):
        self.set_output_features_output_indices(out_features, None)

    @property
    def out_indices(self) -> list[int]:
        return [self.stage_names.index(name) for name in self.out_features]

    @out_indices.setter
    def out_indices(self, out_indices: list[int] | None):
        self.set_output_features_output_indices(None, None if out_indices is None else list(out_indices))

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "SupMAEConfig":
        """A config for one of `SUPMAE_PRESETS` (e.g. `"vit-base-patch16"`), with any field overridden."""
        if name not in SUPMAE_PRESETS:
            raise ValueError(f"Unknown SupMAE preset {name!r}; the presets are: {', '.join(SUPMAE_PRESETS)}.")
        return cls(**{**SUPMAE_PRESETS[name], **overrides})

    @property
    def image_height_width(self) -> tuple[int, int]:
        """`image_size` as a (height, width) pair."""
        return size_pair(self.image_size)

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patches per column and per row for `image_size`."""
        height, width = self.image_height_width
        return height // self.patch_size, width // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def validate_architecture(self):
        """Reject values the model cannot run with, naming the field and what it allows."""
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "patch_size",
            "num_channels",
            "decoder_hidden_size",
            "decoder_num_attention_heads",
            "decoder_intermediate_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)}.")
        for name in ("decoder_num_hidden_layers", "supervised_head_hidden_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        for width, heads in (
            ("hidden_size", "num_attention_heads"),
            ("decoder_hidden_size", "decoder_num_attention_heads"),
        ):
            if getattr(self, width) % getattr(self, heads):
                raise ValueError(
                    f"`{width}` ({getattr(self, width)}) must be divisible by `{heads}` ({getattr(self, heads)})."
                )
            if getattr(self, width) % 4:
                raise ValueError(
                    f"`{width}` ({getattr(self, width)}) must be divisible by 4 for the 2-D sin-cos position tables."
                )
        size = self.image_size
        if not isinstance(size, int) and (len(size) != 2 or not all(isinstance(s, int) for s in size)):
            raise ValueError(f"`image_size` must be an int or a (height, width) pair of ints, got {size!r}.")
        if any(s < 1 or s % self.patch_size for s in size_pair(size)):
            raise ValueError(
                f"`image_size` {size!r} must be positive and divisible by `patch_size` ({self.patch_size})."
            )
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"`mask_ratio` must be in [0, 1), got {self.mask_ratio}.")
        if int(self.num_patches * (1 - self.mask_ratio)) < 1:
            raise ValueError(
                f"`mask_ratio` {self.mask_ratio} keeps no patch of the {self.num_patches} in a "
                f"{self.image_size} image with `patch_size` {self.patch_size}; lower it."
            )
        for name in ("supervised_pooling", "classifier_pooling"):
            if getattr(self, name) not in POOLING_CHOICES:
                raise ValueError(f"`{name}` must be one of {POOLING_CHOICES}, got {getattr(self, name)!r}.")
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"`hidden_act` {self.hidden_act!r} is not one of {sorted(ACT2FN)}.")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"`layer_norm_eps` must be > 0, got {self.layer_norm_eps}.")
        if not self.supervised_temperature > 0:
            raise ValueError(f"`supervised_temperature` must be > 0, got {self.supervised_temperature}.")
        if self.supervised_loss_weight < 0:
            raise ValueError(f"`supervised_loss_weight` must be >= 0, got {self.supervised_loss_weight}.")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"`drop_path_rate` must be in [0, 1), got {self.drop_path_rate}.")
        if self.layer_scale_init_value is not None and not self.layer_scale_init_value >= 0:
            raise ValueError(
                f"`layer_scale_init_value` must be >= 0, or None or 0 for blocks without layer scale, got "
                f"{self.layer_scale_init_value}."
            )
        if self.num_labels < 1:
            raise ValueError(f"`num_labels` must be >= 1, got {self.num_labels}.")
        if self.add_fpn and self.num_hidden_layers < 4:
            raise ValueError(
                f"`add_fpn` needs exactly 4 `out_features` (the pyramid's strides 4, 8, 16, 32), and an encoder of "
                f"{self.num_hidden_layers} blocks (`num_hidden_layers`) has only {self.num_hidden_layers} stages: use "
                "an encoder of at least 4 blocks, or set `add_fpn=False` to take its stages as they are."
            )
        if self.add_fpn and len(self.out_features) != 4:
            raise ValueError(
                f"`add_fpn` needs exactly 4 `out_features` (the pyramid's strides 4, 8, 16, 32), got "
                f"{self.out_features}; e.g. {mae_dense_prediction_stages(max(self.num_hidden_layers, 4))} for "
                f"{max(self.num_hidden_layers, 4)} blocks."
            )


def mae_dense_prediction_stages(num_hidden_layers: int) -> list[str]:
    """MAE's and BEiT's four stages for dense prediction (`out_features` of a segmentation backbone): blocks N/3, N/2,
    2N/3 and N (1-based, rounded, each after the one before: 2, 3, 4, 5 for N = 5); for 12 blocks `stage4, stage6,
    stage8, stage12` (the 0-based out_indices 3, 5, 7, 11 of their code), for ViT-L's 24 blocks 8, 12, 16, 24. Every
    block for N < 4."""
    if num_hidden_layers < 4:
        return [f"stage{i}" for i in range(1, num_hidden_layers + 1)]
    blocks = []
    for fraction in (1 / 3, 1 / 2, 2 / 3, 1):
        blocks.append(max(round(num_hidden_layers * fraction), blocks[-1] + 1 if blocks else 1))
    return [f"stage{block}" for block in blocks]


def size_pair(size: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


@strict
class SupMAEUperNetConfig(UperNetConfig):
    """
    `UperNetConfig` that reads a SupMAE `backbone_config` without the Auto registry that `import supmae` fills: how a
    saved segmentation directory's config loads as remote code (`trust_remote_code=True`). With the package installed,
    the same config.json loads as a plain `UperNetConfig`.

    Args:
        classifier_dropout (`float`, defaults to 0.0): mmsegmentation's dropout before the 1x1 classifier of the
            decode head and of the auxiliary head (`Dropout2d`, whole channels; its UperNet recipes use 0.1).
            Transformers' UperNet heads have none, and 0 keeps them so. Only `SupMAEUperNetForSemanticSegmentation`
            reads it (plain `UperNetForSemanticSegmentation` ignores the field).
    """

    classifier_dropout: float | int = 0.0

    def validate_classifier_dropout(self):
        if not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(f"`classifier_dropout` must be in [0, 1), got {self.classifier_dropout}.")

    def __post_init__(self, **kwargs):
        if (
            isinstance(self.backbone_config, dict)
            and self.backbone_config.get("model_type") == SupMAEConfig.model_type
        ):
            self.backbone_config = SupMAEConfig.from_dict(self.backbone_config)
        super().__post_init__(**kwargs)


__all__ = ["SUPMAE_PRESETS", "SupMAEConfig", "SupMAEUperNetConfig", "mae_dense_prediction_stages"]
