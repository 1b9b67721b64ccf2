"""Inference throughput of SupMAEForImageClassification vs Transformers' ViTForImageClassification.

Both models are the preset's encoder (default ViT-B/16) with LayerNorm eps 1e-6 and 1000 classes, in eval mode under
torch.no_grad(). SupMAE mean-pools the patch tokens and applies fc_norm (MAE's fine-tuning head); ViT classifies the
cls token; both then apply one Linear. The models run interleaved in one process, one forward each per round, after
warm-up; the table gives medians, the ratio ViT time / SupMAE time (> 1: SupMAE is faster), MFU against a square
matmul measured in the same run, and peak memory. Examples:

    python benchmarks/inference.py --device cuda --dtype bf16 --batch_size 256 --output results.json
    python benchmarks/inference.py --device cuda --dtype bf16 --compile --sweep image_size=224,384
    python benchmarks/inference.py --tiny --rounds 2 --warmup 1          # a seconds-long smoke run on a CPU
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from transformers import ViTConfig, ViTForImageClassification

from supmae import SupMAEForImageClassification


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from flops import classification_flops  # noqa: E402


ARMS = ("supmae", "vit")
COMPARISONS = [("SupMAEForImageClassification vs ViTForImageClassification", "supmae", "vit")]


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=common.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_arguments(parser, default_preset="vit-base-patch16")
    args = parser.parse_args(argv)
    common.finish_arguments(args)
    return args


def build_arm(args, key: str) -> common.Arm:
    config = common.supmae_config(args)
    if key == "supmae":
        model, label = SupMAEForImageClassification(config), "SupMAEForImageClassification (mean pool)"
    else:
        config = common.transformers_config(
            ViTConfig, config, mae=False, num_labels=config.num_labels, attn_implementation=args.attn
        )
        model, label = ViTForImageClassification(config), "ViTForImageClassification (cls token)"
    model.to(args.device).eval()
    runner = common.prepare(model, args)

    def make_step(batch_size: int, image_size: int):
        generator = torch.Generator(args.device).manual_seed(0)
        pixels = torch.randn(batch_size, 3, image_size, image_size, device=args.device, generator=generator)
        interpolate = image_size != config.image_size

        def step():
            with torch.no_grad(), common.autocast(args):
                runner(pixels, interpolate_pos_encoding=interpolate)

        return step

    return common.Arm(label, make_step, lambda b, s: classification_flops(config, b, image_size=s), model)


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    return common.run(args, argv, os.path.abspath(__file__), build_arm, ARMS, COMPARISONS, "no-grad forward")


if __name__ == "__main__":
    main()
