"""Self-checks of the reference (reference_supmae.py, beside this file) against facts that do not depend on it: hand
computations, PyTorch's own operators, and timm's ViT (an outside implementation of the same blocks, with random
weights copied in)."""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from reference import reference_supmae as ref


def test_sincos_hand_picked_values():
    D, gh, gw = 16, 3, 5
    table = ref.sincos_pos_embed(D, gh, gw)
    assert table.shape == (1 + gh * gw, D)
    assert table.dtype == torch.float32
    assert torch.all(table[0] == 0)
    q = D // 4
    for r, c in [(0, 0), (0, 4), (2, 1), (1, 3), (2, 4)]:
        row = table[1 + r * gw + c]
        for i in range(q):
            omega = 1.0 / 10000 ** (i / q)
            expect = [math.sin(c * omega), math.cos(c * omega), math.sin(r * omega), math.cos(r * omega)]
            for part, val in enumerate(expect):
                assert abs(row[part * q + i].item() - val) < 1e-6, (r, c, i, part)
    # float64 then cast: equals the float32 rounding of the exact value
    assert table[1 + 2 * gw + 4, 1].item() == torch.tensor(math.sin(4 * 10000 ** (-1 / 4)), dtype=torch.float32).item()


@pytest.mark.parametrize("L,ratio", [(16, 0.75), (7, 0.5), (196, 0.75), (10, 0.0)])
def test_random_masking(L, ratio):
    g = torch.Generator().manual_seed(0)
    B, D = 3, 5
    x = torch.randn(B, L, D, generator=g)
    noise = torch.rand(B, L, generator=g)
    kept, mask, ids_restore = ref.random_masking(x, ratio, noise)
    K = int(L * (1 - ratio))
    assert kept.shape == (B, K, D)
    assert mask.shape == (B, L) and ids_restore.shape == (B, L)
    assert torch.all(mask.sum(1) == L - K)
    for b in range(B):
        order = sorted(range(L), key=lambda j: noise[b, j].item())
        keep_idx = order[:K]
        # kept tokens: the K smallest-noise tokens, in increasing-noise order
        assert torch.equal(kept[b], x[b, keep_idx])
        for j in range(L):
            assert mask[b, j].item() == (0.0 if j in keep_idx else 1.0)
        # ids_restore inverts the shuffle
        shuffled = x[b, order]
        assert torch.equal(shuffled[ids_restore[b]], x[b])
    # un-shuffling kept tokens padded with zeros puts them back where mask == 0
    padded = torch.cat([kept, torch.zeros(B, L - K, D)], dim=1)
    restored = torch.gather(padded, 1, ids_restore.unsqueeze(-1).expand(B, L, D))
    keep = (mask == 0).unsqueeze(-1)
    assert torch.equal(torch.where(keep, restored, torch.zeros_like(x)), torch.where(keep, x, torch.zeros_like(x)))
    # same noise -> same mask
    _, mask2, _ = ref.random_masking(x, ratio, noise.clone())
    assert torch.equal(mask, mask2)


def test_patchify_roundtrip_and_layout():
    g = torch.Generator().manual_seed(1)
    B, C, p, h, w = 2, 3, 4, 2, 3
    imgs = torch.randn(B, C, h * p, w * p, generator=g)
    x = ref.patchify(imgs, p)
    assert x.shape == (B, h * w, p * p * C)
    assert torch.equal(ref.unpatchify(x, p, h, w, C), imgs)
    n, ch, i, j, a, b = 1, 2, 1, 2, 3, 1
    assert x[n, i * w + j, (a * p + b) * C + ch].item() == imgs[n, ch, i * p + a, j * p + b].item()
    for n, ch, i, j, a, b in [(0, 0, 0, 0, 0, 0), (0, 1, 1, 0, 2, 3), (1, 0, 0, 1, 1, 2)]:
        assert x[n, i * w + j, (a * p + b) * C + ch].item() == imgs[n, ch, i * p + a, j * p + b].item()


@pytest.mark.parametrize("norm_pix", [True, False])
def test_reconstruction_loss_loop(norm_pix):
    g = torch.Generator().manual_seed(2)
    B, C, p, h, w = 2, 2, 2, 2, 2
    imgs = torch.randn(B, C, h * p, w * p, generator=g, dtype=torch.float64)
    L = h * w
    pred = torch.randn(B, L, p * p * C, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    got = ref.reconstruction_loss(imgs, pred, mask, patch_size=p, norm_pix_loss=norm_pix)

    total, count = 0.0, 0
    for n in range(B):
        for i in range(h):
            for j in range(w):
                if mask[n, i * w + j] == 0:
                    continue
                vals = []
                for a in range(p):
                    for b in range(p):
                        for ch in range(C):
                            vals.append(imgs[n, ch, i * p + a, j * p + b].item())
                if norm_pix:
                    m = sum(vals) / len(vals)
                    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1)
                    vals = [(v - m) / math.sqrt(var + 1e-6) for v in vals]
                pr = pred[n, i * w + j].tolist()
                total += sum((pv - tv) ** 2 for pv, tv in zip(pr, vals, strict=True)) / len(vals)
                count += 1
    assert abs(got.item() - total / count) < 1e-12


