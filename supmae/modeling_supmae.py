# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""PyTorch SupMAE (Liang, Li, Marculescu, "Supervised Masked Autoencoders Are Efficient Vision Learners", 2022).

SupMAE is MAE plus one supervised branch: the ViT encoder sees the visible 25% of the patches, MAE's pixel decoder
reconstructs the removed ones, and a small head classifies the image from the visible patches alone.

Shapes: B images, L = (H/P)(W/P) patches, K visible patches, D encoder width, Dd decoder width.
"""

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, UperNetForSemanticSegmentation
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin, filter_output_hidden_states
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BackboneOutput, ImageClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.upernet.modeling_upernet import UperNetFCNHead, UperNetHead, UperNetPreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from .configuration_supmae import SupMAEConfig, SupMAEUperNetConfig, size_pair


logger = logging.get_logger(__name__)

# What `save_pretrained` writes into config.json, next to copies of these files, so that a saved directory loads with
# `trust_remote_code=True` where the supmae package is not installed.
REMOTE_CODE_AUTO_MAP = {
    "AutoConfig": "configuration_supmae.SupMAEConfig",
    "AutoModel": "modeling_supmae.SupMAEModel",
    "AutoModelForPreTraining": "modeling_supmae.SupMAEForPreTraining",
    "AutoModelForImageClassification": "modeling_supmae.SupMAEForImageClassification",
    "AutoBackbone": "modeling_supmae.SupMAEBackbone",
    "AutoImageProcessor": "image_processing_supmae.SupMAEImageProcessor",
}
# The same for a saved UperNet with a SupMAE backbone (its config.json is UperNet's, its image processor Segformer's).
SEGMENTATION_REMOTE_CODE_AUTO_MAP = {
    "AutoConfig": "configuration_supmae.SupMAEUperNetConfig",
    "AutoModelForSemanticSegmentation": "modeling_supmae.SupMAEUperNetForSemanticSegmentation",
}


@dataclass
class SupMAEModelOutput(ModelOutput):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(B, 1 + K, D)`):
        Final-LayerNormed encoder output: the cls token, then the K encoded patches (the visible ones in shuffled
        order when masking, all L in image order when not).
    mask (`torch.FloatTensor` of shape `(B, L)`):
        1 for a removed patch, 0 for a visible one, in image order.
    ids_restore (`torch.LongTensor` of shape `(B, L)`):
        Index that puts the shuffled sequence back into image order.
    hidden_states (`tuple(torch.FloatTensor)`, returned with `output_hidden_states=True`):
        Input of the first layer and output of each layer, each `(B, 1 + K, D)`.
    attentions (`tuple(torch.FloatTensor)`, returned with `output_attentions=True`):
        Attention probabilities of each layer, each `(B, heads, 1 + K, 1 + K)`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    mask: torch.FloatTensor | None = None
    ids_restore: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SupMAEForPreTrainingOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`):
        `reconstruction_loss + supervised_loss_weight * classification_loss` (the reconstruction loss alone without
        labels).
    reconstruction_loss (`torch.FloatTensor` of shape `()`):
        Mean squared error of the (normalized) pixels, averaged over the removed patches.
    classification_loss (`torch.FloatTensor` of shape `()`, returned with `labels`):
        Cross-entropy of `classification_logits / supervised_temperature`, over the labels that are not -100.
    logits (`torch.FloatTensor` of shape `(B, L, P * P * C)`):
        Pixel predictions for every patch, in image order, laid out as `patchify` lays out its target.
    classification_logits (`torch.FloatTensor` of shape `(B, num_labels)`):
        The supervised head's logits, computed from the visible patches only (None when training without labels).
    mask, ids_restore, hidden_states, attentions:
        As in `SupMAEModelOutput` (encoder only).
    """

    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    classification_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    classification_logits: torch.FloatTensor | None = None
    mask: torch.FloatTensor | None = None
    ids_restore: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def sincos_position_embeddings(embed_dim: int, grid_size: tuple[int, int]) -> torch.Tensor:
    """
    MAE's fixed 2-D sin-cos table, `(1, 1 + h * w, embed_dim)`: row 0 (the cls position) is zeros; the patch at row r,
    column c gets `[sin(c w), cos(c w), sin(r w), cos(r w)]` with `w_i = 10000 ** (-i / (embed_dim / 4))`.
    """
    height, width = grid_size
    omega = 1.0 / 10000 ** (torch.arange(embed_dim // 4, dtype=torch.float64) / (embed_dim / 4))
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    cols, rows = cols.reshape(-1, 1) * omega, rows.reshape(-1, 1) * omega  # (h * w, D/4)
    table = torch.cat([cols.sin(), cols.cos(), rows.sin(), rows.cos()], dim=1)
    table = torch.cat([torch.zeros(1, embed_dim, dtype=torch.float64), table])
    return table.float().unsqueeze(0)


def interpolate_position_embeddings(table: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]):
    """Bicubically resize the patch rows of a `(1, 1 + L, D)` table from `old_grid` to `new_grid`; cls row kept."""
    if tuple(old_grid) == tuple(new_grid):
        return table
    cls_row, patches = table[:, :1], table[:, 1:]
    patches = patches.reshape(1, *old_grid, -1).permute(0, 3, 1, 2)
    # At least float32 (no half-precision bicubic on every device), float64 when that is the dtype.
    dtype = torch.promote_types(table.dtype, torch.float32)
    patches = F.interpolate(patches.to(dtype), size=tuple(new_grid), mode="bicubic", align_corners=False)
    patches = patches.to(table.dtype).permute(0, 2, 3, 1).flatten(1, 2)
    return torch.cat([cls_row, patches], dim=1)


def random_masking(sequence: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None):
    """
    MAE's per-sample random masking: keep the `int(L * (1 - mask_ratio))` patches with the smallest noise.

    Args:
        sequence: `(B, L, D)` patch embeddings.
        noise: `(B, L)`, uniform in [0, 1) if not given; the same noise always gives the same mask.

    Returns:
        kept `(B, K, D)` in ascending-noise order, mask `(B, L)` (1 = removed, image order), ids_restore `(B, L)`.
    """
    batch_size, length, dim = sequence.shape
    len_keep = int(length * (1 - mask_ratio))
    if len_keep < 1:
        raise ValueError(f"mask_ratio {mask_ratio} keeps no patch of {length}; lower it.")
    if noise is None:
        noise = torch.rand(batch_size, length, device=sequence.device)
    elif noise.shape != (batch_size, length):
        raise ValueError(
            f"`noise` must have shape (batch_size, num_patches) = {(batch_size, length)}, got {tuple(noise.shape)}."
        )
    ids_shuffle = torch.argsort(noise.to(sequence.device), dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    kept = torch.gather(sequence, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(batch_size, length, device=sequence.device, dtype=sequence.dtype)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return kept, mask, ids_restore


class SupMAEPatchEmbeddings(nn.Module):
    """`(B, C, H, W)` pixels -> `(B, L, D)` patch embeddings by a stride-P convolution."""

    def __init__(self, config: SupMAEConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.num_channels = config.num_channels
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, config.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"`pixel_values` must have shape (batch_size, {self.num_channels}, height, width), got "
                f"{tuple(pixel_values.shape)}."
            )
        height, width = pixel_values.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"Image size {height}x{width} is not divisible by the patch size {self.patch_size}.")
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class SupMAEEmbeddings(nn.Module):
    """Patch embeddings + fixed sin-cos positions, optional random masking, then the cls token in front."""

    def __init__(self, config: SupMAEConfig):
        super().__init__()
        self.config = config
        self.grid_size = config.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embeddings = SupMAEPatchEmbeddings(config)
        # Fixed in pretraining; `SupMAEForImageClassification` makes it trainable, as MAE's fine-tuning does.
        self.position_embeddings = nn.Parameter(
            torch.zeros(1, config.num_patches + 1, config.hidden_size), requires_grad=False
        )

    def forward(
        self,
        pixel_values: torch.Tensor,
        mask_ratio: float = 0.0,
        noise: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns embeddings `(B, 1 + K, D)`, mask `(B, L)` and ids_restore `(B, L)`."""
        embeddings = self.patch_embeddings(pixel_values)
        grid = tuple(s // self.config.patch_size for s in pixel_values.shape[-2:])
        if grid != self.grid_size and not interpolate_pos_encoding:
            raise ValueError(
                f"Input image size {tuple(pixel_values.shape[-2:])} doesn't match the model's "
                f"{size_pair(self.config.image_size)}; pass `interpolate_pos_encoding=True` to run at another size."
            )
        positions = interpolate_position_embeddings(self.position_embeddings, self.grid_size, grid)
        embeddings = embeddings + positions[:, 1:]

        if noise is None and mask_ratio == 0:
            # The whole image in image order (feature extraction, fine-tuning): nothing is shuffled.
            batch_size, length = embeddings.shape[:2]
            mask = embeddings.new_zeros(batch_size, length)
            ids_restore = torch.arange(length, device=embeddings.device).expand(batch_size, -1)
        else:
            embeddings, mask, ids_restore = random_masking(embeddings, mask_ratio, noise)

        cls_tokens = (self.cls_token + positions[:, :1]).expand(embeddings.shape[0], -1, -1)
        return torch.cat([cls_tokens, embeddings], dim=1), mask, ids_restore


def relative_position_index(grid_size: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """
    BEiT's index into a relative position bias table, `(1 + h * w, 1 + h * w)` for the cls token and an h x w patch
    grid in image order. Patches at (r, c) and (r', c') read entry `(r - r' + h - 1) * (2w - 1) + (c - c' + w - 1)`,
    one of the `(2h - 1)(2w - 1)` offsets; the three entries after them are cls-to-patch (row 0), patch-to-cls
    (column 0) and cls-to-cls.
    """
    height, width = grid_size
    rows, cols = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    offsets = (
        (rows[:, None] - rows[None, :] + height - 1) * (2 * width - 1) + cols[:, None] - cols[None, :] + width - 1
    )
    num_offsets = (2 * height - 1) * (2 * width - 1)
    index = torch.full((1 + height * width,) * 2, num_offsets, dtype=torch.long, device=device)  # cls to patch
    index[1:, 1:] = offsets
    index[1:, 0] = num_offsets + 1  # patch to cls
    index[0, 0] = num_offsets + 2  # cls to cls
    return index


def resize_relative_position_bias_table(
    table: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """
    A `((2h - 1)(2w - 1) + 3, heads)` table for the `old_grid` (h, w) -> the table for `new_grid`, as Transformers'
    BEiT resizes it: the offsets, seen as a `(2h - 1) x (2w - 1)` map per head, bilinearly resized (align_corners
    False); the three cls entries kept. (BEiT reads that map as `(2w - 1) x (2h - 1)`, the same for square grids.)
    """
    if tuple(old_grid) == tuple(new_grid):
        return table
    old_size = (2 * old_grid[0] - 1, 2 * old_grid[1] - 1)
    new_size = (2 * new_grid[0] - 1, 2 * new_grid[1] - 1)
    offsets, cls_entries = table[:-3], table[-3:]
    offsets = offsets.reshape(1, *old_size, -1).permute(0, 3, 1, 2)  # (1, heads, 2h - 1, 2w - 1)
    offsets = F.interpolate(offsets, size=new_size, mode="bilinear", align_corners=False)
    return torch.cat([offsets.permute(0, 2, 3, 1).reshape(new_size[0] * new_size[1], -1), cls_entries])


class SupMAERelativePositionBias(nn.Module):
    """
    BEiT's relative position bias of one encoder block: a learned `((2h - 1)(2w - 1) + 3, heads)` table for the
    config's h x w patch grid, read through `relative_position_index` into a bias on the attention scores. Zero at
    initialization, as in mmsegmentation's MAE backbone (BEiT draws it from a truncated normal).
    """

    def __init__(self, config: SupMAEConfig, num_heads: int):
        super().__init__()
        self.grid_size = config.grid_size
        height, width = self.grid_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * height - 1) * (2 * width - 1) + 3, num_heads)
        )
        self.relative_position_index = nn.Buffer(relative_position_index(self.grid_size), persistent=False)

    def forward(self, grid_size: tuple[int, int], token_positions: torch.Tensor | None = None) -> torch.Tensor:
        """
        The bias for an image of `grid_size` patches (the table resized if that is not the config's grid):
        `(1, heads, 1 + L, 1 + L)` for the cls token and all patches in image order, or `(B, heads, 1 + K, 1 + K)` for
        the tokens at `token_positions` `(B, 1 + K)` of that sequence (a masked encoder's kept patches).
        """
        table, index = self.relative_position_bias_table, self.relative_position_index
        if tuple(grid_size) != self.grid_size:
            table = resize_relative_position_bias_table(table, self.grid_size, grid_size)
            index = relative_position_index(grid_size, device=index.device)
        if token_positions is None:
            return table[index].permute(2, 0, 1).unsqueeze(0).contiguous()
        index = index[token_positions[:, :, None], token_positions[:, None, :]]  # (B, 1 + K, 1 + K)
        return table[index].permute(0, 3, 1, 2).contiguous()


def kept_token_positions(ids_restore: torch.Tensor, num_kept: int) -> torch.Tensor:
    """Where a masked encoder's tokens sit in the unmasked sequence `[cls, patch 0, ..., patch L - 1]`: `(B, 1 + K)`, 0
    for the cls token, then `1 + ` the image-order index of each kept patch, in the shuffled order they are encoded."""
    ids_keep = torch.argsort(ids_restore, dim=1)[:, :num_kept]  # ids_restore's inverse is the shuffle
    return torch.cat([ids_keep.new_zeros(ids_keep.shape[0], 1), ids_keep + 1], dim=1)


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Softmax attention on `(B, heads, N, head_dim)` tensors; returns `(B, N, heads, head_dim)` and the weights."""
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    # Softmax in at least float32 (half precision would lose the small weights), in float64 when that is the dtype.
    weights = F.softmax(weights, dim=-1, dtype=torch.promote_types(query.dtype, torch.float32)).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class SupMAEAttention(nn.Module):
    """Multi-head self-attention with one fused query/key/value projection (the official layout), optionally with
    BEiT's relative position bias, which reaches the attention function as an additive mask."""

    def __init__(self, config: SupMAEConfig, hidden_size: int, num_heads: int, relative_position_bias: bool = False):
        super().__init__()
        self.config = config  # the attention interface reads `config._attn_implementation`
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.qkv_proj = nn.Linear(hidden_size, 3 * hidden_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(hidden_size, hidden_size)
        self.relative_position_bias = SupMAERelativePositionBias(config, num_heads) if relative_position_bias else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        grid_size: tuple[int, int] | None = None,
        token_positions: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        hidden_states `(B, N, D)`; `grid_size` the image's patch grid (default the config's) and `token_positions`
        `(B, N)` where the tokens sit in `[cls, patches in image order]` (default: that sequence itself), both read by
        the relative position bias only. Returns `(B, N, D)` and the attention weights (eager only).
        """
        batch_size, length, _ = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).view(batch_size, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)

        implementation = self.config._attn_implementation or "eager"
        if kwargs.get("output_attentions") and implementation != "eager":
            logger.warning_once(
                f"`{implementation}` attention returns no attention maps; computing them with eager "
                "attention for the calls that ask for `output_attentions`."
            )
            implementation = "eager"
        bias = None
        if self.relative_position_bias is not None:
            if "flash" in implementation:
                raise ValueError(
                    f"`{implementation}` attention takes no additive bias, and `use_relative_position_bias=True` adds "
                    'one to every encoder block\'s attention scores; use `attn_implementation="sdpa"` or "eager", '
                    "or a config with `use_relative_position_bias=False`."
                )
            bias = self.relative_position_bias(grid_size or self.relative_position_bias.grid_size, token_positions)
            bias = bias.to(query.dtype)  # sdpa wants a float mask in the query's dtype (bf16 under autocast)
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        output, weights = attention(self, query, key, value, bias, scaling=self.scaling, dropout=0.0, **kwargs)
        return self.o_proj(output.reshape(batch_size, length, -1)), weights


class SupMAEMLP(nn.Module):
    def __init__(self, config: SupMAEConfig, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(hidden_states)))


def drop_path(hidden_states: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a residual branch for a random subset of samples, rescaling the others."""
    if drop_prob == 0.0 or not training:
        return hidden_states
    keep_prob = 1 - drop_prob
    shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
    keep = hidden_states.new_empty(shape).bernoulli_(keep_prob)
    return hidden_states * keep / keep_prob


class SupMAELayer(GradientCheckpointingLayer):
    """
    Pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x)); drop path on both branches. Encoder blocks
    may add BEiT's relative position bias to the attention and its layer scale to both branches: x + lambda_1 *
    attention(LN(x)), then x + lambda_2 * MLP(LN(x)), lambda a learned `(D,)` vector (mmsegmentation's gamma_1, gamma_2).
    """

    def __init__(
        self,
        config: SupMAEConfig,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        drop_path_rate: float = 0.0,
        relative_position_bias: bool = False,
        layer_scale_init_value: float | None = None,
    ):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.attention = SupMAEAttention(config, hidden_size, num_heads, relative_position_bias)
        self.layernorm_after = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.mlp = SupMAEMLP(config, hidden_size, intermediate_size)
        self.drop_path_rate = drop_path_rate
        self.lambda_1 = self.lambda_2 = None
        if layer_scale_init_value:
            self.lambda_1 = nn.Parameter(torch.full((hidden_size,), float(layer_scale_init_value)))
            self.lambda_2 = nn.Parameter(torch.full((hidden_size,), float(layer_scale_init_value)))

    def forward(
        self,
        hidden_states: torch.Tensor,
        grid_size: tuple[int, int] | None = None,
        token_positions: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        """`(B, N, D)` -> `(B, N, D)`; `grid_size` and `token_positions` as in `SupMAEAttention.forward`."""
        normed = self.layernorm_before(hidden_states)
        attention_output, _ = self.attention(normed, grid_size=grid_size, token_positions=token_positions, **kwargs)
        if self.lambda_1 is not None:
            attention_output = self.lambda_1 * attention_output
        hidden_states = hidden_states + drop_path(attention_output, self.drop_path_rate, self.training)
        mlp_output = self.mlp(self.layernorm_after(hidden_states))
        if self.lambda_2 is not None:
            mlp_output = self.lambda_2 * mlp_output
        return hidden_states + drop_path(mlp_output, self.drop_path_rate, self.training)


class SupMAEDecoder(nn.Module):
    """MAE's pixel decoder: encoder output `(B, 1 + K, D)` -> pixel predictions `(B, L, P * P * C)` in image order."""

    def __init__(self, config: SupMAEConfig):
        super().__init__()
        self.grid_size = config.grid_size
        self.decoder_embed = nn.Linear(config.hidden_size, config.decoder_hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_hidden_size))
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, config.num_patches + 1, config.decoder_hidden_size), requires_grad=False
        )
        self.decoder_layers = nn.ModuleList(
            SupMAELayer(
                config,
                config.decoder_hidden_size,
                config.decoder_num_attention_heads,
                config.decoder_intermediate_size,
            )
            for _ in range(config.decoder_num_hidden_layers)
        )
        self.decoder_norm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)
        self.decoder_pred = nn.Linear(config.decoder_hidden_size, config.patch_size**2 * config.num_channels)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        hidden_states = self.decoder_embed(latent)  # (B, 1 + K, Dd)
        batch_size, length = ids_restore.shape
        mask_tokens = self.mask_token.expand(batch_size, length + 1 - hidden_states.shape[1], -1)
        patches = torch.cat([hidden_states[:, 1:], mask_tokens], dim=1)  # (B, L, Dd), shuffled order
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        hidden_states = torch.cat([hidden_states[:, :1], patches], dim=1)
        hidden_states = hidden_states + interpolate_position_embeddings(
            self.decoder_pos_embed, self.grid_size, grid_size
        )
        for layer in self.decoder_layers:
            hidden_states = layer(hidden_states)
        return self.decoder_pred(self.decoder_norm(hidden_states))[:, 1:]


class SupMAESupervisedHead(nn.Module):
    """SupMAE's pretraining classifier: Linear -> BatchNorm1d -> ReLU -> Linear, or one Linear for hidden size 0."""

    def __init__(self, config: SupMAEConfig):
        super().__init__()
        hidden_size = config.supervised_head_hidden_size
        self.dense = nn.Linear(config.hidden_size, hidden_size) if hidden_size else None
        self.batch_norm = nn.BatchNorm1d(hidden_size) if hidden_size else None
        self.classifier = nn.Linear(hidden_size or config.hidden_size, config.num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """`(B, D)` pooled features -> `(B, num_labels)` logits."""
        if self.dense is not None:
            if self.training and features.shape[0] == 1:
                raise ValueError(
                    "The supervised head's BatchNorm1d needs more than one image per batch in training "
                    "mode; use a batch of 2 or more, or call `model.eval()`."
                )
            features = F.relu(self.batch_norm(self.dense(features)))
        return self.classifier(features)


class SupMAEPreTrainedModel(PreTrainedModel):
    config: SupMAEConfig
    base_model_prefix = "supmae"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["SupMAEEmbeddings", "SupMAELayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {"hidden_states": SupMAELayer, "attentions": SupMAEAttention}
    # `get_input_embeddings()` is the patch embedding (`supmae.embeddings.patch_embeddings`), as for ViT and ViTMAE.
    _input_embed_layer = "patch_embeddings"
    # The losses are computed in `forward` without Trainer's `num_items_in_batch`; let it average over accumulation.
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        """The official initialization: xavier-uniform Linears (the fused qkv as ONE matrix), zero biases, the patch
        projection initialized like a Linear, sin-cos position tables, normal(0.02) cls and mask tokens."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            # xavier on the (D, C*P*P) view; `init.*` can't see the loaded flag through a view, so check it here.
            if not getattr(module.weight, "_is_hf_initialized", False):
                nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
            bound = module.weight[0].numel() ** -0.5  # PyTorch's default bias init
            init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.ConvTranspose2d):
            # The feature pyramid keeps PyTorch's default initialization, as MAE's and BEiT's necks do.
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = module.weight[0].numel() ** -0.5  # fan_in of a transposed convolution: out_channels * k * k
            init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
            if module.weight is not None:
                init.ones_(module.weight)
                init.zeros_(module.bias)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, SupMAEEmbeddings):
            init.normal_(module.cls_token, std=std)
            init.copy_(
                module.position_embeddings, sincos_position_embeddings(module.cls_token.shape[-1], module.grid_size)
            )
        elif isinstance(module, SupMAEDecoder):
            init.normal_(module.mask_token, std=std)
            init.copy_(
                module.decoder_pos_embed, sincos_position_embeddings(module.mask_token.shape[-1], module.grid_size)
            )
        elif isinstance(module, SupMAERelativePositionBias):
            init.zeros_(module.relative_position_bias_table)  # MAE's zeros: the bias starts as no bias
            init.copy_(module.relative_position_index, relative_position_index(module.grid_size))
        elif isinstance(module, SupMAELayer) and module.lambda_1 is not None:
            init.constant_(module.lambda_1, self.config.layer_scale_init_value)
            init.constant_(module.lambda_2, self.config.layer_scale_init_value)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, with errors that name the file and the problem: a checkpoint of another
        model type (which would otherwise load as random weights), a truncated or damaged safetensors file, and
        weights whose shapes do not fit the config."""
        source = str(pretrained_model_name_or_path)
        hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        try:
            checkpoint_config, _ = SupMAEConfig.get_config_dict(source, **hub_kwargs)
        except OSError:
            checkpoint_config = {}  # no config.json: let Transformers say what is missing
        if not checkpoint_config and kwargs.get("config") is None and _weights_files(source, hub_kwargs):
            # Weights without a config would be read into the default architecture and fail on every shape.
            raise OSError(
                f"{source} holds weights but no config.json, so their architecture is unknown. A directory "
                "written by save_pretrained has one; convert official .pth checkpoints with `supmae-convert`."
            )
        model_type = checkpoint_config.get("model_type", SupMAEConfig.model_type)
        if model_type != SupMAEConfig.model_type:
            raise ValueError(
                f"{source} holds a {model_type!r} checkpoint (model_type in its config.json), not a SupMAE one; "
                f"{cls.__name__} would start from random weights. Convert Transformers ViTMAE checkpoints and the "
                "official SupMAE / MAE weights with `supmae-convert` first."
            )
        labels = checkpoint_config.get("id2label") or {}
        new_classes = kwargs.get("num_labels") is not None and len(labels) != kwargs["num_labels"]
        if new_classes and "id2label" not in kwargs and "config" not in kwargs:
            # New classes (a classifier trained anew): generic names, instead of Transformers' warning that
            # num_labels and the checkpoint's id2label disagree.
            kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(kwargs.pop("num_labels"))}
            kwargs["label2id"] = {name: i for i, name in kwargs["id2label"].items()}
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except Exception as error:
            problem = _loading_problem(cls, source, error, kwargs.get("config"), hub_kwargs)
            if problem is None:
                raise
            raise OSError(problem) from error

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the auto_map and model files that make the directory Hub remote code."""
        auto_map = {}
        for auto_class, reference in REMOTE_CODE_AUTO_MAP.items():
            name = reference.split(".")[0] + ".py"
            source = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
            if os.path.isfile(source):  # a remote-code copy of this file may have no image processor beside it
                auto_map[auto_class] = reference
                if kwargs.get("is_main_process", True):
                    os.makedirs(save_directory, exist_ok=True)
                    shutil.copyfile(source, os.path.join(save_directory, name))
        self.config.auto_map = auto_map
        super().save_pretrained(save_directory, *args, **kwargs)

    # Checkpoint parts that a model built on the encoder drops when it loads a pretraining checkpoint.
    _dropped_on_transfer = {"decoder.": "the pixel decoder", "supervised_head.": "the pretraining head"}

    # Encoder parameters that MAE and SupMAE pretraining checkpoints never have: `use_relative_position_bias` and
    # `layer_scale_init_value` add them for dense transfer (mmsegmentation's MAE backbone), initialized anew.
    _encoder_additions = {".relative_position_bias_table": "relative position biases", ".lambda_1": "layer scales"}

    def _adjust_missing_and_unexpected_keys(self, loading_info) -> None:
        """Replace Transformers' key-by-key report by one plain sentence when an encoder is taken from a pretraining
        checkpoint, or when the checkpoint lacks the encoder's relative position biases or layer scales; anything
        else unexpected or missing is still reported as usual."""
        super()._adjust_missing_and_unexpected_keys(loading_info)
        dropped = {}
        for key in sorted(loading_info.unexpected_keys):
            part = next((p for p in self._dropped_on_transfer if key.startswith(p)), None)
            if part is not None:
                dropped.setdefault(self._dropped_on_transfer[part], []).append(key)
        added = {
            key
            for key in loading_info.missing_keys
            if key.startswith("supmae.layers.") and key.endswith((*self._encoder_additions, ".lambda_2"))
        }
        if not dropped and not added:
            return
        new = []
        if dropped:
            loading_info.unexpected_keys -= {key for keys in dropped.values() for key in keys}
            new = sorted({key.rsplit(".", 1)[0] for key in loading_info.missing_keys if not key.startswith("supmae.")})
            loading_info.missing_keys = {key for key in loading_info.missing_keys if key.startswith("supmae.")}
            message = (
                f"{type(self).__name__}: reused the encoder of a SupMAE pretraining checkpoint; dropped "
                + ", ".join(f"{part} ({len(keys)} tensors)" for part, keys in dropped.items())
            )
        else:
            message = f"{type(self).__name__}: loaded the encoder"
        if added:
            loading_info.missing_keys -= added
            new.append(self._encoder_additions_phrase(added))
        if new:
            message += f"; newly initialized: {', '.join(new)}"
        logger.warning(message + ".")

    def _encoder_additions_phrase(self, keys: set[str]) -> str:
        """E.g. "the relative position biases (zeros) and layer scales (1.0) of the 12 encoder blocks"."""
        initial = {
            "relative position biases": "zeros",
            "layer scales": str(float(self.config.layer_scale_init_value or 0)),
        }
        parts = [name for suffix, name in self._encoder_additions.items() if any(k.endswith(suffix) for k in keys)]
        blocks = len({key.split(".")[2] for key in keys})
        what = " and ".join(f"{name} ({initial[name]})" for name in parts)
        return f"the {what} of the {blocks} encoder block{'s' if blocks > 1 else ''}"


_HUB_KWARGS = ("cache_dir", "revision", "local_files_only", "token", "subfolder", "force_download", "proxies")


def _weights_files(source: str, hub_kwargs: dict) -> list[str]:
    """The local safetensors files of a checkpoint directory (or of its Hub snapshot already in the cache)."""
    from transformers.utils import cached_file

    directory = os.path.join(source, hub_kwargs.get("subfolder") or "")
    if not os.path.isdir(directory):
        kwargs = {k: v for k, v in hub_kwargs.items() if k != "force_download"}
        kwargs.update(local_files_only=True, _raise_exceptions_for_missing_entries=False)
        found = cached_file(source, "config.json", **kwargs)
        if found is None:
            return []
        directory = os.path.dirname(found)
    return sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".safetensors"))


def _safetensors_header(path: str) -> tuple[dict, int]:
    """A safetensors file's tensor entries (name -> dtype, shape, data_offsets) and the size the file must have."""
    with open(path, "rb") as file:
        length = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(length))
    header.pop("__metadata__", None)
    return header, 8 + length + max((entry["data_offsets"][1] for entry in header.values()), default=0)


def _loading_problem(cls, source: str, error: Exception, config, hub_kwargs: dict) -> str | None:
    """A message naming the file and the problem behind a failed `from_pretrained`, or None for other errors."""
    files = _weights_files(source, hub_kwargs)
    if type(error).__module__.startswith("safetensors"):
        damaged = []
        for path in files:
            try:
                if os.path.getsize(path) != _safetensors_header(path)[1]:
                    damaged.append(path)
            except (OSError, ValueError, KeyError):
                damaged.append(path)
        return (
            f"Could not read the weights {', '.join(damaged or files) or 'in ' + source}: {error}. The file is "
            "truncated or damaged (an interrupted download or save?); download or save it again."
        )
    if "ignore_mismatched_sizes" in str(error) and files:
        if config is None or isinstance(config, (str, os.PathLike)):
            config = SupMAEConfig.from_pretrained(source, **hub_kwargs)
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
        mismatches = []
        for path in files:
            for name, entry in _safetensors_header(path)[0].items():
                key = next((k for k in (name, name.removeprefix("supmae."), "supmae." + name) if k in expected), None)
                if key is not None and list(expected[key]) != entry["shape"]:
                    where = os.path.basename(path)
                    mismatches.append(f"{name}: {entry['shape']} in {where}, {list(expected[key])} from the config")
        if mismatches:
            return (
                f"The weights of {source} do not fit the configuration ({len(mismatches)} tensors differ in shape): "
                + "; ".join(mismatches[:5])
                + ". Was config.json edited after the weights were saved? Pass ignore_mismatched_sizes=True to "
                "initialize those tensors anew."
            )
    return None


class SupMAEModel(SupMAEPreTrainedModel):
    """
    The SupMAE ViT encoder. Without `mask_ratio` or `noise` it encodes the whole image with the patches in image order
    (feature extraction); pretraining passes `mask_ratio` to encode only a random subset. Unlike `ViTMAEModel`, a plain
    call therefore never drops patches.
    """

    def __init__(self, config: SupMAEConfig, add_final_layernorm: bool = True):
        super().__init__(config)
        self.embeddings = SupMAEEmbeddings(config)
        depth = config.num_hidden_layers
        self.layers = nn.ModuleList(
            SupMAELayer(
                config,
                config.hidden_size,
                config.num_attention_heads,
                config.intermediate_size,
                drop_path_rate=config.drop_path_rate * i / max(depth - 1, 1),
                relative_position_bias=config.use_relative_position_bias,
                layer_scale_init_value=config.layer_scale_init_value,
            )
            for i in range(depth)
        )
        # MAE's fine-tuning with mean pooling replaces the final LayerNorm by `fc_norm` after the pooling.
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if add_final_layernorm else None
        self.post_init()

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SupMAEModelOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(B, C, H, W)`):
            Normalized images.
        noise (`torch.FloatTensor` of shape `(B, L)`, *optional*):
            Masking noise: patches with the smallest noise are kept. Given noise means masking with `mask_ratio`
            (default `config.mask_ratio`) and the same noise always gives the same mask.
        mask_ratio (`float`, *optional*):
            Fraction of patches to remove. Defaults to `config.mask_ratio` when `noise` is given, else to 0 (no
            masking, no shuffling).
        interpolate_pos_encoding (`bool`, defaults to `False`):
            Bicubically resize the position table to the input's patch grid, for images of another size.
        """
        if mask_ratio is None:
            mask_ratio = self.config.mask_ratio if noise is not None else 0.0
        hidden_states, mask, ids_restore = self.embeddings(
            pixel_values, mask_ratio=mask_ratio, noise=noise, interpolate_pos_encoding=interpolate_pos_encoding
        )
        grid_size = tuple(s // self.config.patch_size for s in pixel_values.shape[-2:])
        # A relative position bias between the kept patches is the full image's, read at their image positions.
        token_positions = None
        if self.config.use_relative_position_bias and (noise is not None or mask_ratio > 0):
            token_positions = kept_token_positions(ids_restore, hidden_states.shape[1] - 1)
        for layer in self.layers:
            hidden_states = layer(hidden_states, grid_size=grid_size, token_positions=token_positions, **kwargs)
        if self.layernorm is not None:
            hidden_states = self.layernorm(hidden_states)
        return SupMAEModelOutput(last_hidden_state=hidden_states, mask=mask, ids_restore=ids_restore)


class SupMAEForPreTraining(SupMAEPreTrainedModel):
    """SupMAE pretraining: masked encoder, pixel decoder, and the supervised head on the visible patches."""

    def __init__(self, config: SupMAEConfig):
        super().__init__(config)
        self.supmae = SupMAEModel(config)
        self.decoder = SupMAEDecoder(config)
        self.supervised_head = SupMAESupervisedHead(config)
        self.post_init()

    def patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` -> `(B, L, P * P * C)`, each patch laid out (row, column, channel) with channel fastest."""
        batch_size, channels, height, width = pixel_values.shape
        p = self.config.patch_size
        patches = pixel_values.reshape(batch_size, channels, height // p, p, width // p, p)
        return patches.permute(0, 2, 4, 3, 5, 1).reshape(batch_size, (height // p) * (width // p), p * p * channels)

    def unpatchify(self, patches: torch.Tensor, image_size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """`(B, L, P * P * C)` -> `(B, C, H, W)`, the inverse of `patchify`; `image_size` defaults to the config's."""
        p, channels = self.config.patch_size, self.config.num_channels
        height, width = size_pair(image_size if image_size is not None else self.config.image_size)
        if (height // p) * (width // p) != patches.shape[1] or patches.shape[2] != p * p * channels:
            raise ValueError(
                f"Patches of shape {tuple(patches.shape)} don't make a {height}x{width} image with "
                f"patch size {p} and {channels} channels."
            )
        images = patches.reshape(patches.shape[0], height // p, width // p, p, p, channels)
        return images.permute(0, 5, 1, 3, 2, 4).reshape(patches.shape[0], channels, height, width)

    def reconstruction_loss(self, pixel_values: torch.Tensor, predictions: torch.Tensor, mask: torch.Tensor):
        """Mean squared error per patch (of per-patch normalized pixels with `norm_pix_loss`), averaged over removed
        patches. predictions `(B, L, P * P * C)`, mask `(B, L)`."""
        target = self.patchify(pixel_values)
        if self.config.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        loss = ((predictions - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()

    def pool(self, latent: torch.Tensor) -> torch.Tensor:
        """The supervised head's feature from the encoder output `(B, 1 + K, D)`: mean of the visible patch tokens or
        the cls token, `(B, D)`."""
        return latent[:, 0] if self.config.supervised_pooling == "cls" else latent[:, 1:].mean(dim=1)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.LongTensor | None = None,
        noise: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SupMAEForPreTrainingOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(B, C, H, W)`):
            Normalized images.
        labels (`torch.LongTensor` of shape `(B,)`, *optional*):
            Class indices; -100 marks an unlabeled image. Without labels SupMAE is plain MAE.
        noise (`torch.FloatTensor` of shape `(B, L)`, *optional*):
            Masking noise, for reproducible masks.
        interpolate_pos_encoding (`bool`, defaults to `False`):
            Run at an image size other than the config's by resizing both position tables.
        """
        outputs = self.supmae(
            pixel_values,
            noise=noise,
            mask_ratio=self.config.mask_ratio,
            interpolate_pos_encoding=interpolate_pos_encoding,
            **kwargs,
        )
        latent, mask = outputs.last_hidden_state, outputs.mask
        grid_size = tuple(s // self.config.patch_size for s in pixel_values.shape[-2:])
        predictions = self.decoder(latent, outputs.ids_restore, grid_size)
        reconstruction_loss = self.reconstruction_loss(pixel_values, predictions, mask)
        loss, classification_loss, classification_logits = reconstruction_loss, None, None
        # Training without labels is plain MAE: the head would learn nothing and only move its BatchNorm statistics.
        if labels is not None or not self.training:
            classification_logits = self.supervised_head(self.pool(latent))
        if labels is not None:
            # Mean over the labeled images; a batch with none of them adds 0 rather than NaN.
            # At least float32 (half-precision logits would round the loss), float64 when the model runs in it.
            logits = classification_logits.to(torch.promote_types(classification_logits.dtype, torch.float32))
            scaled_logits = logits / self.config.supervised_temperature
            summed = F.cross_entropy(scaled_logits, labels, ignore_index=-100, reduction="sum")
            classification_loss = summed / (labels != -100).sum().clamp(min=1)
            loss = reconstruction_loss + self.config.supervised_loss_weight * classification_loss

        return SupMAEForPreTrainingOutput(
            loss=loss,
            reconstruction_loss=reconstruction_loss,
            classification_loss=classification_loss,
            logits=predictions,
            classification_logits=classification_logits,
            mask=mask,
            ids_restore=outputs.ids_restore,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class SupMAEForImageClassification(SupMAEPreTrainedModel):
    """
    MAE's fine-tuning model: the whole image through the encoder, the mean of the patch tokens, a LayerNorm (`fc_norm`)
    and a Linear classifier (or, with `classifier_pooling="cls"`, the final-normed cls token and the classifier). With
    `classifier_batch_norm`, MAE's linear-probing head: BatchNorm1d without affine parameters, then the classifier.
    Position embeddings are trainable. `from_pretrained` on a pretraining checkpoint reuses its encoder.
    """

    def __init__(self, config: SupMAEConfig):
        super().__init__(config)
        mean_pooling = config.classifier_pooling == "mean"
        self.supmae = SupMAEModel(config, add_final_layernorm=not mean_pooling)
        self.supmae.embeddings.position_embeddings.requires_grad_(True)
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if mean_pooling else None
        self.batch_norm = (
            nn.BatchNorm1d(config.hidden_size, affine=False, eps=1e-6) if config.classifier_batch_norm else None
        )
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @property
    def _dropped_on_transfer(self):
        parts = dict(SupMAEPreTrainedModel._dropped_on_transfer)
        if self.fc_norm is not None:
            parts["supmae.layernorm."] = "the encoder's final LayerNorm (mean pooling uses fc_norm)"
        return parts

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        if module is self.classifier:  # MAE's heads: std 0.01 for linear probing, 2e-5 for fine-tuning
            init.trunc_normal_(module.weight, std=0.01 if self.config.classifier_batch_norm else 2e-5)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    def pool(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Encoder output `(B, 1 + L, D)` -> image features `(B, D)`: `fc_norm` of the mean patch token, or the cls
        token."""
        if self.fc_norm is not None:
            return self.fc_norm(hidden_states[:, 1:].mean(dim=1))
        return hidden_states[:, 0]

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Image features `(B, D)` -> logits `(B, num_labels)`."""
        if self.batch_norm is not None:
            features = self.batch_norm(features)
        return self.classifier(features)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ImageClassifierOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(B, C, H, W)`):
            Normalized images.
        labels (`torch.LongTensor` of shape `(B,)`, *optional*):
            Targets for the loss chosen by `config.problem_type` (cross-entropy for class indices, BCE for
            multi-label, MSE for regression).
        """
        outputs = self.supmae(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        logits = self.classify(self.pool(outputs.last_hidden_state))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class SupMAEFeaturePyramid(nn.Module):
    """
    MAE's and BEiT's neck for a plain ViT: four stage maps, all at the patch stride P, become maps at strides 4, 8,
    16 and 32. Level j is rescaled by `2**k`, `k = round(log2(P / stride_j))`: k 2x transposed convolutions with a
    BatchNorm and a GELU between consecutive ones, the identity for k = 0, a `2**-k` max-pool for k < 0. For 16 px
    patches that is MAE's x4 (ConvT, BN, GELU, ConvT), x2 (ConvT), x1 and x0.5 (max-pool); for 8 px patches x2, x1,
    x0.5, x0.25; for 14 px patches the strides become 3.5, 7, 14 and 28.
    """

    target_strides = (4, 8, 16, 32)

    def __init__(self, config: SupMAEConfig):
        super().__init__()
        self.scales = [2.0 ** round(math.log2(config.patch_size / stride)) for stride in self.target_strides]
        self.levels = nn.ModuleList(self._rescaling(config.hidden_size, scale) for scale in self.scales)

    @staticmethod
    def _rescaling(width: int, scale: float) -> nn.Module:
        if scale == 1:
            return nn.Identity()
        if scale < 1:
            return nn.MaxPool2d(kernel_size=round(1 / scale), stride=round(1 / scale))
        layers = [nn.ConvTranspose2d(width, width, kernel_size=2, stride=2)]
        for _ in range(round(math.log2(scale)) - 1):
            layers += [nn.BatchNorm2d(width), nn.GELU(), nn.ConvTranspose2d(width, width, kernel_size=2, stride=2)]
        return nn.Sequential(*layers)

    def forward(self, feature_maps: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Four `(B, D, H/P, W/P)` maps -> `(B, D, H/P * scale_j, W/P * scale_j)`, j = 0..3."""
        return tuple(level(feature_map) for level, feature_map in zip(self.levels, feature_maps, strict=True))


class SupMAEBackbone(BackboneMixin, SupMAEPreTrainedModel):
    """
    The SupMAE encoder as a Transformers backbone (for `UperNetForSemanticSegmentation` and other dense heads). Stage
    `stem` is the embeddings and `stage{i}` the output of encoder block i (1-based), without the cls token and reshaped
    to `(B, D, H/P, W/P)`. `config.out_features` names the stages; by default the last block only (Transformers'
    backbone contract). For segmentation, `mae_dense_prediction_stages` gives MAE's and BEiT's four blocks: `stage4,
    stage6, stage8, stage12` of a 12-block encoder, the 0-based blocks 3, 5, 7 and 11 (Transformers' `BeitBackbone`
    and `BeitForSemanticSegmentation` take blocks one and two earlier for the same indices). With `config.add_fpn`,
    MAE's feature pyramid turns four stages (MAE's four unless others are named) into maps at strides 4, 8, 16 and 32.

    The whole image is encoded (no masking) at any size divisible by the patch size: the position table, trainable
    here as in MAE's fine-tuning, is resized bicubically to the input's patch grid. The final LayerNorm is not used.
    """

    # Parts of a pretraining or classification checkpoint the backbone does not use.
    _dropped_on_transfer = {
        **SupMAEPreTrainedModel._dropped_on_transfer,
        "supmae.layernorm.": "the encoder's final LayerNorm",  # the stages are taken before it
        "fc_norm.": "the classification head",
        "classifier.": "the classification head",
    }

    def __init__(self, config: SupMAEConfig):
        super().__init__(config)
        self.supmae = SupMAEModel(config, add_final_layernorm=False)
        self.supmae.embeddings.position_embeddings.requires_grad_(True)
        self.num_features = [config.hidden_size] * (config.num_hidden_layers + 1)
        self.fpn = SupMAEFeaturePyramid(config) if config.add_fpn else None
        self.post_init()

    # The config derives its default stages from the depth; read them through it (BackboneMixin reads the field).
    @property
    def out_features(self) -> list[str]:
        return self.config.out_features

    @out_features.setter
    def out_features(self, out_features: list[str]):
        self.config.out_features = out_features

    @property
    def out_indices(self) -> list[int]:
        return self.config.out_indices

    @out_indices.setter
    def out_indices(self, out_indices: list[int]):
        self.config.out_indices = out_indices

    @can_return_tuple
    @filter_output_hidden_states
    def forward(self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BackboneOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(B, C, H, W)`):
            Normalized images, H and W divisible by the patch size.

        Returns `feature_maps`: one `(B, D, H/P, W/P)` map per `out_features` stage, or with `add_fpn` the pyramid's
        four maps; `hidden_states` (embeddings, then each block's output, `(B, 1 + L, D)`) and `attentions` on
        request.
        """
        batch_size, _, height, width = pixel_values.shape
        grid = (height // self.config.patch_size, width // self.config.patch_size)
        outputs = self.supmae(pixel_values, interpolate_pos_encoding=True, **kwargs)
        feature_maps = tuple(
            outputs.hidden_states[index][:, 1:].transpose(1, 2).reshape(batch_size, -1, *grid)
            for index in self.out_indices
        )
        if self.fpn is not None:
            feature_maps = self.fpn(feature_maps)
        return BackboneOutput(
            feature_maps=feature_maps, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class SupMAESegmentationClassifier(nn.Conv2d):
    """mmsegmentation's `cls_seg`: `Dropout2d` (whole channels) on `(B, C, h, w)` features, then the 1x1 classifier
    convolution to `(B, num_labels, h, w)`. A `Conv2d` itself, so its weights keep the names and the initialization
    of the UperNet head's `classifier`."""

    def __init__(self, in_channels: int, num_labels: int, dropout: float):
        super().__init__(in_channels, num_labels, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(self.dropout(features))


class SupMAEUperNetForSemanticSegmentation(UperNetForSemanticSegmentation):
    """
    `UperNetForSemanticSegmentation` with its `SupMAEBackbone` built directly instead of through `AutoBackbone`: what a
    saved segmentation directory loads as with `trust_remote_code=True`, where the supmae package (whose import
    registers the backbone) is not installed. Same modules, same weight names, same outputs; with
    `config.classifier_dropout`, mmsegmentation's dropout before the classifiers of both heads (training only).
    """

    config: SupMAEUperNetConfig

    def __init__(self, config: SupMAEUperNetConfig):
        UperNetPreTrainedModel.__init__(self, config)
        self.backbone = SupMAEBackbone(config.backbone_config)
        self.decode_head = UperNetHead(config, in_channels=self.backbone.channels)
        self.auxiliary_head = (
            UperNetFCNHead(config, in_channels=self.backbone.channels) if config.use_auxiliary_head else None
        )
        dropout = getattr(config, "classifier_dropout", 0.0)  # a plain UperNetConfig has no such field
        for head in (self.decode_head, self.auxiliary_head):
            if head is not None and dropout:
                head.classifier = SupMAESegmentationClassifier(head.channels, config.num_labels, dropout)
        self.post_init()


__all__ = [
    "SupMAEBackbone",
    "SupMAEFeaturePyramid",
    "SupMAEForImageClassification",
    "SupMAEForPreTraining",
    "SupMAEModel",
    "SupMAEPreTrainedModel",
    "SupMAEUperNetForSemanticSegmentation",
]
