# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
Convert checkpoints people already have into supmae directories (safetensors, config, image processor, model files
for remote code, model card):

- official SupMAE releases: pretraining (`cls_head.*` or `projection_head.*`) and fine-tuned (`fc_norm`, `head`);
- Facebook MAE releases: full (with the decoder), encoder-only, and the "visualize" checkpoints;
- Transformers ViTMAE directories or weight files, in the v4 naming found on the Hub and the v5 naming.

    python -m supmae.convert --checkpoint supmae_pretrain.pth --output_dir supmae-vit-base-pretrain
    supmae-convert --checkpoint path/to/vit-mae-base --output_dir vit-mae-base-supmae --push_to_hub me/repo

The official files are torch pickles `{"model": state_dict, "optimizer", "epoch", "scaler", "args"}`; they are read
with `torch.load(weights_only=True)`, allowing exactly one class beyond tensors (`argparse.Namespace`, for `args`):
a pickle that would run code is refused. The configuration is inferred from the tensor shapes, and the report says
which tensors were used, which were dropped (by rule) and which are new.

Official names (tests/reference/SPEC.md, "The official checkpoint layout"): `cls_token`, `pos_embed`, `patch_embed.proj.*`,
`blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.*`, `norm.*`, `mask_token`, `decoder_pos_embed`,
`decoder_embed.*`, `decoder_blocks.N.*`, `decoder_norm.*`, `decoder_pred.*`, `cls_head.{0,1,3}.*` (or
`projection_head.*`), and for fine-tuned checkpoints `fc_norm.*`, `head.*`.
"""

import argparse
import hashlib
import json
import math
import os
import pickle
import re
import shlex
import sys
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file

from ..cli import run_script
from ..configuration_supmae import SupMAEConfig
from ..data.transforms import eval_image_processor
from ..modeling_supmae import SupMAEForImageClassification, SupMAEForPreTraining, SupMAEModel
from ..reports.model_card import converted_model_card
from .timm_export import save_timm


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


# ----------------------------------------------------------------------------------------------- Transformers ViTMAE
# Layer stacks: v4 on the Hub (`vit.encoder.layer.N`, `decoder.decoder_layers.N`), v5 in memory (`vit.layers.N`) and
# as v5 writes it (`decoder.decoder_encoder.layer.N`).
_VITMAE_STACKS = {
    "vit.encoder.layer": "supmae.layers",
    "vit.layers": "supmae.layers",
    "decoder.decoder_layers": "decoder.decoder_layers",
    "decoder.decoder_encoder.layer": "decoder.decoder_layers",
}
_VITMAE_LAYER_PARTS = {
    "attention.attention.query": "q",
    "attention.attention.key": "k",
    "attention.attention.value": "v",
    "attention.q_proj": "q",
    "attention.k_proj": "k",
    "attention.v_proj": "v",
    "attention.output.dense": "attention.o_proj",
    "attention.o_proj": "attention.o_proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "layernorm_before": "layernorm_before",
    "layernorm_after": "layernorm_after",
}
_VITMAE_LAYER = re.compile(
    rf"({'|'.join(map(re.escape, _VITMAE_STACKS))})\.(\d+)\.({'|'.join(map(re.escape, _VITMAE_LAYER_PARTS))})\.(weight|bias)"
)


def vitmae_to_supmae_state_dict(state_dict: dict[str, torch.Tensor]):
    """Rename a Transformers ViTMAE state dict (v4 or v5 naming) to this package's names, fusing query, key and value
    into one `qkv_proj` (rows q, k, v). Returns `(renamed, unknown_keys)`."""
    renamed, unknown, qkv = {}, [], {}
    for key, tensor in state_dict.items():
        if match := _VITMAE_LAYER.fullmatch(key):
            stack, index, part, leaf = match.groups()
            target = _VITMAE_LAYER_PARTS[part]
            prefix = f"{_VITMAE_STACKS[stack]}.{index}"
            if target in "qkv":
                qkv.setdefault((prefix, leaf), {})[target] = tensor
            else:
                renamed[f"{prefix}.{target}.{leaf}"] = tensor
        elif key.startswith("vit.embeddings.") or key.startswith("vit.layernorm."):
            renamed["supmae." + key.removeprefix("vit.")] = tensor
        elif re.fullmatch(r"decoder\.(decoder_embed|decoder_norm|decoder_pred)\.(weight|bias)", key) or key in (
            "decoder.mask_token",
            "decoder.decoder_pos_embed",
        ):
            renamed[key] = tensor
        else:
            unknown.append(key)
    for (prefix, leaf), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"{prefix}: the checkpoint has {sorted(parts)} of query, key and value for {leaf!r}.")
        renamed[f"{prefix}.attention.qkv_proj.{leaf}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return renamed, unknown


# ------------------------------------------------------------------------------------------------------- reading
class _Sources:
    OFFICIAL = "official"  # the official SupMAE / MAE code's layout
    VITMAE = "vitmae"  # Transformers' ViTMAE


def file_md5(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_pickle_safely(path: str):
    """`torch.load` with weights only, plus `argparse.Namespace` (the official files' `args`); anything else that
    unpickling would have to import or call is refused."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's text for both: a global it refuses ("Unsupported global: GLOBAL os.system"), or bytes that are not a
        # pickle at all ("Unsupported operand 110"). Its advice (weights_only=False) would run the file: not repeated.
        refused = re.search(r"Unsupported global: GLOBAL \S+", str(error))
        if refused is None:
            raise _unreadable(path, error.__class__("not a pickle of tensors")) from None
        raise ValueError(
            f"Refusing to load {path}: it is not a plain weights file, and unpickling it would import or call "
            f"code beyond tensors and argparse.Namespace ({refused.group()})."
        ) from None
    except Exception as error:  # an empty, truncated or non-PyTorch file: EOFError, RuntimeError, KeyError, OSError
        raise _unreadable(path, error) from None


def _unreadable(path: str, error: Exception) -> ValueError:
    first_line = (str(error).strip().splitlines() or [""])[0][:200]
    return ValueError(
        f"Cannot read {path}: it is not a PyTorch checkpoint, or it is empty, truncated or damaged "
        f"({type(error).__name__}{': ' + first_line if first_line else ''})."
    )


def read_checkpoint(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict and what else the source says: `{"source": "official" | "vitmae", "hints": {...}}` where the
    hints are config values the file records (mask ratio, normalized-pixel loss, LayerNorm eps, heads)."""
    if os.path.isdir(path):
        weights = [
            name for name in ("model.safetensors", "pytorch_model.bin") if os.path.isfile(os.path.join(path, name))
        ]
        if not weights:
            raise FileNotFoundError(f"{path} holds neither model.safetensors nor pytorch_model.bin.")
        state, info = read_checkpoint(os.path.join(path, weights[0]))
        config_file = os.path.join(path, "config.json")
        if os.path.isfile(config_file):
            try:
                with open(config_file) as file:
                    config = json.load(file)
            except ValueError as error:
                raise ValueError(f"{config_file} is not valid JSON ({error}).") from None
            if not isinstance(config, dict):
                raise ValueError(f"{config_file} holds a JSON {type(config).__name__}, not a model configuration.")
            if config.get("model_type") not in (None, "vit_mae", "supmae"):
                raise ValueError(f"{path} holds a {config['model_type']!r} model, not ViTMAE, SupMAE or MAE weights.")
            info["hints"].update({k: config[k] for k in _HINT_KEYS if k in config})
        return state, info
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint at {path}.")
    if path.endswith(".safetensors"):
        try:
            state, hints = load_file(path), {}
        except Exception as error:  # safetensors raises its own error types
            raise _unreadable(path, error) from None
    else:
        loaded = load_pickle_safely(path)
        hints = {}
        if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):  # the official wrapper
            arguments = loaded.get("args")
            arguments = vars(arguments) if isinstance(arguments, argparse.Namespace) else arguments
            hints = {k: v for k, v in arguments.items() if k in _HINT_KEYS} if isinstance(arguments, dict) else {}
            loaded = loaded["model"]
        if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise ValueError(f"{path} holds no state dict (a dict of tensors, or {{'model': state_dict, ...}}).")
        state = loaded
    source = _Sources.VITMAE if any(k.startswith(("vit.", "decoder.decoder_")) for k in state) else _Sources.OFFICIAL
    return state, {"source": source, "hints": hints}


_HINT_KEYS = (
    "mask_ratio",
    "norm_pix_loss",
    "layer_norm_eps",
    "num_attention_heads",
    "decoder_num_attention_heads",
    "hidden_act",
    "qkv_bias",
)


# ---------------------------------------------------------------------------------------------- the configuration
_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}  # ViT-Ti/S/B/L/H
_DECODER_HEADS = {512: 16}  # MAE's and SupMAE's decoders


def infer_config(state: dict[str, torch.Tensor], hints: dict | None = None, **overrides) -> SupMAEConfig:
    """A `SupMAEConfig` from the shapes of a state dict in this package's names; `hints` (values the checkpoint
    records) and `overrides` (the user's) win over what the shapes suggest."""
    hints, values = dict(hints or {}), {}
    needed = [f"supmae.embeddings.{name}" for name in ("cls_token", "position_embeddings")]
    needed += ["supmae.embeddings.patch_embeddings.projection.weight", "supmae.layers.0.mlp.fc1.weight"]
    missing = [key for key in needed if key not in state]
    if missing:
        raise ValueError(
            f"The checkpoint holds no complete ViT encoder: {', '.join(missing)} (and maybe more) are missing. "
            "Is it a whole model's state dict?"
        )
    width = state["supmae.embeddings.cls_token"].shape[-1]
    _, channels, patch, _ = state["supmae.embeddings.patch_embeddings.projection.weight"].shape
    grid = _square_grid(state, "supmae.embeddings.position_embeddings")
    if "decoder.decoder_pos_embed" in state and _square_grid(state, "decoder.decoder_pos_embed") != grid:
        raise ValueError(
            f"The decoder's position table ({state['decoder.decoder_pos_embed'].shape[1] - 1} patches) and the "
            f"encoder's ({grid * grid}) are for different images; the checkpoint is inconsistent."
        )
    depth = len({k.split(".")[2] for k in state if k.startswith("supmae.layers.")})
    values.update(
        hidden_size=width,
        num_channels=channels,
        patch_size=patch,
        image_size=grid * patch,
        num_hidden_layers=depth,
        intermediate_size=state["supmae.layers.0.mlp.fc1.weight"].shape[0],
        qkv_bias="supmae.layers.0.attention.qkv_proj.bias" in state,
    )
    if width in _HEADS:
        values["num_attention_heads"] = _HEADS[width]
    if "decoder.decoder_embed.weight" in state:
        decoder_width = state["decoder.decoder_embed.weight"].shape[0]
        decoder_depth = len({k.split(".")[2] for k in state if k.startswith("decoder.decoder_layers.")})
        values.update(decoder_hidden_size=decoder_width, decoder_num_hidden_layers=decoder_depth)
        if decoder_depth:
            values["decoder_intermediate_size"] = state["decoder.decoder_layers.0.mlp.fc1.weight"].shape[0]
        if decoder_width in _DECODER_HEADS:
            values["decoder_num_attention_heads"] = _DECODER_HEADS[decoder_width]
    if "supervised_head.classifier.weight" in state:
        dense = state.get("supervised_head.dense.weight")
        values["supervised_head_hidden_size"] = 0 if dense is None else dense.shape[0]
        values["num_labels"] = state["supervised_head.classifier.weight"].shape[0]
    if "classifier.weight" in state:
        values["num_labels"] = state["classifier.weight"].shape[0]
        values["classifier_pooling"] = "mean" if "fc_norm.weight" in state else "cls"
    values.update({k: v for k, v in hints.items() if v is not None})
    values.update({k: v for k, v in overrides.items() if v is not None})
    for name, table in (("num_attention_heads", _HEADS), ("decoder_num_attention_heads", _DECODER_HEADS)):
        if name not in values and (name == "num_attention_heads" or "decoder_hidden_size" in values):
            raise ValueError(f"Cannot tell `{name}` from the shapes (known widths: {sorted(table)}); pass --{name}.")
    return SupMAEConfig(**values)


def _square_grid(state: dict[str, torch.Tensor], key: str) -> int:
    """The side of the square patch grid of a `(1, 1 + side**2, D)` position table."""
    patches = state[key].shape[1] - 1
    side = math.isqrt(max(patches, 0))
    if side < 1 or side * side != patches:
        raise ValueError(
            f"{key} has {patches} patch rows, not a square grid: the converter reads square-image checkpoints only."
        )
    return side


# -------------------------------------------------------------------------------------------------- the conversion
# md5 prefixes of the released SupMAE ViT-B/16 files.
RELEASE_MD5 = {"pretraining": "d83c8a", "classification": "1fb748"}
TASKS = ("auto", "pretraining", "encoder", "classification")
_PARTS = {
    "decoder.": "the pixel decoder",
    "supervised_head.": "the supervised head",
    "supmae.layernorm.": "the encoder's final LayerNorm (mean pooling uses fc_norm)",
    "fc_norm.": "fc_norm",
    "classifier.": "the classifier",
}


@dataclass
class ConversionReport:
    checkpoint: str
    source: str  # what the file is, in words
    task: str  # pretraining, encoder or classification
    md5: str | None = None
    used: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # part -> tensors left out, by rule
    new: list[str] = field(default_factory=list)  # modules the source has no weights for (initialized)

    def __str__(self) -> str:
        lines = [f"{self.checkpoint}: {self.source}, converted for {self.task} ({self.used} tensors used)."]
        lines += [f"Dropped {part} ({count} tensors)." for part, count in self.dropped.items()]
        if self.new:
            lines.append(f"Newly initialized (not in the source): {', '.join(self.new)}.")
        if self.md5:
            lines.append(f"md5 {self.md5}.")
        return "\n".join(lines)


def _describe(state: dict, source: str) -> str:
    if source == _Sources.VITMAE:
        return "a Transformers ViTMAE checkpoint"
    if any(k.startswith("supervised_head.") for k in state):
        return "an official SupMAE pretraining checkpoint"
    if "classifier.weight" in state:
        return "an official fine-tuned checkpoint (SupMAE / MAE layout)"
    if any(k.startswith("decoder.") for k in state):
        return "an official MAE pretraining checkpoint (with decoder)"
    return "an official MAE encoder-only checkpoint"


def convert(checkpoint: str, task: str = "auto", verify_release: bool = False, **overrides):
    """Read `checkpoint` (a file or a Transformers directory) and return `(model, report)`: a SupMAEForPreTraining
    (task "pretraining"), SupMAEModel ("encoder") or SupMAEForImageClassification ("classification") holding its
    weights. Fails, naming the keys, if the source holds tensors this layout does not know or the model misses
    weights the source should have had."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
    raw, info = read_checkpoint(checkpoint)
    if info["source"] == _Sources.VITMAE:
        state, unknown = vitmae_to_supmae_state_dict(raw)
    else:
        head = raw.get("cls_head.0.weight", raw.get("projection_head.0.weight"))
        linear_head = head is not None and "cls_head.1.weight" not in raw and "projection_head.1.weight" not in raw
        state, unknown = official_to_supmae_state_dict(raw, head_hidden_size=0 if linear_head else None)
    if unknown:
        raise ValueError(f"{checkpoint} holds {len(unknown)} tensors this converter does not know: {unknown[:12]}.")
    report = ConversionReport(checkpoint, _describe(state, info["source"]), task)
    if task == "auto":
        report.task = task = (
            "classification"
            if "classifier.weight" in state
            else "pretraining"
            if "decoder.decoder_embed.weight" in state
            else "encoder"
        )
    if task == "pretraining" and "decoder.decoder_embed.weight" not in state:
        raise ValueError(f"{checkpoint} has no pixel decoder: convert it with task 'encoder'.")
    if task == "classification" and "classifier.weight" not in state:
        raise ValueError(
            f"{checkpoint} has no classifier: convert it with task 'pretraining' or 'encoder', then fine-tune it with "
            "run_classification.py."
        )
    if os.path.isfile(checkpoint):
        report.md5 = file_md5(checkpoint)
        if verify_release:
            expected = RELEASE_MD5.get(task)
            if expected is None or not report.md5.startswith(expected):
                raise ValueError(
                    f"{checkpoint} has md5 {report.md5}; the released SupMAE {task} file's starts with {expected}. "
                    "It is not the released file, or it is damaged."
                )

    config = infer_config(state, info["hints"], **overrides)
    model_class = {"pretraining": SupMAEForPreTraining, "encoder": SupMAEModel}.get(task, SupMAEForImageClassification)
    model = model_class(config)
    expected = set(model.state_dict()) if task != "encoder" else {f"supmae.{k}" for k in model.state_dict()}
    for key in sorted(set(state) - expected):  # left out by rule
        part = next((name for prefix, name in _PARTS.items() if key.startswith(prefix)), None)
        if part is None:
            raise ValueError(f"{checkpoint}: {key!r} has no place in a {model_class.__name__}.")
        report.dropped[part] = report.dropped.get(part, 0) + 1
        del state[key]
    missing = expected - set(state)
    if any(not key.startswith("supervised_head.") for key in missing):  # only MAE's absent head may be new
        raise ValueError(f"{checkpoint} lacks weights a {model_class.__name__} needs: {sorted(missing)[:12]}.")
    report.new = ["supervised_head"] if missing else []
    if task == "encoder":
        state = {k.removeprefix("supmae."): v for k, v in state.items()}
    expected_shapes = model.state_dict()
    wrong = [
        f"{k}: {tuple(v.shape)}, expected {tuple(expected_shapes[k].shape)}"
        for k, v in state.items()
        if k in expected_shapes and v.shape != expected_shapes[k].shape
    ]
    if wrong:
        raise ValueError(f"{checkpoint}: tensors whose shapes do not fit one architecture: {'; '.join(wrong[:5])}.")
    model.load_state_dict(state, strict=not missing)
    report.used = len(state)
    return model.eval(), report


def save_converted(model, report: ConversionReport, output_dir: str, command: str, repo_id: str | None = None):
    """Write the Hub-ready directory: weights, config (with auto_map), model files, image processor, model card."""
    if os.path.isfile(os.path.join(output_dir, "model.safetensors")):
        raise FileExistsError(f"{output_dir} already holds a model; choose another --output_dir or remove it.")
    model.save_pretrained(output_dir)
    eval_image_processor(model.config.image_height_width).save_pretrained(output_dir)
    with open(os.path.join(output_dir, "README.md"), "w") as file:
        repo_id = repo_id or os.path.basename(os.path.abspath(output_dir))
        file.write(converted_model_card(model.config, report, command=command, repo_id=repo_id))


def main(argv: list[str] | None = None) -> ConversionReport:
    parser = argparse.ArgumentParser(
        prog="supmae-convert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="An official .pth, a weights file or a ViTMAE directory.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--task", choices=TASKS, default="auto", help="What to build (default: what the file holds).")
    for name, kind in (
        ("num_attention_heads", int),
        ("decoder_num_attention_heads", int),
        ("layer_norm_eps", float),
        ("mask_ratio", float),
    ):
        parser.add_argument(f"--{name}", type=kind, help="Override what the checkpoint or the shapes give.")
    parser.add_argument("--norm_pix_loss", type=lambda v: v.lower() in ("1", "true", "yes"), default=None)
    parser.add_argument("--verify_release", action="store_true", help="Require the released SupMAE file's md5.")
    parser.add_argument("--export_timm", metavar="DIR", help="Also write a timm VisionTransformer (classifiers).")
    parser.add_argument("--push_to_hub", metavar="REPO", help="Upload the directory to this Hub repository.")
    parser.add_argument("--private", action="store_true", help="Create the Hub repository as private.")
    arguments = parser.parse_args(argv)
    if arguments.export_timm and arguments.task not in ("auto", "classification"):
        raise ValueError(f"--export_timm writes a fine-tuned classifier; --task {arguments.task} builds none.")
    if os.path.isfile(os.path.join(arguments.output_dir, "model.safetensors")):
        raise FileExistsError(
            f"{arguments.output_dir} already holds a model; choose another --output_dir or remove it."
        )
    overrides = {
        k: getattr(arguments, k)
        for k in (
            "num_attention_heads",
            "decoder_num_attention_heads",
            "layer_norm_eps",
            "mask_ratio",
            "norm_pix_loss",
        )
    }
    model, report = convert(arguments.checkpoint, arguments.task, arguments.verify_release, **overrides)
    if arguments.export_timm and report.task != "classification":  # found before anything is written
        raise ValueError(
            f"--export_timm writes a fine-tuned classifier, but {arguments.checkpoint} is {report.source} "
            f"(converted for {report.task}). Fine-tune it with run_classification.py, then export that."
        )
    command = shlex.join(["supmae-convert", *(sys.argv[1:] if argv is None else argv)])
    save_converted(model, report, arguments.output_dir, command, arguments.push_to_hub)
    print(report)
    if arguments.export_timm:
        save_timm(model, arguments.export_timm)
        print(f"timm model written to {arguments.export_timm}")
    if arguments.push_to_hub:
        from huggingface_hub import create_repo, upload_folder

        create_repo(arguments.push_to_hub, private=arguments.private, exist_ok=True)
        upload_folder(repo_id=arguments.push_to_hub, folder_path=arguments.output_dir)
        print(f"Uploaded to https://huggingface.co/{arguments.push_to_hub}")
    print(f"Written to {os.path.abspath(arguments.output_dir)}")
    return report


def cli() -> None:
    """The `supmae-convert` command: `main`, with a mistake reported in one paragraph instead of a traceback."""
    run_script(main)


if __name__ == "__main__":
    cli()
