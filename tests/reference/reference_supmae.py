"""Independent functional reference implementation of SupMAE (tests only).

Written from the semantics in ``tests/reference/SPEC.md`` alone, as plain ``torch`` +
``torch.nn.functional`` code operating directly on a state dict in the
OFFICIAL checkpoint layout (the key names of the official PyTorch SupMAE/MAE
code).  No ``nn.Module``, no ``transformers``, no ``timm``, and nothing from
the ``supmae`` package, so that the real model can be compared against it
number for number.

Notation used in the docstrings:

* ``B`` batch, ``C`` channels, ``H x W`` image size, ``P`` patch size,
  ``h = H / P``, ``w = W / P`` grid size, ``L = h * w`` number of patches.
* ``D`` encoder width, ``Dd`` decoder width, ``K`` = ``len_keep`` =
  ``int(L * (1 - mask_ratio))``.
* ``Hh`` supervised-head hidden size (3072 in the release, 0 = single Linear).

State-dict layouts
------------------
Pretraining (``random_official_state_dict``)::

    cls_token (1,1,D)            pos_embed (1,L+1,D)
    mask_token (1,1,Dd)          decoder_pos_embed (1,L+1,Dd)
    patch_embed.proj.weight (D,C,P,P)   patch_embed.proj.bias (D,)
    blocks.N.norm1.{weight,bias} (D,)
    blocks.N.attn.qkv.weight (3D,D)  blocks.N.attn.qkv.bias (3D,)   rows q, k, v
    blocks.N.attn.proj.{weight (D,D), bias (D,)}
    blocks.N.norm2.{weight,bias} (D,)
    blocks.N.mlp.fc1.{weight (M,D), bias (M,)}   M = int(D * mlp_ratio)
    blocks.N.mlp.fc2.{weight (D,M), bias (D,)}
    norm.{weight,bias} (D,)
    decoder_embed.{weight (Dd,D), bias (Dd,)}
    decoder_blocks.N.*  (same sub-names as blocks.N, width Dd)
    decoder_norm.{weight,bias} (Dd,)
    decoder_pred.{weight (P*P*C,Dd), bias (P*P*C,)}
    supervised head, Hh > 0:
        cls_head.0.{weight (Hh,D), bias (Hh,)}             Linear(D, Hh)
        cls_head.1.{weight, bias, running_mean, running_var} (Hh,),
        cls_head.1.num_batches_tracked  () int64          BatchNorm1d(Hh)
        (index 2 is the parameter-free ReLU)
        cls_head.3.{weight (num_labels,Hh), bias (num_labels,)}  Linear
    supervised head, Hh == 0 (DECISION of this reference):
        cls_head.0.{weight (num_labels,D), bias (num_labels,)}   single Linear

    The head may also be named ``projection_head.*`` (the released file may
    use that name); ``supervised_logits`` accepts either.

Fine-tuned (``random_official_finetuned_state_dict``)::

    cls_token, pos_embed (trained), patch_embed.*, blocks.*,
    pooling="mean": fc_norm.{weight,bias} (D,)   (no ``norm``)
    pooling="cls":  norm.{weight,bias} (D,)      (no ``fc_norm``, MAE style)
    head.{weight (num_labels,D), bias (num_labels,)}
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


__all__ = [
    "sincos_pos_embed",
    "random_official_state_dict",
    "random_official_finetuned_state_dict",
    "patchify",
    "unpatchify",
    "random_masking",
    "encoder_forward",
    "decoder_forward",
    "reconstruction_loss",
    "supervised_logits",
    "pretraining_forward",
    "finetuned_forward",
    "transformer_block",
    "attention",
]

LN_EPS = 1e-6
BN_EPS = 1e-5
IGNORE_INDEX = -100


# --------------------------------------------------------------------------- #
# Position embeddings
# --------------------------------------------------------------------------- #
def sincos_pos_embed(embed_dim: int, grid_h: int, grid_w: int) -> Tensor:
    """Fixed 2-D sin-cos table, float32, shape ``(1 + grid_h*grid_w, embed_dim)``.

    Row 0 (cls position) is all zeros.  Row ``1 + r*grid_w + c`` (patch at row
    ``r``, column ``c``, row-major) is
    ``[sin(c*omega), cos(c*omega), sin(r*omega), cos(r*omega)]`` with
    ``omega_i = 1 / 10000**(i / (D/4))`` for ``i < D/4``: the first half
    encodes the column.  Computed in float64, then cast to float32.
    """
    if embed_dim % 4 != 0:
        raise ValueError(f"embed_dim must be divisible by 4, got {embed_dim}")
    quarter = embed_dim // 4
    i = torch.arange(quarter, dtype=torch.float64)
    omega = 1.0 / (10000.0 ** (i / quarter))  # (D/4,)
    rows = torch.arange(grid_h, dtype=torch.float64)
    cols = torch.arange(grid_w, dtype=torch.float64)
    r = rows[:, None].expand(grid_h, grid_w).reshape(-1)  # row-major patch order
    c = cols[None, :].expand(grid_h, grid_w).reshape(-1)
    c_om = c[:, None] * omega[None, :]
    r_om = r[:, None] * omega[None, :]
    patches = torch.cat([torch.sin(c_om), torch.cos(c_om), torch.sin(r_om), torch.cos(r_om)], dim=1)
    table = torch.cat([torch.zeros(1, embed_dim, dtype=torch.float64), patches], dim=0)
    return table.to(torch.float32)


# --------------------------------------------------------------------------- #
# Random state dicts in the official layout
# --------------------------------------------------------------------------- #
def _pair(x: int | Sequence[int]) -> tuple:
    if isinstance(x, (tuple, list)):
        return int(x[0]), int(x[1])
    return int(x), int(x)


class _Rand:
    """Small helper around a seeded ``torch.Generator`` (CPU, float32)."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(int(seed))

    def normal(self, *shape, std=1.0, mean=0.0) -> Tensor:
        return torch.randn(*shape, generator=self.g, dtype=torch.float32) * std + mean

    def uniform(self, *shape, low=0.0, high=1.0) -> Tensor:
        return torch.rand(*shape, generator=self.g, dtype=torch.float32) * (high - low) + low


