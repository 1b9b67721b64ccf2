"""Training-step throughput of UperNet on SupMAEBackbone vs UperNet on Transformers' BeitBackbone.

Both are `UperNetForSemanticSegmentation` with the same UperNet heads (decode head 768 wide, auxiliary FCN head 256
wide, 150 classes, as mmsegmentation's MAE recipe) on a backbone of the same width, depth and crop: the preset's ViT
(default ViT-B/16) at 512x512, four stages of the same blocks (stage4, 6, 8, 12) and MAE's feature pyramid
(`add_fpn`), drop path 0.1. BEiT is set up as a plain ViT like ours: absolute position embeddings, no relative position
bias, no layer scale, LayerNorm eps 1e-6. The `_recipe` arms add to both what mmsegmentation's MAE backbone (and
run_segmentation.py's recipe) has: a relative position bias in every block and layer scale 1.0, so that the cost of the
two shows next to the plain arms of the same run. A step is UperNet's loss (decode + 0.4 auxiliary cross-entropy) on random
labels, backward, AdamW step and zero_grad(set_to_none=True).

The models run interleaved in one process, one step each per round, after warm-up; the table gives medians, the
ratio BEiT time / SupMAE time (> 1: ours is faster), MFU against a square matmul measured in the same run (FLOPs
counted by torch.utils.flop_counter on one step), and peak memory. Examples:

    python benchmarks/segmentation_step.py --device cuda --dtype bf16 --batch_size 16 --output results.json
    python benchmarks/segmentation_step.py --batch_size 2 --rounds 3 --warmup 1        # ViT-B at 512 px on a CPU
    python benchmarks/segmentation_step.py --tiny --rounds 2 --warmup 1                # a seconds-long smoke run
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BeitConfig, UperNetConfig, UperNetForSemanticSegmentation

import supmae  # noqa: F401  (registers SupMAEBackbone with AutoBackbone)


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


ARMS = ("supmae", "beit", "supmae_recipe", "beit_recipe")
COMPARISONS = [
    ("UperNet: SupMAEBackbone vs BeitBackbone (same ViT, add_fpn)", "supmae", "beit"),
    ("UperNet, relative position bias + layer scale: SupMAEBackbone vs BeitBackbone", "supmae_recipe", "beit_recipe"),
    ("SupMAEBackbone: with relative position bias + layer scale vs without", "supmae_recipe", "supmae"),
    ("BeitBackbone: with relative position bias + layer scale vs without", "beit_recipe", "beit"),
]
# mmsegmentation's MAE backbone: a relative position bias in every block (not shared), layer scale 1.0.
RECIPE = {"use_relative_position_bias": True, "layer_scale_init_value": 1.0}
NUM_LABELS = 150


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=common.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_arguments(parser, default_preset="vit-base-patch16")
    parser.add_argument("--decode_channels", type=int, help="UperNet decode head width (default 768; 32 with --tiny).")
    args = parser.parse_args(argv)
    # The recipe's crop and batch, not the classification presets' 224 px and batch 64 / 8.
    cuda = torch.device(args.device).type == "cuda"
    args.image_size = args.image_size or (64 if args.tiny else 512)
    args.batch_size = args.batch_size or (16 if cuda else 2)
    common.finish_arguments(args)
    args.decode_channels = args.decode_channels or (32 if args.tiny else 768)
    return args


def backbone_configs(args, recipe: bool = False):
    """Our backbone config and BEiT's, same architecture, with `recipe` the relative position bias and layer scale
    (RECIPE). --tiny gets 4 blocks (the pyramid needs four stages) and 16 px patches (BEiT's pyramid is built for them;
    ours would rescale 8 px patches less)."""
    tiny = {"num_hidden_layers": 4, "patch_size": 16} if args.tiny else {}
    extra = RECIPE if recipe else {}
    ours = common.supmae_config(args, image_size=args.image_size, add_fpn=True, drop_path_rate=0.1, **tiny, **extra)
    beit = BeitConfig(
        **{
            name: getattr(ours, name)
            for name in (
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "hidden_act",
                "layer_norm_eps",
                "patch_size",
                "num_channels",
            )
        },
        image_size=args.image_size,
        use_absolute_position_embeddings=True,
        use_relative_position_bias=recipe,
        layer_scale_init_value=1.0 if recipe else 0.0,
        drop_path_rate=0.1,
        add_fpn=True,
        out_indices=list(ours.out_indices),
        attn_implementation=args.attn,
    )
    return ours, beit


def build_arm(args, key: str) -> common.Arm:
    ours, beit = backbone_configs(args, recipe=key.endswith("_recipe"))
    backbone_config = ours if key.startswith("supmae") else beit
    config = UperNetConfig(
        backbone_config=backbone_config,
        hidden_size=args.decode_channels,
        auxiliary_channels=max(args.decode_channels // 3, 8),
        num_labels=NUM_LABELS,
    )
    model = UperNetForSemanticSegmentation(config).to(args.device).train()
    label = "UperNet + SupMAEBackbone" if key.startswith("supmae") else "UperNet + BeitBackbone"
    label += " (relative position bias, layer scale 1.0)" if key.endswith("_recipe") else ""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    runner = common.prepare(model, args)

    def inputs(batch_size: int, image_size: int):
        generator = torch.Generator(args.device).manual_seed(0)
        pixels = torch.randn(batch_size, 3, image_size, image_size, device=args.device, generator=generator)
        labels = torch.randint(
            0, NUM_LABELS, (batch_size, image_size, image_size), device=args.device, generator=generator
        )
        return pixels, labels

    def make_step(batch_size: int, image_size: int):
        pixels, labels = inputs(batch_size, image_size)

        def step():
            with common.autocast(args):
                loss = runner(pixels, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step

    @functools.cache
    def flops(batch_size: int, image_size: int) -> int:
        pixels, labels = inputs(batch_size, image_size)
        with FlopCounterMode(display=False) as counter, common.autocast(args):
            model(pixels, labels=labels).loss.backward()
        model.zero_grad(set_to_none=True)
        return counter.get_total_flops()

    return common.Arm(label, make_step, flops, model, optimizer)


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    what = "UperNet training step (forward, loss, backward, AdamW step)"
    return common.run(args, argv, os.path.abspath(__file__), build_arm, ARMS, COMPARISONS, what)


if __name__ == "__main__":
    main()