def test_attention_matches_sdpa():
    g = torch.Generator().manual_seed(3)
    B, N, D, nh = 2, 7, 12, 3
    x = torch.randn(B, N, D, generator=g)
    qkv_w = torch.randn(3 * D, D, generator=g) / math.sqrt(D)
    qkv_b = torch.randn(3 * D, generator=g) * 0.1
    proj_w = torch.randn(D, D, generator=g) / math.sqrt(D)
    proj_b = torch.randn(D, generator=g) * 0.1
    got = ref.attention(x, qkv_w, qkv_b, proj_w, proj_b, nh)

    hd = D // nh
    q = F.linear(x, qkv_w[:D], qkv_b[:D]).view(B, N, nh, hd).transpose(1, 2)
    k = F.linear(x, qkv_w[D : 2 * D], qkv_b[D : 2 * D]).view(B, N, nh, hd).transpose(1, 2)
    v = F.linear(x, qkv_w[2 * D :], qkv_b[2 * D :]).view(B, N, nh, hd).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D)
    expect = F.linear(o, proj_w, proj_b)
    assert (got - expect).abs().max().item() < 1e-6


def test_batchnorm_head_matches_torch_batch_norm():
    sd = ref.random_official_state_dict(
        hidden_size=8,
        depth=1,
        num_heads=2,
        decoder_hidden_size=8,
        decoder_depth=1,
        decoder_num_heads=2,
        patch_size=2,
        num_channels=3,
        image_size=4,
        head_hidden_size=6,
        num_labels=5,
        seed=4,
    )
    sd = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    before = {k: v.clone() for k, v in sd.items()}
    latent = torch.randn(4, 3, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    feat = latent[:, 1:].mean(1)
    for training in (False, True):
        got = ref.supervised_logits(sd, latent, training=training)
        y = F.linear(feat, sd["cls_head.0.weight"], sd["cls_head.0.bias"])
        rm, rv = sd["cls_head.1.running_mean"].clone(), sd["cls_head.1.running_var"].clone()
        y = F.batch_norm(y, rm, rv, sd["cls_head.1.weight"], sd["cls_head.1.bias"], training=training, eps=1e-5)
        expect = F.linear(F.relu(y), sd["cls_head.3.weight"], sd["cls_head.3.bias"])
        # float64, 1e-12: an eps of 1e-6 instead of BatchNorm1d's 1e-5 moves these logits by ~1e-5
        torch.testing.assert_close(got, expect, atol=1e-12, rtol=0)
    for k in sd:  # running stats untouched
        assert torch.equal(sd[k], before[k])


def test_smoke_pretraining_and_finetuned():
    kw = dict(
        hidden_size=16,
        depth=2,
        num_heads=4,
        decoder_hidden_size=8,
        decoder_depth=1,
        decoder_num_heads=2,
        patch_size=4,
        num_channels=3,
        image_size=16,
        head_hidden_size=12,
        num_labels=5,
        seed=6,
    )
    sd = ref.random_official_state_dict(**kw)
    assert sd["blocks.0.attn.qkv.weight"].shape == (48, 16)
    assert sd["cls_head.1.num_batches_tracked"].dtype == torch.long
    assert sd["cls_head.1.num_batches_tracked"].dim() == 0
    assert torch.equal(sd["pos_embed"][0], ref.sincos_pos_embed(16, 4, 4))
    g = torch.Generator().manual_seed(7)
    imgs = torch.randn(3, 3, 16, 16, generator=g)
    noise = torch.rand(3, 16, generator=g)
    labels = torch.tensor([1, -100, 4])
    out = ref.pretraining_forward(
        sd, imgs, labels, num_heads=4, decoder_num_heads=2, patch_size=4, mask_ratio=0.75, noise=noise, training=True
    )
    assert out["latent"].shape == (3, 5, 16)
    assert out["pred"].shape == (3, 16, 48)
    assert out["logits"].shape == (3, 5)
    expect_ce = F.cross_entropy(out["logits"][[0, 2]] / 10.0, labels[[0, 2]])
    assert torch.allclose(out["cls_loss"], expect_ce)
    assert torch.allclose(out["loss"], out["rec_loss"] + 0.01 * expect_ce)
    out2 = ref.pretraining_forward(
        sd, imgs, None, num_heads=4, decoder_num_heads=2, patch_size=4, mask_ratio=0.75, noise=noise
    )
    assert out2["cls_loss"] is None and torch.equal(out2["loss"], out2["rec_loss"])

    sd0 = ref.random_official_state_dict(**{**kw, "head_hidden_size": 0})
    assert "cls_head.1.weight" not in sd0 and sd0["cls_head.0.weight"].shape == (5, 16)
    assert ref.supervised_logits(sd0, out["latent"]).shape == (3, 5)

    for pooling in ("mean", "cls"):
        fsd = ref.random_official_finetuned_state_dict(
            hidden_size=16,
            depth=2,
            num_heads=4,
            patch_size=4,
            num_channels=3,
            image_size=16,
            num_labels=5,
            seed=8,
            pooling=pooling,
        )
        logits = ref.finetuned_forward(fsd, imgs, num_heads=4, pooling=pooling)
        assert logits.shape == (3, 5) and torch.isfinite(logits).all()


# ------------------------------------------------------------------------------------- against timm's implementation
# timm's ViT is an outside implementation of what the reference re-implements, with the official parameter names. The
# comparisons run in float64, where 1e-12 leaves room for summation order only: MAE's LayerNorm eps (1e-6) against
# PyTorch's default (1e-5), a tanh GELU, or a transposed qkv layout each move the outputs by 1e-6 or more.
timm_vit = pytest.importorskip("timm.models.vision_transformer")
FLOAT64 = dict(atol=1e-12, rtol=0)


def randomized(module: torch.nn.Module, seed: int) -> dict:
    """Fill every parameter of `module` (float64) with random values, LayerNorm weights around 1; its state dict."""
    generator = torch.Generator().manual_seed(seed)
    module.double()
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            is_norm_weight = name.endswith("weight") and parameter.ndim == 1
            parameter.copy_(1 + 0.1 * noise if is_norm_weight else noise / math.sqrt(parameter.shape[-1]))
    return module.state_dict()


@pytest.mark.parametrize("dim, heads, mlp_ratio", [(32, 4, 4.0), (16, 2, 2.0)])
def test_transformer_block_matches_timm(dim, heads, mlp_ratio):
    block = timm_vit.Block(
        dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)
    )
    state_dict = {f"blocks.3.{k}": v for k, v in randomized(block.eval(), seed=10).items()}
    x = torch.randn(2, 7, dim, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    with torch.no_grad():
        expected = block(x)
    torch.testing.assert_close(ref.transformer_block(state_dict, "blocks.3", x, heads), expected, **FLOAT64)


def test_patch_embedding_matches_timm():
    embed = timm_vit.PatchEmbed(img_size=(16, 24), patch_size=8, in_chans=3, embed_dim=12)
    state_dict = {f"patch_embed.{k}": v for k, v in randomized(embed, seed=12).items()}
    images = torch.randn(2, 3, 16, 24, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    with torch.no_grad():
        expected = embed(images)  # (B, L, D), row-major patches
    assert expected.shape == (2, 6, 12)
    torch.testing.assert_close(ref._patch_embed(state_dict, images, ""), expected, **FLOAT64)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_finetuned_forward_matches_timm_vision_transformer(pooling):
    """The whole fine-tuned classifier: timm's VisionTransformer loads the reference's official fine-tuned layout
    strictly (the names are the same), and computes the same logits."""
    kwargs = dict(
        hidden_size=32, depth=2, num_heads=4, patch_size=8, num_channels=3, image_size=(16, 24), num_labels=5
    )
    state_dict = ref.random_official_finetuned_state_dict(**kwargs, seed=14, pooling=pooling)
    state_dict = {k: v.double() for k, v in state_dict.items()}
    head = dict(global_pool="avg", fc_norm=True) if pooling == "mean" else dict(global_pool="token", fc_norm=False)
    vit = timm_vit.VisionTransformer(
        img_size=(16, 24),
        patch_size=8,
        num_classes=5,
        embed_dim=32,
        depth=2,
        num_heads=4,
        qkv_bias=True,
        class_token=True,
        no_embed_class=False,  # MAE's layout: the table has a cls row, added to the cls token
        **head,
    )
    vit = vit.double().eval()
    vit.load_state_dict(state_dict, strict=True)
    images = torch.randn(3, 3, 16, 24, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    with torch.no_grad():
        expected = vit(images)
    torch.testing.assert_close(
        ref.finetuned_forward(state_dict, images, num_heads=4, pooling=pooling), expected, **FLOAT64
    )


@pytest.mark.parametrize("grid_h, grid_w, dim", [(3, 5, 16), (14, 14, 64)])
def test_sincos_matches_timm(grid_h, grid_w, dim):
    """timm's 2-D sin-cos table, with its coordinates reversed (x first, as in MAE's table) and sin/cos interleaved
    per axis, is [sin(x w), cos(x w), sin(y w), cos(y w)], x the column, over patches listed column-major (MAE's are
    row-major). timm computes in float32: its angles (up to 13 rad here) carry a relative error of up to ~1.2e-7 (the
    frequency and the product each rounded), so up to 1.6e-6; measured 2e-7. Swapping the halves, the axes' order or
    sin and cos changes entries by ~1."""
    from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed

    table = build_sincos2d_pos_embed([grid_h, grid_w], dim=dim, reverse_coord=True, interleave_sin_cos=True)
    row_major = table.reshape(grid_w, grid_h, dim).transpose(0, 1).reshape(grid_h * grid_w, dim)
    reference = ref.sincos_pos_embed(dim, grid_h, grid_w)
    assert torch.all(reference[0] == 0)  # the cls row, which timm's table does not have
    torch.testing.assert_close(reference[1:], row_major, atol=2e-6, rtol=0)
