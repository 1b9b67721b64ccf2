"""Analytic FLOP counts of SupMAE and of Transformers' ViTMAE / ViT, per training step or per forward pass.

Conventions: a multiply-add is 2 FLOPs; only matmuls are counted (Linear layers, the patch-embedding convolution and
the attention score and value matmuls); elementwise ops, norms, softmax, pooling and the losses are ignored.

Shapes: B images, L = (H/P)(W/P) patches, K = int(L (1 - mask_ratio)) visible patches, D / Dd encoder / decoder
width, I / Id their MLP widths, Ne / Nd their depths, P patch size, C channels.

A transformer block on n tokens of width d with MLP width i costs, per image,

    block(n, d, i) = 2 n (3 d^2 + d^2 + 2 d i)   qkv, output projection and the two MLP Linears
                   + 4 n^2 d                     q k^T and attention @ v, summed over the heads

and backward = 2 x forward for every matmul whose input needs a gradient (one matmul for the input gradient, one for
the weight gradient). The patch-embedding convolution is the exception: pixels need no gradient, so its backward is
the weight gradient alone, 1 x its forward. `tests/test_flops.py` checks these formulas against
`torch.utils.flop_counter.FlopCounterMode`.
"""

from __future__ import annotations


def _grid(config, image_size=None) -> tuple[int, int]:
    size = image_size if image_size is not None else config.image_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return height // config.patch_size, width // config.patch_size


def block_flops(tokens: int, width: int, intermediate: int) -> int:
    """Forward FLOPs of one pre-norm transformer block on `tokens` tokens of one image."""
    return 2 * tokens * (4 * width * width + 2 * width * intermediate) + 4 * tokens * tokens * width


def patch_embedding_flops(config, image_size=None) -> int:
    """Forward FLOPs of the stride-P convolution over all L patches of one image: 2 L (P^2 C) D."""
    rows, cols = _grid(config, image_size)
    return 2 * rows * cols * config.patch_size**2 * config.num_channels * config.hidden_size


def _encoder_flops(config, tokens: int) -> int:
    return config.num_hidden_layers * block_flops(tokens, config.hidden_size, config.intermediate_size)


def _decoder_flops(config, visible: int, length: int) -> int:
    """decoder_embed on 1 + K tokens, Nd blocks and decoder_pred on 1 + L tokens (the cls row is dropped after)."""
    width = config.decoder_hidden_size
    embed = 2 * (1 + visible) * config.hidden_size * width
    blocks = config.decoder_num_hidden_layers * block_flops(1 + length, width, config.decoder_intermediate_size)
    pred = 2 * (1 + length) * width * config.patch_size**2 * config.num_channels
    return embed + blocks + pred


def supervised_head_flops(config) -> int:
    """SupMAE's head on one pooled feature: 2 D H + 2 H classes (Linear-BN-ReLU-Linear), or 2 D classes for H = 0."""
    hidden = config.supervised_head_hidden_size
    if hidden:
        return 2 * config.hidden_size * hidden + 2 * hidden * config.num_labels
    return 2 * config.hidden_size * config.num_labels


def _mae_flops(config, batch_size, backward, image_size, head: int) -> int:
    rows, cols = _grid(config, image_size)
    length = rows * cols
    visible = int(length * (1 - config.mask_ratio))
    weights = _encoder_flops(config, 1 + visible) + _decoder_flops(config, visible, length) + head
    patches = patch_embedding_flops(config, image_size)
    if backward:
        return batch_size * (3 * weights + 2 * patches)
    return batch_size * (weights + patches)


def pretraining_flops(config, batch_size: int = 1, backward: bool = True, image_size=None, supervised: bool = True):
    """
    FLOPs of `SupMAEForPreTraining` on a batch, with labels (the supervised head computed):

        forward = B [ 2 L P^2 C D + Ne block(1 + K, D, I) + 2 (1 + K) D Dd + Nd block(1 + L, Dd, Id)
                      + 2 (1 + L) Dd P^2 C + 2 D H + 2 H classes ]
        forward + backward = 3 forward - 2 B L P^2 C D      (the patch convolution has no input gradient)

    `supervised=False` leaves out the head (training without labels, i.e. plain MAE). `image_size` defaults to the
    config's; another size changes L (run with `interpolate_pos_encoding=True`).
    """
    head = supervised_head_flops(config) if supervised else 0
    return _mae_flops(config, batch_size, backward, image_size, head)


def vitmae_pretraining_flops(vitmae_config, batch_size: int = 1, backward: bool = True, image_size=None) -> int:
    """
    FLOPs of Transformers' `ViTMAEForPreTraining`: the same as `pretraining_flops` without the supervised head,

        forward = B [ 2 L P^2 C D + Ne block(1 + K, D, I) + 2 (1 + K) D Dd + Nd block(1 + L, Dd, Id)
                      + 2 (1 + L) Dd P^2 C ],   forward + backward = 3 forward - 2 B L P^2 C D.

    Its separate q, k, v projections cost the same as SupMAE's fused one.
    """
    return _mae_flops(vitmae_config, batch_size, backward, image_size, head=0)


def classification_flops(config, batch_size: int = 1, image_size=None, backward: bool = False) -> int:
    """
    FLOPs of `SupMAEForImageClassification` or Transformers' `ViTForImageClassification`: the encoder on all 1 + L
    tokens, then one Linear on the pooled feature (mean-pool + fc_norm, or the cls token; pooling is free):

        forward = B [ 2 L P^2 C D + Ne block(1 + L, D, I) + 2 D classes ]
        forward + backward = 3 forward - 2 B L P^2 C D   (fine-tuning, `backward=True`)
    """
    rows, cols = _grid(config, image_size)
    length = rows * cols
    weights = _encoder_flops(config, 1 + length) + 2 * config.hidden_size * config.num_labels
    patches = patch_embedding_flops(config, image_size)
    if backward:
        return batch_size * (3 * weights + 2 * patches)
    return batch_size * (weights + patches)
