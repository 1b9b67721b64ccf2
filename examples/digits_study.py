#!/usr/bin/env python
# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
SupMAE vs MAE vs no pretraining, on the built-in digits (no download, CPU).

    python examples/digits_study.py [--output_dir outputs/digits-study] [--pretrain_epochs 40] [--finetune_epochs 30]

The same tiny ViT (the demo's: 4 layers, 96 wide, 32 px, 4 px patches) is
- pretrained as SupMAE (labels: the supervised branch on) and as MAE (`--label_column_name none`, same model),
- then linearly probed (frozen encoder, cached features) and fine-tuned (the demo's fine-tuning settings),
- against the same ViT from a random initialization: probed, and fine-tuned for pretrain + finetune epochs, so that
  every arm makes the same number of passes over the training images.
Top-1 on the held-out digits test split. Writes results.json and results.png to --output_dir.
"""

import argparse
import json
import os
import sys

import PIL.Image
import PIL.ImageDraw
import torch


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import run_classification  # noqa: E402
import run_pretraining  # noqa: E402
from supmae import SupMAEForPreTraining  # noqa: E402


QUIET = ["--disable_tqdm", "true", "--report_to", "none", "--save_strategy", "no", "--eval_strategy", "no"]


def train_seconds(directory: str) -> float:
    with open(os.path.join(directory, "trainer_state.json")) as file:
        history = json.load(file)["log_history"]
    return next(entry["train_runtime"] for entry in reversed(history) if "train_runtime" in entry)


def classify(model: str, output_dir: str, mode: str, epochs: int, seed: int) -> dict:
    arguments = run_classification.DEMO_ARGUMENTS + QUIET
    arguments += ["--model_name_or_path", model, "--output_dir", output_dir, "--mode", mode, "--seed", str(seed)]
    if mode == "linprobe":  # MAE's probe on features of the evaluation transform, encoded once
        arguments += ["--cache_features", "true", "--num_train_epochs", str(epochs), "--base_learning_rate", "0.1",
                      "--auto_augment", "none"]  # fmt: skip
    else:
        arguments += ["--num_train_epochs", str(epochs)]
    reports = run_classification.main(arguments)
    return {"top1": reports["test"]["top1"], "train_seconds": round(train_seconds(output_dir), 1)}


def bar_chart(results: dict, path: str) -> None:
    """Grouped bars: linear probe and fine-tune top-1 for each arm (PIL; no plotting dependency)."""
    arms, groups = list(results), ["linear probe", "fine-tune"]
    colors = {"SupMAE": (214, 96, 77), "MAE": (67, 147, 195), "no pretraining": (150, 150, 150)}
    width, height, left, bottom, top = 640, 400, 60, 60, 40
    image = PIL.Image.new("RGB", (width, height), "white")
    draw = PIL.ImageDraw.Draw(image)
    plot_height = height - top - bottom
    for tick in range(0, 101, 20):
        y = height - bottom - plot_height * tick / 100
        draw.line([(left, y), (width - 20, y)], fill=(225, 225, 225))
        draw.text((left - 35, y - 6), f"{tick}%", fill="black")
    group_width = (width - left - 20) / len(groups)
    bar = group_width / (len(arms) + 1)
    for g, group in enumerate(groups):
        key = "linprobe" if group == "linear probe" else "finetune"
        for a, arm in enumerate(arms):
            value = results[arm][key]["top1"]
            x0 = left + g * group_width + bar / 2 + a * bar
            y0 = height - bottom - plot_height * value
            draw.rectangle([x0, y0, x0 + bar * 0.9, height - bottom], fill=colors[arm])
            draw.text((x0 + 2, y0 - 14), f"{100 * value:.1f}", fill="black")
        draw.text((left + g * group_width + group_width / 2 - 30, height - bottom + 8), group, fill="black")
    for a, arm in enumerate(arms):
        draw.rectangle([left + a * 150, 12, left + a * 150 + 12, 24], fill=colors[arm])
        draw.text((left + a * 150 + 18, 12), arm, fill="black")
    draw.text((left, height - 24), "digits test top-1 (359 images); same ViT, same passes over the data", fill="black")
    image.save(path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/digits-study")
    parser.add_argument("--pretrain_epochs", type=int, default=40)
    parser.add_argument("--finetune_epochs", type=int, default=30)
    parser.add_argument("--probe_epochs", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(argv)
    out = lambda *parts: os.path.join(options.output_dir, *parts)  # noqa: E731

    pretrain = run_pretraining.DEMO_ARGUMENTS + QUIET + ["--num_train_epochs", str(options.pretrain_epochs),
                                                         "--seed", str(options.seed)]  # fmt: skip
    run_pretraining.main(pretrain + ["--output_dir", out("supmae", "pretrained")])
    run_pretraining.main(pretrain + ["--output_dir", out("mae", "pretrained"), "--label_column_name", "none"])
    # No pretraining: the same architecture, initialized as the official code does, saved as a "checkpoint".
    torch.manual_seed(options.seed)
    config = SupMAEForPreTraining.config_class.from_pretrained(out("supmae", "pretrained"))
    SupMAEForPreTraining(config).save_pretrained(out("scratch", "pretrained"))

    results = {}
    for arm, name in (("SupMAE", "supmae"), ("MAE", "mae"), ("no pretraining", "scratch")):
        model = out(name, "pretrained")
        epochs = options.finetune_epochs + (options.pretrain_epochs if name == "scratch" else 0)
        results[arm] = {
            "pretrain_seconds": None if name == "scratch" else round(train_seconds(model), 1),
            "linprobe": classify(model, out(name, "linprobe"), "linprobe", options.probe_epochs, options.seed),
            "finetune": classify(model, out(name, "finetune"), "finetune", epochs, options.seed),
        }
    with open(out("results.json"), "w") as file:
        json.dump({"options": vars(options), "results": results}, file, indent=2)
    bar_chart(results, out("results.png"))
    for arm, result in results.items():
        print(f"{arm:>15}: linear probe {result['linprobe']['top1']:.3f}, fine-tune {result['finetune']['top1']:.3f}")
    print(f"Results: {out('results.json')}, {out('results.png')}")
    return results


if __name__ == "__main__":
    main()
