# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""Key mapping between the official SupMAE / MAE checkpoint layout and this package's models.

Official names (SUPMAE_SPEC.md, "Official checkpoint layout"): `cls_token`, `pos_embed`, `patch_embed.proj.*`,
`blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.*`, `norm.*`, `mask_token`, `decoder_pos_embed`,
`decoder_embed.*`, `decoder_blocks.N.*`, `decoder_norm.*`, `decoder_pred.*`, `cls_head.{0,1,3}.*` (or
`projection_head.*`), and for fine-tuned checkpoints `fc_norm.*`, `head.*`.
"""

import re

import torch


_BLOCK = {
    "norm1": "layernorm_before",
    "attn.qkv": "attention.qkv_proj",
    "attn.proj": "attention.o_proj",
    "norm2": "layernorm_after",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_BLOCK_PATTERN = "|".join(re.escape(name) for name in _BLOCK)
_PLAIN = {
    "cls_token": "supmae.embeddings.cls_token",
    "pos_embed": "supmae.embeddings.position_embeddings",
    "patch_embed.proj": "supmae.embeddings.patch_embeddings.projection",
    "norm": "supmae.layernorm",
    "mask_token": "decoder.mask_token",
    "decoder_pos_embed": "decoder.decoder_pos_embed",
    "decoder_embed": "decoder.decoder_embed",
    "decoder_norm": "decoder.decoder_norm",
    "decoder_pred": "decoder.decoder_pred",
    "fc_norm": "fc_norm",
    "head": "classifier",
}
_HEAD = {"0": "dense", "1": "batch_norm", "3": "classifier"}


def official_key_to_supmae(key: str, head_hidden_size: int | None = None) -> str | None:
    """Our name for one official key, or None for a key this layout does not know. `head_hidden_size=0` maps the
    single-Linear supervised head (`cls_head.0.*`) to `supervised_head.classifier`."""
    if match := re.fullmatch(rf"(decoder_)?blocks\.(\d+)\.({_BLOCK_PATTERN})\.(weight|bias)", key):
        decoder, index, part, leaf = match.groups()
        stack = "decoder.decoder_layers" if decoder else "supmae.layers"
        return f"{stack}.{index}.{_BLOCK[part]}.{leaf}"
    if match := re.fullmatch(r"(?:cls_head|projection_head)\.(\d)\.(\w+)", key):
        index, leaf = match.groups()
        name = "classifier" if head_hidden_size == 0 and index == "0" else _HEAD.get(index)
        return f"supervised_head.{name}.{leaf}" if name else None
    module, _, leaf = key.rpartition(".")
    if key in _PLAIN:  # parameters named by themselves (tokens, tables)
        return _PLAIN[key]
    if module in _PLAIN and leaf in ("weight", "bias"):
        return f"{_PLAIN[module]}.{leaf}"
    return None


def official_to_supmae_state_dict(state_dict: dict[str, torch.Tensor], head_hidden_size: int | None = None):
    """Rename an official state dict to this package's names. Returns `(renamed, unknown_keys)`."""
    renamed, unknown = {}, []
    for key, tensor in state_dict.items():
        new_key = official_key_to_supmae(key, head_hidden_size)
        if new_key is None:
            unknown.append(key)
        else:
            renamed[new_key] = tensor
    return renamed, unknown


def supmae_to_official_state_dict(state_dict: dict[str, torch.Tensor], head_hidden_size: int | None = None):
    """The inverse renaming: this package's state dict in the official layout (`cls_head.*` for the head)."""
    official = {}
    for key, tensor in state_dict.items():
        for candidate in _official_candidates(key):
            if official_key_to_supmae(candidate, head_hidden_size) == key:
                official[candidate] = tensor
                break
        else:
            raise KeyError(f"{key!r} has no name in the official layout.")
    return official


def _official_candidates(key: str):
    """Official names that could map to `key` (checked by mapping them forward)."""
    if match := re.fullmatch(r"(supmae\.layers|decoder\.decoder_layers)\.(\d+)\.(.+)\.(weight|bias)", key):
        stack, index, part, leaf = match.groups()
        prefix = "blocks" if stack == "supmae.layers" else "decoder_blocks"
        yield from (f"{prefix}.{index}.{old}.{leaf}" for old, new in _BLOCK.items() if new == part)
        return
    if match := re.fullmatch(r"supervised_head\.(\w+)\.(\w+)", key):
        yield from (f"cls_head.{index}.{match.group(2)}" for index in ("0", "1", "3"))
        return
    module, _, leaf = key.rpartition(".")
    yield from (old for old, new in _PLAIN.items() if new == key)
    yield from (f"{old}.{leaf}" for old, new in _PLAIN.items() if new == module)