def _rand_linear(sd, rnd: _Rand, name: str, out_f: int, in_f: int) -> None:
    # std 1/sqrt(fan_in) keeps activations O(1); bias small but non-zero
    sd[f"{name}.weight"] = rnd.normal(out_f, in_f, std=1.0 / math.sqrt(in_f))
    sd[f"{name}.bias"] = rnd.normal(out_f, std=0.05)


def _rand_layernorm(sd, rnd: _Rand, name: str, dim: int) -> None:
    sd[f"{name}.weight"] = rnd.normal(dim, std=0.1, mean=1.0)
    sd[f"{name}.bias"] = rnd.normal(dim, std=0.1)


def _rand_block(sd, rnd: _Rand, name: str, dim: int, mlp_hidden: int) -> None:
    _rand_layernorm(sd, rnd, f"{name}.norm1", dim)
    _rand_linear(sd, rnd, f"{name}.attn.qkv", 3 * dim, dim)
    _rand_linear(sd, rnd, f"{name}.attn.proj", dim, dim)
    _rand_layernorm(sd, rnd, f"{name}.norm2", dim)
    _rand_linear(sd, rnd, f"{name}.mlp.fc1", mlp_hidden, dim)
    _rand_linear(sd, rnd, f"{name}.mlp.fc2", dim, mlp_hidden)


def _rand_encoder_trunk(sd, rnd, *, hidden_size, depth, num_heads, mlp_ratio, patch_size, num_channels):
    if hidden_size % num_heads != 0:
        raise ValueError("hidden_size must be divisible by num_heads")
    D, P, C = hidden_size, patch_size, num_channels
    sd["cls_token"] = rnd.normal(1, 1, D, std=0.5)
    sd["patch_embed.proj.weight"] = rnd.normal(D, C, P, P, std=1.0 / math.sqrt(C * P * P))
    sd["patch_embed.proj.bias"] = rnd.normal(D, std=0.05)
    for n in range(depth):
        _rand_block(sd, rnd, f"blocks.{n}", D, int(D * mlp_ratio))


