#!/usr/bin/env python
# Copyright 2026 The supmae authors. Licensed under the Apache License, Version 2.0.
"""
SupMAE vs MAE vs no pretraining, on the built-in digits (no download, CPU), over several seeds.

    python examples/digits_study.py [--output_dir outputs/digits-study] [--seeds 0,1,2] [--pretrain_epochs 40]

The same tiny ViT (the demo's: 4 layers, 96 wide, 32 px, 4 px patches) is
- pretrained as SupMAE (labels: the supervised branch on) and as MAE (`--label_column_name none`, same model),
- then linearly probed (frozen encoder, cached features) on the cls token and on the mean of the patch tokens (the
  feature SupMAE's supervised branch trains), and fine-tuned (the demo's fine-tuning settings),
- against the same ViT from a random initialization: probed, and fine-tuned for pretrain + finetune epochs, so that
  every arm makes the same number of passes over the training images.
Each seed runs every arm anew (pretraining included). Top-1 on the held-out digits test split, mean and sample
standard deviation over the seeds. Writes results.json and results.png to --output_dir. SUPMAE_QUICK=N cuts every
training to N steps (a smoke run).
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import run_classification  # noqa: E402
import run_pretraining  # noqa: E402
from supmae import SupMAEForPreTraining  # noqa: E402
from supmae.cli import with_quick_steps


QUIET = ["--disable_tqdm", "true", "--report_to", "none", "--save_strategy", "no", "--eval_strategy", "no"]
ARMS = {"SupMAE": "supmae", "MAE": "mae", "no pretraining": "scratch"}
# The classification demo's fine-tuning settings, which a linear probe does not take.
FINETUNE_SETTINGS = (
    "--base_learning_rate",
    "--layer_decay",
    "--auto_augment",
    "--mixup",
    "--cutmix",
    "--reprob",
    "--min_crop_scale",
)
MEASURES = {
    "linprobe-cls": "linear probe, cls token",
    "linprobe-mean": "linear probe, mean of patches",
    "finetune": "fine-tune",
}


def train_seconds(directory: str) -> float:
    with open(os.path.join(directory, "trainer_state.json")) as file:
        history = json.load(file)["log_history"]
    return next(entry["train_runtime"] for entry in reversed(history) if "train_runtime" in entry)


def classify(model: str, output_dir: str, measure: str, epochs: int, seed: int) -> dict:
    """Probe or fine-tune `model` as the classification demo does (its batch, data and evaluation); a probe keeps
    the linear-probing recipe's own settings instead of the demo's fine-tuning ones."""
    demo = run_classification.DEMO_ARGUMENTS
    settings = dict(zip(demo[::2], demo[1::2], strict=True))
    settings.update(
        {
            "--model_name_or_path": model,
            "--output_dir": output_dir,
            "--seed": str(seed),
            "--num_train_epochs": str(epochs),
        }
    )
    if measure.startswith("linprobe"):  # on cached features; batch 64 probes with momentum SGD (the default)
        for option in FINETUNE_SETTINGS:
            settings.pop(option)
        settings.update(
            {
                "--mode": "linprobe",
                "--cache_features": "true",
                "--classifier_pooling": measure.removeprefix("linprobe-"),
            }
        )
    arguments = [*(item for pair in settings.items() for item in pair), *QUIET]
    reports = run_classification.main(with_quick_steps(arguments))
    return {"top1": reports["test"]["top1"], "train_seconds": round(train_seconds(output_dir), 1)}


def summarize(values: list[float]) -> dict:
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std, "runs": values}


def bar_chart(summary: dict, path: str, seeds: list[int]) -> None:
    """Grouped bars with error bars (one standard deviation): each measure for each arm (PIL, no plotting package)."""
    arms, measures = list(summary), list(MEASURES)
    colors = {"SupMAE": (214, 96, 77), "MAE": (67, 147, 195), "no pretraining": (150, 150, 150)}
    width, height, left, bottom, top = 760, 420, 60, 60, 40
    image = PIL.Image.new("RGB", (width, height), "white")
    draw = PIL.ImageDraw.Draw(image)
    plot_height = height - top - bottom
    y_of = lambda value: height - bottom - plot_height * value  # noqa: E731
    for tick in range(0, 101, 20):
        draw.line([(left, y_of(tick / 100)), (width - 20, y_of(tick / 100))], fill=(225, 225, 225))
        draw.text((left - 35, y_of(tick / 100) - 6), f"{tick}%", fill="black")
    group_width = (width - left - 20) / len(measures)
    bar = group_width / (len(arms) + 1)
    for g, measure in enumerate(measures):
        for a, arm in enumerate(arms):
            mean, std = summary[arm][measure]["mean"], summary[arm][measure]["std"]
            x0 = left + g * group_width + bar / 2 + a * bar
            draw.rectangle([x0, y_of(mean), x0 + bar * 0.9, height - bottom], fill=colors[arm])
            middle = x0 + bar * 0.45
            draw.line([(middle, y_of(mean - std)), (middle, y_of(min(mean + std, 1.0)))], fill="black", width=2)
            draw.text((x0 + 2, y_of(mean + std) - 14), f"{100 * mean:.1f}", fill="black")
        draw.text((left + g * group_width + 10, height - bottom + 8), MEASURES[measure], fill="black")
    for a, arm in enumerate(arms):
        draw.rectangle([left + a * 150, 12, left + a * 150 + 12, 24], fill=colors[arm])
        draw.text((left + a * 150 + 18, 12), arm, fill="black")
    draw.text((left, height - 24), f"digits test top-1 (359 images), mean and std over seeds {seeds}", fill="black")
    image.save(path)


def run_seed(options, seed: int) -> dict:
    out = lambda *parts: os.path.join(options.output_dir, f"seed-{seed}", *parts)  # noqa: E731
    pretrain = (
        run_pretraining.DEMO_ARGUMENTS
        + QUIET
        + ["--num_train_epochs", str(options.pretrain_epochs), "--seed", str(seed)]
    )
    run_pretraining.main(with_quick_steps(pretrain + ["--output_dir", out("supmae", "pretrained")]))
    run_pretraining.main(
        with_quick_steps(pretrain + ["--output_dir", out("mae", "pretrained"), "--label_column_name", "none"])
    )
    # No pretraining: the same architecture, initialized as the official code does, saved as a "checkpoint".
    torch.manual_seed(seed)
    config = SupMAEForPreTraining.config_class.from_pretrained(out("supmae", "pretrained"))
    if not os.path.isdir(out("scratch", "pretrained")):
        SupMAEForPreTraining(config).save_pretrained(out("scratch", "pretrained"))
    results = {}
    for arm, name in ARMS.items():
        model = out(name, "pretrained")
        results[arm] = {"pretrain_seconds": None if name == "scratch" else round(train_seconds(model), 1)}
        for measure in MEASURES:
            epochs = options.probe_epochs if measure.startswith("linprobe") else options.finetune_epochs
            epochs += options.pretrain_epochs if (name == "scratch" and measure == "finetune") else 0
            results[arm][measure] = classify(model, out(name, measure), measure, epochs, seed)
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/digits-study")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, each a full run of every arm")
    parser.add_argument("--pretrain_epochs", type=int, default=40)
    parser.add_argument("--finetune_epochs", type=int, default=30)
    parser.add_argument("--probe_epochs", type=int, default=90)
    options = parser.parse_args(argv)
    seeds = [int(seed) for seed in options.seeds.split(",")]
    start = time.time()
    per_seed = {seed: run_seed(options, seed) for seed in seeds}
    summary = {
        arm: {measure: summarize([per_seed[seed][arm][measure]["top1"] for seed in seeds]) for measure in MEASURES}
        for arm in ARMS
    }
    path = os.path.join(options.output_dir, "results.json")
    with open(path, "w") as file:
        json.dump(
            {
                "options": vars(options),
                "wall_seconds": round(time.time() - start),
                "summary": summary,
                "per_seed": per_seed,
            },
            file,
            indent=2,
        )
    bar_chart(summary, os.path.join(options.output_dir, "results.png"), seeds)
    for arm, measures in summary.items():
        cells = [f"{MEASURES[m]} {100 * v['mean']:.1f} ± {100 * v['std']:.1f}" for m, v in measures.items()]
        print(f"{arm:>15}: " + ", ".join(cells))
    print(f"Results: {path}, {os.path.join(options.output_dir, 'results.png')}")
    return summary


if __name__ == "__main__":
    main()
