"""Training-step throughput of SupMAEForPreTraining (with labels) vs Transformers' ViTMAEForPreTraining.

A step is forward, backward, AdamW step and zero_grad(set_to_none=True), the same for both models. AdamW is the fused
kernel, as in the training scripts (`--optimizer default` gives torch's default implementation, foreach on CUDA and
the for-loop on a CPU, which records without an "optimizer" argument used). Comparisons:

- same architecture: both models with the preset's encoder and decoder (default ViT-B/16, 8-block 512-wide decoder),
  LayerNorm eps 1e-6 and norm_pix_loss; SupMAE also computes its supervised head;
- released recipes: SupMAE's 1-block decoder vs ViTMAE's (MAE's) 8-block decoder;
- optimizer (`--comparison optimizer`): SupMAE's 1-block recipe with fused AdamW vs torch's default AdamW;
- `--comparison supmae`: SupMAE's 1-block recipe alone (its baseline is another run, e.g. another compile mode).

The models run interleaved in one process, one step each per round, after warm-up; the table gives medians, the
ratio ViTMAE time / SupMAE time (> 1: SupMAE is faster), MFU against a square matmul measured in the same run, and
peak memory. Examples:

    python benchmarks/train_step.py --device cuda --dtype bf16 --batch_size 64 --output results.json
    python benchmarks/train_step.py --device cuda --dtype bf16 --sweep batch=32,64,128
    python benchmarks/train_step.py --device cuda --dtype bf16 --compile --comparison optimizer --sweep batch=512,1024
    python benchmarks/train_step.py --tiny --rounds 2 --warmup 1          # a seconds-long smoke run on a CPU
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from supmae import SupMAEForPreTraining


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from flops import pretraining_flops, vitmae_pretraining_flops  # noqa: E402


MAE_DECODER_LAYERS, SUPMAE_DECODER_LAYERS = 8, 1  # the released recipes' decoder depths


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=common.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_arguments(parser, default_preset="vit-base-patch16-dec8")
    parser.add_argument(
        "--comparison",
        choices=("both", "same", "recipe", "optimizer", "supmae"),
        default="both",
        help="same: identical architecture; recipe: SupMAE 1-block decoder vs ViTMAE 8-block; both (default); "
        "optimizer: SupMAE 1-block with fused AdamW vs torch's default AdamW; supmae: SupMAE 1-block alone.",
    )
    parser.add_argument(
        "--optimizer",
        choices=("fused", "default"),
        default="fused",
        help="AdamW implementation of every model: fused (the training scripts' default), or torch's default "
        "(foreach on CUDA, for-loop on a CPU).",
    )
    args = parser.parse_args(argv)
    common.finish_arguments(args)
    return args


def plan(args):
    """Models to build, keyed `<kind>_dec<decoder depth>`, and the (title, ours, theirs) comparisons between them."""
    depth = common.supmae_config(args).decoder_num_hidden_layers
    comparisons = []
    if args.comparison == "supmae":
        return [f"supmae_dec{SUPMAE_DECODER_LAYERS}"], []
    if args.comparison == "optimizer":
        ours, theirs = f"supmae_dec{SUPMAE_DECODER_LAYERS}_fused", f"supmae_dec{SUPMAE_DECODER_LAYERS}_default"
        return [ours, theirs], [("optimizer (fused AdamW vs torch's default AdamW)", ours, theirs)]
    if args.comparison in ("both", "same"):
        comparisons.append((f"same architecture ({depth}-block decoders)", f"supmae_dec{depth}", f"vitmae_dec{depth}"))
    if args.comparison in ("both", "recipe"):
        comparisons.append(
            (
                f"released recipes (SupMAE {SUPMAE_DECODER_LAYERS}-block vs ViTMAE {MAE_DECODER_LAYERS}-block decoder)",
                f"supmae_dec{SUPMAE_DECODER_LAYERS}",
                f"vitmae_dec{MAE_DECODER_LAYERS}",
            )
        )
    keys = dict.fromkeys(key for _, ours, theirs in comparisons for key in (ours, theirs))
    return list(keys), comparisons


def build_arm(args, key: str) -> common.Arm:
    kind, rest = key.split("_dec")
    depth, _, optimizer = rest.partition("_")
    optimizer = optimizer or args.optimizer
    config = common.supmae_config(args, decoder_num_hidden_layers=int(depth))
    if kind == "supmae":
        model = SupMAEForPreTraining(config)
        label = f"SupMAEForPreTraining, {depth}-block dec, labels"
        label = f"SupMAE, {depth}-block dec, {optimizer} AdamW" if args.comparison == "optimizer" else label
        flops_config, count = config, pretraining_flops
    else:
        flops_config = common.transformers_config(ViTMAEConfig, config, mae=True, attn_implementation=args.attn)
        model = ViTMAEForPreTraining(flops_config)
        label = f"ViTMAEForPreTraining, {depth}-block dec"
        count = vitmae_pretraining_flops
    model.to(args.device).train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=1.5e-4,
        betas=(0.9, 0.95),
        weight_decay=0.05,
        fused=True if optimizer == "fused" else None,
    )
    runner = common.prepare(model, args)

    def make_step(batch_size: int, image_size: int):
        generator = torch.Generator(args.device).manual_seed(0)
        pixels = torch.randn(batch_size, 3, image_size, image_size, device=args.device, generator=generator)
        inputs = {"interpolate_pos_encoding": image_size != config.image_size}
        if kind == "supmae":
            inputs["labels"] = torch.randint(0, config.num_labels, (batch_size,), device=args.device)

        def step():
            common.mark_step(args)
            with common.autocast(args):
                loss = runner(pixels, **inputs).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step

    return common.Arm(label, make_step, lambda b, s: count(flops_config, b, image_size=s), model, optimizer)


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    keys, comparisons = plan(args)
    what = "training step (forward, backward, AdamW step)"
    return common.run(args, argv, os.path.abspath(__file__), build_arm, keys, comparisons, what)


if __name__ == "__main__":
    main()