def random_official_state_dict(
    *,
    hidden_size: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float = 4.0,
    decoder_hidden_size: int,
    decoder_depth: int,
    decoder_num_heads: int,
    patch_size: int,
    num_channels: int,
    image_size: int | Sequence[int],
    head_hidden_size: int,
    num_labels: int,
    seed: int,
    decoder_mlp_ratio: float | None = None,
    head_name: str = "cls_head",
) -> dict:
    """Random float32 weights in the official PRETRAINING layout (see module doc).

    ``pos_embed`` (1, L+1, D) and ``decoder_pos_embed`` (1, L+1, Dd) are the
    fixed sin-cos tables (as in the official code); every other tensor is
    random from ``torch.Generator().manual_seed(seed)``: Linear/Conv weights
    ~ N(0, 1/fan_in), biases ~ N(0, 0.05^2), LayerNorm/BatchNorm weight
    ~ 1 + N(0, 0.1^2), their biases ~ N(0, 0.1^2), cls/mask tokens
    ~ N(0, 0.5^2), BatchNorm running_mean ~ N(0, 0.1^2), running_var
    ~ U(0.5, 1.5), num_batches_tracked a random int64 scalar.
    ``head_hidden_size == 0`` gives a single Linear at ``cls_head.0``.
    ``decoder_mlp_ratio`` defaults to ``mlp_ratio``; ``head_name`` may be set
    to ``"projection_head"`` to mimic the released file's naming.
    """
    ih, iw = _pair(image_size)
    P = patch_size
    if ih % P or iw % P:
        raise ValueError("image_size must be divisible by patch_size")
    gh, gw = ih // P, iw // P
    if decoder_hidden_size % decoder_num_heads != 0:
        raise ValueError("decoder_hidden_size must be divisible by decoder_num_heads")
    dec_ratio = mlp_ratio if decoder_mlp_ratio is None else decoder_mlp_ratio
    D, Dd = hidden_size, decoder_hidden_size

    rnd = _Rand(seed)
    sd: dict = {}
    _rand_encoder_trunk(
        sd,
        rnd,
        hidden_size=D,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        patch_size=P,
        num_channels=num_channels,
    )
    sd["pos_embed"] = sincos_pos_embed(D, gh, gw).unsqueeze(0)
    _rand_layernorm(sd, rnd, "norm", D)

    sd["mask_token"] = rnd.normal(1, 1, Dd, std=0.5)
    sd["decoder_pos_embed"] = sincos_pos_embed(Dd, gh, gw).unsqueeze(0)
    _rand_linear(sd, rnd, "decoder_embed", Dd, D)
    for n in range(decoder_depth):
        _rand_block(sd, rnd, f"decoder_blocks.{n}", Dd, int(Dd * dec_ratio))
    _rand_layernorm(sd, rnd, "decoder_norm", Dd)
    _rand_linear(sd, rnd, "decoder_pred", P * P * num_channels, Dd)

    if head_hidden_size > 0:
        Hh = head_hidden_size
        _rand_linear(sd, rnd, f"{head_name}.0", Hh, D)
        sd[f"{head_name}.1.weight"] = rnd.normal(Hh, std=0.1, mean=1.0)
        sd[f"{head_name}.1.bias"] = rnd.normal(Hh, std=0.1)
        sd[f"{head_name}.1.running_mean"] = rnd.normal(Hh, std=0.1)
        sd[f"{head_name}.1.running_var"] = rnd.uniform(Hh, low=0.5, high=1.5)
        sd[f"{head_name}.1.num_batches_tracked"] = torch.tensor(
            int(torch.randint(1, 100000, (1,), generator=rnd.g)), dtype=torch.long
        )
        _rand_linear(sd, rnd, f"{head_name}.3", num_labels, Hh)
    else:
        _rand_linear(sd, rnd, f"{head_name}.0", num_labels, D)
    return sd


def random_official_finetuned_state_dict(
    *,
    hidden_size: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float = 4.0,
    patch_size: int,
    num_channels: int,
    image_size: int | Sequence[int],
    num_labels: int,
    seed: int,
    pooling: str = "mean",
) -> dict:
    """Random float32 weights in the official FINE-TUNED layout (see module doc).

    Keys: ``cls_token``, ``pos_embed`` (1, L+1, D) -- RANDOM here (trained
    table, including a non-zero cls row) --, ``patch_embed.*``, ``blocks.*``,
    ``fc_norm.*`` (pooling="mean", no ``norm``) or ``norm.*`` (pooling="cls",
    no ``fc_norm``), ``head.{weight (num_labels, D), bias}``.
    """
    ih, iw = _pair(image_size)
    P = patch_size
    if ih % P or iw % P:
        raise ValueError("image_size must be divisible by patch_size")
    L = (ih // P) * (iw // P)
    D = hidden_size
    rnd = _Rand(seed)
    sd: dict = {}
    _rand_encoder_trunk(
        sd,
        rnd,
        hidden_size=D,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        patch_size=P,
        num_channels=num_channels,
    )
    sd["pos_embed"] = rnd.normal(1, L + 1, D, std=0.5)
    if pooling == "mean":
        _rand_layernorm(sd, rnd, "fc_norm", D)
    elif pooling == "cls":
        _rand_layernorm(sd, rnd, "norm", D)
    else:
        raise ValueError(f"unknown pooling {pooling!r}")
    _rand_linear(sd, rnd, "head", num_labels, D)
    return sd


# --------------------------------------------------------------------------- #
# Patch helpers and masking
# --------------------------------------------------------------------------- #
def patchify(imgs: Tensor, p: int) -> Tensor:
    """``(B, C, H, W) -> (B, L, P*P*C)``, patches row-major; inside a patch the
    layout is (p_row, p_col, channel), channel fastest: element
    ``imgs[n, ch, i*P + a, j*P + b]`` goes to ``out[n, i*w + j, (a*P + b)*C + ch]``.
    """
    B, C, H, W = imgs.shape
    if H % p or W % p:
        raise ValueError("image size must be divisible by the patch size")
    h, w = H // p, W // p
    x = imgs.reshape(B, C, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(B, h * w, p * p * C)


def unpatchify(x: Tensor, p: int, h: int, w: int, c: int) -> Tensor:
    """Inverse of ``patchify``: ``(B, h*w, P*P*c) -> (B, c, h*P, w*P)``."""
    B = x.shape[0]
    if x.shape[1] != h * w or x.shape[2] != p * p * c:
        raise ValueError(f"bad shape {tuple(x.shape)} for p={p}, h={h}, w={w}, c={c}")
    x = x.reshape(B, h, w, p, p, c)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(B, c, h * p, w * p)


def random_masking(x: Tensor, mask_ratio: float, noise: Tensor | None):
    """Per-sample random masking driven by ``noise``.

    Args:
        x: ``(B, L, D)`` patch tokens (position embeddings already added).
        mask_ratio: fraction removed; ``K = int(L * (1 - mask_ratio))`` kept.
        noise: ``(B, L)``; small noise is kept.  ``None`` draws ``torch.rand``.

    Returns:
        ``x_kept (B, K, D)`` (in order of increasing noise), ``mask (B, L)``
        (x.dtype, 1 = removed, 0 = kept, original patch order),
        ``ids_restore (B, L)`` int64 (``argsort(argsort(noise))``).
    Uses ``torch.argsort`` (default, not forced-stable), as the official code.
    """
    B, L, D = x.shape
    len_keep = int(L * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(B, L, device=x.device)
    if tuple(noise.shape) != (B, L):
        raise ValueError(f"noise must have shape {(B, L)}, got {tuple(noise.shape)}")
    noise = noise.to(x.device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    x_kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(B, len_keep, D))
    mask = torch.ones(B, L, dtype=x.dtype, device=x.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return x_kept, mask, ids_restore


# --------------------------------------------------------------------------- #
# Transformer pieces
# --------------------------------------------------------------------------- #
def attention(x: Tensor, qkv_w: Tensor, qkv_b: Tensor, proj_w: Tensor, proj_b: Tensor, num_heads: int) -> Tensor:
    """Multi-head self-attention, ``(B, N, D) -> (B, N, D)``.

    ``qkv_w`` is one ``(3D, D)`` matrix, rows q then k then v; heads are
    contiguous ``head_dim`` slices of each.  Written by hand:
    ``softmax(q k^T * head_dim**-0.5) v`` then the output projection.
    """
    B, N, D = x.shape
    if D % num_heads != 0:
        raise ValueError(f"width {D} not divisible by num_heads {num_heads}")
    hd = D // num_heads
    qkv = F.linear(x, qkv_w, qkv_b)  # (B, N, 3D)
    q, k, v = qkv[..., :D], qkv[..., D : 2 * D], qkv[..., 2 * D :]

    def heads(t):
        return t.reshape(B, N, num_heads, hd).transpose(1, 2)  # (B, nh, N, hd)

    q, k, v = heads(q), heads(k), heads(v)
    scores = torch.matmul(q, k.transpose(-2, -1)) * (hd**-0.5)
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, v)  # (B, nh, N, hd)
    out = out.transpose(1, 2).reshape(B, N, D)
    return F.linear(out, proj_w, proj_b)


def transformer_block(sd: dict, prefix: str, x: Tensor, num_heads: int, eps: float = LN_EPS) -> Tensor:
    """Pre-norm ViT block reading ``{prefix}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``.

    ``x = x + proj(attn(norm1(x)))``; ``x = x + fc2(gelu_exact(fc1(norm2(x))))``.
    Shape ``(B, N, D) -> (B, N, D)``.
    """
    D = x.shape[-1]
    y = F.layer_norm(x, (D,), sd[f"{prefix}.norm1.weight"], sd[f"{prefix}.norm1.bias"], eps)
    x = x + attention(
        y,
        sd[f"{prefix}.attn.qkv.weight"],
        sd[f"{prefix}.attn.qkv.bias"],
        sd[f"{prefix}.attn.proj.weight"],
        sd[f"{prefix}.attn.proj.bias"],
        num_heads,
    )
    y = F.layer_norm(x, (D,), sd[f"{prefix}.norm2.weight"], sd[f"{prefix}.norm2.bias"], eps)
    y = F.linear(y, sd[f"{prefix}.mlp.fc1.weight"], sd[f"{prefix}.mlp.fc1.bias"])
    y = F.gelu(y, approximate="none")
    y = F.linear(y, sd[f"{prefix}.mlp.fc2.weight"], sd[f"{prefix}.mlp.fc2.bias"])
    return x + y


def _num_blocks(sd: dict, name: str) -> int:
    idx = set()
    head = name + "."
    for k in sd:
        if k.startswith(head):
            rest = k[len(head) :].split(".", 1)[0]
            if rest.isdigit():
                idx.add(int(rest))
    if idx and idx != set(range(len(idx))):
        raise ValueError(f"non-contiguous {name} indices: {sorted(idx)}")
    return len(idx)


def _patch_embed(sd: dict, imgs: Tensor, prefix: str) -> Tensor:
    """``(B, C, H, W) -> (B, L, D)`` via Conv2d(kernel=stride=P), row-major tokens."""
    w = sd[f"{prefix}patch_embed.proj.weight"]
    P = w.shape[-1]
    x = F.conv2d(imgs, w, sd[f"{prefix}patch_embed.proj.bias"], stride=P)
    return x.flatten(2).transpose(1, 2)


def _layer_norm(sd, name, x, eps):
    return F.layer_norm(x, (x.shape[-1],), sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


# --------------------------------------------------------------------------- #
# Encoder / decoder / losses
# --------------------------------------------------------------------------- #
def encoder_forward(
    sd: dict,
    imgs: Tensor,
    *,
    num_heads: int,
    mask_ratio: float,
    noise: Tensor | None,
    eps: float = LN_EPS,
    prefix: str = "",
):
    """MAE/SupMAE encoder on the visible patches.

    Args:
        sd: official-layout state dict; keys are read as ``prefix + name``.
        imgs: ``(B, C, H, W)``; the grid must match ``pos_embed``.
        noise: ``(B, L)`` masking noise (``None`` -> ``torch.rand``).

    Returns:
        ``latent (B, 1+K, D)`` after the final ``norm``, ``mask (B, L)``,
        ``ids_restore (B, L)``.

    Steps: patch embed -> + pos_embed[:, 1:] -> random_masking ->
    prepend cls_token + pos_embed[:, :1] -> blocks -> norm.
    """
    x = _patch_embed(sd, imgs, prefix)
    pos = sd[f"{prefix}pos_embed"]
    if pos.shape[1] != x.shape[1] + 1:
        raise ValueError(f"pos_embed has {pos.shape[1]} rows, need {x.shape[1] + 1}")
    x = x + pos[:, 1:, :]
    x, mask, ids_restore = random_masking(x, mask_ratio, noise)
    cls = sd[f"{prefix}cls_token"] + pos[:, :1, :]
    x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)
    for n in range(_num_blocks(sd, f"{prefix}blocks")):
        x = transformer_block(sd, f"{prefix}blocks.{n}", x, num_heads, eps)
    x = _layer_norm(sd, f"{prefix}norm", x, eps)
    return x, mask, ids_restore


def decoder_forward(sd: dict, latent: Tensor, ids_restore: Tensor, *, num_heads: int, eps: float = LN_EPS) -> Tensor:
    """MAE pixel decoder.

    ``latent (B, 1+K, D)``, ``ids_restore (B, L)`` -> ``pred (B, L, P*P*C)``.
    decoder_embed -> append ``L-K`` mask tokens -> un-shuffle the patch part
    with ``ids_restore`` (cls stays first) -> + decoder_pos_embed ->
    decoder_blocks (``num_heads`` = decoder heads) -> decoder_norm ->
    decoder_pred -> drop the cls position.
    """
    x = F.linear(latent, sd["decoder_embed.weight"], sd["decoder_embed.bias"])
    B, n1, Dd = x.shape
    L = ids_restore.shape[1]
    mask_tokens = sd["mask_token"].expand(B, L + 1 - n1, Dd)
    x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # (B, L, Dd)
    x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(B, L, Dd))
    x = torch.cat([x[:, :1, :], x_], dim=1)
    x = x + sd["decoder_pos_embed"]
    for n in range(_num_blocks(sd, "decoder_blocks")):
        x = transformer_block(sd, f"decoder_blocks.{n}", x, num_heads, eps)
    x = _layer_norm(sd, "decoder_norm", x, eps)
    x = F.linear(x, sd["decoder_pred.weight"], sd["decoder_pred.bias"])
    return x[:, 1:, :]


def reconstruction_loss(
    imgs: Tensor, pred: Tensor, mask: Tensor, *, patch_size: int, norm_pix_loss: bool = True
) -> Tensor:
    """Masked MSE, scalar.

    ``imgs (B, C, H, W)``, ``pred (B, L, P*P*C)``, ``mask (B, L)``.
    target = patchify(imgs); with norm_pix_loss each patch is
    ``(t - mean) / sqrt(var_unbiased + 1e-6)``; per-patch mean of squared
    error; then ``(loss * mask).sum() / mask.sum()`` (NaN if nothing masked).
    """
    target = patchify(imgs, patch_size)
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True, unbiased=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


def _head_name(sd: dict) -> str | None:
    for name in ("cls_head", "projection_head"):
        if f"{name}.0.weight" in sd:
            return name
    return None


def supervised_logits(
    sd: dict, latent: Tensor, *, pooling: str = "mean", training: bool = False, bn_eps: float = BN_EPS
) -> Tensor:
    """SupMAE supervised head on the encoder output.

    ``latent (B, 1+K, D)`` -> ``logits (B, num_labels)``.
    Feature: ``latent[:, 1:].mean(1)`` (pooling="mean") or ``latent[:, 0]``
    (pooling="cls").  Head (``cls_head`` or ``projection_head``):
    Linear(.0) -> BatchNorm1d(.1) -> ReLU -> Linear(.3); if there is no
    ``.1`` BatchNorm the head is the single Linear ``.0``.
    ``training=True``: BatchNorm normalizes with batch mean and biased batch
    variance (needs B > 1) and does NOT update running stats;
    ``training=False``: running_mean / running_var.
    """
    name = _head_name(sd)
    if name is None:
        raise KeyError("no supervised head (cls_head.* / projection_head.*) in state dict")
    if pooling == "mean":
        feat = latent[:, 1:, :].mean(dim=1)
    elif pooling == "cls":
        feat = latent[:, 0, :]
    else:
        raise ValueError(f"unknown pooling {pooling!r}")
    y = F.linear(feat, sd[f"{name}.0.weight"], sd[f"{name}.0.bias"])
    if f"{name}.1.weight" not in sd:
        return y
    if training:
        if y.shape[0] < 2:
            raise ValueError("BatchNorm in training mode needs more than one sample")
        mu = y.mean(dim=0)
        var = y.var(dim=0, unbiased=False)
    else:
        mu = sd[f"{name}.1.running_mean"].to(y.dtype)
        var = sd[f"{name}.1.running_var"].to(y.dtype)
    y = (y - mu) / torch.sqrt(var + bn_eps) * sd[f"{name}.1.weight"] + sd[f"{name}.1.bias"]
    y = torch.relu(y)
    return F.linear(y, sd[f"{name}.3.weight"], sd[f"{name}.3.bias"])


def pretraining_forward(
    sd: dict,
    imgs: Tensor,
    labels: Tensor | None = None,
    *,
    num_heads: int,
    decoder_num_heads: int,
    patch_size: int,
    mask_ratio: float,
    noise: Tensor | None,
    norm_pix_loss: bool = True,
    pooling: str = "mean",
    training: bool = False,
    loss_weight: float = 0.01,
    temperature: float = 10.0,
) -> dict:
    """Full SupMAE pretraining forward.

    Returns a dict with ``mask (B, L)``, ``ids_restore (B, L)``,
    ``latent (B, 1+K, D)``, ``pred (B, L, P*P*C)``, ``logits (B, num_labels)``
    (None if the state dict has no supervised head, e.g. a plain MAE
    checkpoint), ``rec_loss`` (scalar), ``cls_loss`` (scalar or None) and
    ``loss = rec_loss + loss_weight * cross_entropy(logits / temperature,
    labels, ignore_index=-100)`` (mean over non-ignored labels); without
    labels ``cls_loss`` is None and ``loss = rec_loss``.
    """
    if sd["patch_embed.proj.weight"].shape[-1] != patch_size:
        raise ValueError("patch_size does not match patch_embed.proj.weight")
    latent, mask, ids_restore = encoder_forward(sd, imgs, num_heads=num_heads, mask_ratio=mask_ratio, noise=noise)
    pred = decoder_forward(sd, latent, ids_restore, num_heads=decoder_num_heads)
    rec_loss = reconstruction_loss(imgs, pred, mask, patch_size=patch_size, norm_pix_loss=norm_pix_loss)
    logits = None
    if _head_name(sd) is not None:
        logits = supervised_logits(sd, latent, pooling=pooling, training=training)
    cls_loss = None
    loss = rec_loss
    if labels is not None:
        if logits is None:
            raise KeyError("labels given but the state dict has no supervised head")
        cls_loss = F.cross_entropy(logits / temperature, labels, ignore_index=IGNORE_INDEX)
        loss = rec_loss + loss_weight * cls_loss
    return dict(
        mask=mask,
        ids_restore=ids_restore,
        latent=latent,
        pred=pred,
        logits=logits,
        rec_loss=rec_loss,
        cls_loss=cls_loss,
        loss=loss,
    )


def finetuned_forward(sd: dict, imgs: Tensor, *, num_heads: int, pooling: str = "mean", eps: float = LN_EPS) -> Tensor:
    """Fine-tuned classifier, ``(B, C, H, W) -> logits (B, num_labels)``.

    Full image, no masking: patch embed, prepend cls_token, + pos_embed
    (trained, all L+1 rows), blocks.  pooling="mean": mean over the patch
    tokens (cls excluded) -> ``fc_norm`` -> ``head`` (no final ``norm``).
    pooling="cls": final ``norm`` -> cls token (index 0) -> ``head``.
    """
    x = _patch_embed(sd, imgs, "")
    B = x.shape[0]
    pos = sd["pos_embed"]
    if pos.shape[1] != x.shape[1] + 1:
        raise ValueError(f"pos_embed has {pos.shape[1]} rows, need {x.shape[1] + 1}")
    x = torch.cat([sd["cls_token"].expand(B, -1, -1), x], dim=1) + pos
    for n in range(_num_blocks(sd, "blocks")):
        x = transformer_block(sd, f"blocks.{n}", x, num_heads, eps)
    if pooling == "mean":
        feat = _layer_norm(sd, "fc_norm", x[:, 1:, :].mean(dim=1), eps)
    elif pooling == "cls":
        feat = _layer_norm(sd, "norm", x, eps)[:, 0, :]
    else:
        raise ValueError(f"unknown pooling {pooling!r}")
    return F.linear(feat, sd["head.weight"], sd["head.bias"])
